# The two entry points of a fresh machine: `make demo` and `make test`.
.PHONY: demo test venv
venv:
	@bash scripts/venv.sh

demo: venv
	.venv/bin/ia2 run configs/demo.yaml

test: venv
	.venv/bin/python -m pytest -q tests
