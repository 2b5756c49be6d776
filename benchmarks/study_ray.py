"""A small study run twice: by the sequential executor in this process, then as Ray tasks on a
local 2-worker cluster (`executor: ray`, one CPU and one torch thread per group).

Four groups (zero-shot, ICL, SFT, IA2) of smollm2-135m on SST-2 with tiny settings; both runs
use one torch thread per group, so the ratio is what running groups side by side buys. Each run
gets a fresh teacher cache (the converted model is shared). Also printed: Ray's own cost per
group, timed as a no-op group (the same task, options and arguments, doing nothing) on warm
workers, a new worker's start, and the cluster's start (not part of the Ray run's seconds). The
two runs alternate, best of `--repeats` each, so load from other processes hits both alike.

    IA2_DATA_DIR=/work/shared/data python benchmarks/study_ray.py
    python benchmarks/study_ray.py --smoke      # tiny random model, to check the wiring

Last line: `study ray_speedup=X` (sequential seconds / Ray seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from ia2 import executors, experiment
from ia2.config import ExperimentConfig, TaskEntry, from_dict
from ia2.paths import cache_dir
from ia2.store import ResultsStore


def study(model: str, out: Path, queries: int) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {
        "name": "bench-ray", "model": model, "out": str(out),
        "tasks": [{"task": "sst2", "ood": [], "options": {"min_words": 8}}],
        "methods": ["sft", "ia2"], "baselines": ["zero_shot", "icl"],
        "n": [4], "seeds": [0], "lr": [1e-3], "max_demos": 3,
        "teacher": {"constrain_to_labels": True, "batch_size": 4},
        "train": {"epochs": 3, "batch_size": 4, "eval_steps": 1},
        "eval": {"size": queries, "batch_size": 8},
        "analysis": {"asim": False, "subspace": False}})


def fresh_cache(root: Path, name: str, models: Path) -> Path:
    """An empty teacher cache sharing the converted models (no second conversion)."""
    cache = root / name
    cache.mkdir()
    (cache / "models").symlink_to(models, target_is_directory=True)
    return cache


def rows(out: Path) -> dict:
    with ResultsStore(out / "results.sqlite") as store:
        return {r["key"]: (r["accuracy"], r["ece"]) for r in store.rows()}


def group_times(out: Path) -> str:
    with ResultsStore(out / "results.sqlite") as store:
        return ", ".join(f"{g['key']} {g['seconds']:.0f}s" for g in store.groups())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--queries", type=int, default=40, help="evaluation queries per group")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--noop", type=int, default=20, help="no-op groups timed through Ray")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    ap.add_argument("--smoke", action="store_true", help="a tiny random model, seconds")
    args = ap.parse_args(argv)
    import ray

    logging.basicConfig(level=logging.WARNING, format="ia2: %(levelname)s: %(message)s")
    root = Path(tempfile.mkdtemp(prefix="ia2-bench-ray-"))
    models = cache_dir() / "models"
    model = args.model
    if args.smoke:
        from ia2.testing import tiny_model, tiny_tokenizer

        model = str(root / "tiny")
        tiny_model("llama").save_pretrained(model)
        tiny_tokenizer().save_pretrained(model)
    else:
        from ia2.models import resolve

        resolve(model)  # converted once before either run, outside the timings
    print(f"model {model}, 4 groups, {args.queries} queries, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    torch.set_num_threads(1)  # sequential: one torch thread, as each Ray group has
    env = {k: v for k, v in os.environ.items() if k.startswith(executors.FORWARDED_ENV)}
    seq = par = float("inf")
    same = True
    for r in range(args.repeats):  # alternated: load from other processes hits both alike
        os.environ["IA2_CACHE"] = str(fresh_cache(root, f"cache-seq{r}", models))
        start = time.perf_counter()
        seq_out = experiment.run_study(study(model, root / f"seq{r}", args.queries),
                                       progress=False)
        seq = min(seq, time.perf_counter() - start)
        print(f"sequential: {time.perf_counter() - start:.1f} s ({group_times(seq_out)}); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

        if ray.is_initialized():
            ray.shutdown()  # a new cluster each time: workers start cold, as in a real run
        os.environ["IA2_CACHE"] = str(fresh_cache(root, f"cache-ray{r}", models))
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": dict(env, IA2_CACHE=os.environ["IA2_CACHE"])})
        boot = time.perf_counter() - start
        config = study(model, root / f"ray{r}", args.queries)
        config.executor = executors.ExecutorConfig("ray")
        start = time.perf_counter()
        ray_out = experiment.run_study(config, progress=False)
        par = min(par, time.perf_counter() - start)
        print(f"ray ({args.workers} workers): {time.perf_counter() - start:.1f} s "
              f"({group_times(ray_out)}); cluster start {boot:.1f} s (not counted); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        same = same and rows(seq_out) == rows(ray_out)
    print(f"same store rows (accuracy, ECE) from both executors: {same}", flush=True)

    # Ray's cost per group: a no-op group with the study's task options and arguments
    def noop(conf, group, known, cwd):
        return executors.GroupResult(group.key)

    task = ray.remote(noop).options(num_cpus=1, num_gpus=0, max_retries=2)
    conf = ray.put(config)
    with ResultsStore(ray_out / "results.sqlite") as store:
        known = ray.put({r["key"]: r for r in store.rows()})
    group = experiment.groups(config)[0]
    ray.get(task.remote(conf, group, known, os.getcwd()))  # warm
    start = time.perf_counter()
    for _ in range(args.noop):
        ray.get(task.remote(conf, group, known, os.getcwd()))
    overhead = (time.perf_counter() - start) / args.noop

    def cold(conf, group, known, cwd):  # what a new worker imports before its first group
        import ia2.experiment  # noqa: F401
        import ia2.methods.pipeline  # noqa: F401
        import ia2.evaluate.runner  # noqa: F401

    start = time.perf_counter()  # another runtime_env: Ray starts a new worker process for it
    ray.get(ray.remote(cold).options(num_cpus=1, runtime_env={"env_vars": {"IA2_BENCH": "cold"}})
            .remote(conf, group, known, os.getcwd()))
    start_up = time.perf_counter() - start
    ray.shutdown()
    print(f"ray per-group overhead (no-op group, warm worker): {overhead * 1000:.1f} ms; "
          f"a new worker's start (process, torch, transformers, ia2): {start_up:.1f} s")
    print(f"best of {args.repeats}: sequential {seq:.1f} s, ray {par:.1f} s")
    print(f"study ray_speedup={seq / par:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
