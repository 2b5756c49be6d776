#!/usr/bin/env bash
# One shard of a study per task of a SLURM job array (docs/clusters.md):
#
#   sbatch --array=0-7 scripts/slurm-array.sh configs/study.yaml
#   # when every task has finished:
#   ia2 merge runs/study/results.sqlite runs/study-shard*/results.sqlite
#   ia2 report runs/study
#
# Each task runs a deterministic 1/N of the study's groups into its own output directory (one
# SQLite store per task: never share one store between machines). A task that is requeued or
# resubmitted resumes where it stopped. Adjust the resources below to your partition.
#SBATCH --job-name=ia2-study
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=24:00:00
#SBATCH --output=ia2-%A_%a.out
#SBATCH --requeue
##SBATCH --gres=gpu:1          # remove one '#' for a GPU per task
set -euo pipefail

config=${1:?usage: sbatch --array=0-N scripts/slurm-array.sh CONFIG.yaml [OUT_PREFIX]}
prefix=${2:-runs/$(basename "$config" .yaml)}
: "${SLURM_ARRAY_TASK_ID:?run this under sbatch --array}"
# --shard i/n takes 0 <= i < n, whatever the array's first index
i=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
n=${SLURM_ARRAY_TASK_COUNT:?SLURM did not set SLURM_ARRAY_TASK_COUNT}

# Shared by every task: teacher signals and converted models are made once, under a lock.
export IA2_CACHE=${IA2_CACHE:-$PWD/.cache/ia2}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
ia2=${IA2_BIN:-.venv/bin/ia2}
[ -x "$ia2" ] || ia2=ia2

echo "ia2 shard $i/$n of $config on $(hostname)"
exec "$ia2" run "$config" --shard "$i/$n" --out "$prefix-shard$i" --no-report
