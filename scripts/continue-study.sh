#!/usr/bin/env bash
# Continue a study that keeps a record (`record:` in its config), one group at a time,
# committing the record after each finished group, until none is left; then its report.
#   scripts/continue-study.sh configs/repro-cpu.yaml [extra `ia2 run` options]
# Safe to kill at any point: the next call resumes (docs/reproduction.md). Commits only the record.
set -euo pipefail
config=$1; shift
# run from the project root: the config's relative paths (record:, out:) are read from there
record=$(python -c 'import sys; from ia2.config import load_experiment as l; print(l(sys.argv[1]).record or "")' "$config")
[ -n "$record" ] || { echo "error: $config has no record: (nothing to commit)" >&2; exit 2; }
while [ -n "$(ia2 run "$config" --dry-run "$@" | grep -v '=' || true)" ]; do
  ia2 run "$config" --max-groups 1 --no-report "$@"
  latest=$(python -c 'import json,sys; g=[json.loads(l) for l in open(sys.argv[1])]; g=max(g, key=lambda r: r["finished"]); print(g["key"], "%.0f s" % g["seconds"])' "$record/groups.jsonl")
  git add -- "$record"
  for try in 1 2 3; do  # another git process may hold the index lock for a moment
    git commit -q -m "$record: $latest" -- "$record" && break || sleep 5
  done
done
ia2 run "$config" --no-report "$@"  # the last analyses (subspace pairs) and the record
echo "done; write the report with: ia2 report $record --out RESULTS.md --figures $record/figures"
