#!/usr/bin/env bash
# Continue a study that keeps a record (`record:` in its config), one group at a time,
# committing the record after each finished group, until none is left.
#   scripts/continue-study.sh configs/repro-cpu.yaml [extra `ia2 run` options, not --record]
# Run it from the project root (the config's relative paths are read from there). Safe to kill
# at any point: the next call resumes (docs/reproduction.md). It commits only the record.
set -euo pipefail
config=$1; shift
record=$(python -c 'import sys; from ia2.config import load_experiment as l; print(l(sys.argv[1]).record or "")' "$config")
[ -n "$record" ] || { echo "error: $config has no record: (nothing to commit)" >&2; exit 2; }
while :; do
  left=$(ia2 run "$config" --max-groups 1 --no-report "$@" | sed -n 's/^groups left: //p')
  git add -- "$record"
  if ! git diff --cached --quiet -- "$record"; then
    latest=$(python -c 'import json,sys; g=[json.loads(l) for l in open(sys.argv[1])]; g=max(g, key=lambda r: r["finished"]); print(g["key"], "%.0f s" % g["seconds"])' "$record/groups.jsonl")
    for try in 1 2 3 4; do  # another git process may hold the index lock for a moment
      git commit -q -m "$record: $latest" -- "$record" && break
      [ "$try" -lt 4 ] || { echo "error: could not commit $record" >&2; exit 1; }
      sleep 5
    done
  fi
  [ -n "$left" ] || { echo "error: ia2 run printed no 'groups left:' line (this script runs groups: no --dry-run)" >&2; exit 1; }
  echo "groups left: $left"
  [ "$left" != 0 ] || break
done
echo "done; report it with: ia2 report $record --out $record/REPORT.md (several records on one page: docs/reproduction.md)"
