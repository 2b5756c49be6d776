#!/usr/bin/env bash
# Create (once) and refresh the project's virtual environment in .venv.
# torch is installed first and pinned, so nothing later pulls a multi-GB CUDA build;
# set IA2_TORCH to choose another torch requirement (e.g. a CUDA build on a GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp=$venv/.ia2-installed
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q "${IA2_TORCH:-torch==2.13.0}"
  "$venv/bin/python" -m pip install -q -e ".[test,ray]"  # ray: tests/test_ray.py
  touch "$stamp"
fi
