"""How `ia2 run` executes a study's groups: one after another in this process (`sequential`,
the default) or as Ray tasks on a cluster (`ray`, `pip install 'ia2[ray]'`, docs/clusters.md).

Both go through `run_group`: a group runs against a `GroupStore` and returns a `GroupResult`
(the store rows it added, its wall time, what it trained). The driver alone writes the study's
store (`record`): Ray workers never open the SQLite file, they return their rows.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from . import validate
from .errors import IA2Error

log = logging.getLogger(__name__)

EXECUTORS = ("sequential", "ray")
INSTALL_RAY = "the ray executor needs Ray: pip install 'ia2[ray]'"
# Forwarded to the workers of a cluster: caches, data, offline switches.
FORWARDED_ENV = ("IA2_", "HF_", "TRANSFORMERS_")


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "sequential"  # sequential | ray
    address: str | None = None  # ray: a cluster (`auto`, `host:6379`, `ray://...`); None: local
    cpus_per_group: float = 1  # ray: CPUs requested per group (also its torch threads)
    gpus_per_group: float | None = None  # ray: None = 1 when the runtime device is a GPU
    max_retries: int = 2  # ray: reruns of a group whose worker died

    def __post_init__(self):
        validate.choice("executor.name", self.name, EXECUTORS)
        if self.name != "ray" and self.address is not None:
            raise IA2Error(f"executor.address is for the ray executor, not {self.name!r}")
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise IA2Error(f"executor.address must be a non-empty string, got {self.address!r}")
        validate.number("executor.cpus_per_group", self.cpus_per_group, low=0, low_open=True)
        validate.number("executor.gpus_per_group", self.gpus_per_group, low=0, optional=True)
        validate.integer("executor.max_retries", self.max_retries, low=0)


def check(config) -> None:
    """What the executor needs before anything is written: Ray importable for `ray`."""
    if config.name == "ray":
        _ray()


def _ray():
    try:
        import ray
    except ImportError:
        raise IA2Error(INSTALL_RAY) from None
    return ray


# --- one group, shared by both executors -------------------------------------------------------
class GroupStore:
    """The results store as a group sees it: `has`/`get`/`add`, over the study's store itself
    (sequential: rows are written as they come) or over the rows known when the group was sent
    (a Ray worker). `added` holds the group's new rows, returned to the driver."""

    def __init__(self, store=None, known: dict | None = None):
        self.store, self.known, self.added = store, dict(known or {}), []

    def has(self, key: str) -> bool:
        return self.store.has(key) if self.store is not None else key in self.known

    def get(self, key: str):
        return self.store.get(key) if self.store is not None else self.known.get(key)

    def add(self, row: dict, overwrite: bool = False) -> bool:
        if self.store is not None:
            wrote = self.store.add(row, overwrite)
        else:
            wrote = overwrite or row["key"] not in self.known
            if wrote:
                self.known[row["key"]] = row
        if wrote:
            self.added.append(row)
        return wrote


@dataclass
class GroupResult:
    key: str
    rows: list = field(default_factory=list)  # store rows the group added
    seconds: float = 0.0  # wall time of the group
    trained: int = 0  # training runs it finished (0 when all were done before)
    host: str = ""
    stages: dict = field(default_factory=dict)  # seconds per stage (Study.timed)


def run_group(study, group, store: GroupStore, bar=None) -> GroupResult:
    """Run one group of `study` (experiment.Study) and return what it added."""
    from tqdm.auto import tqdm

    from .experiment import units
    from .methods.pipeline import finished

    bar = bar if bar is not None else tqdm(disable=True)
    todo = ([u.run_dir(study.out) for u in units(study.config, group)
             if not finished(u.run_dir(study.out))] if group.kind == "method" else [])
    start = time.perf_counter()
    study.timings = {}
    if group.kind == "method":
        study.run_method(group, store, bar)
    else:
        study.run_baseline(group, store, bar)
    seconds = time.perf_counter() - start
    stages = {k: round(v, 1) for k, v in sorted(study.timings.items())}
    stages["other"] = round(max(0.0, seconds - sum(study.timings.values())), 1)
    return GroupResult(group.key, store.added, seconds, sum(finished(d) for d in todo),
                       socket.gethostname(), stages)


def record(store, result: GroupResult, executor: str, study, group) -> None:
    """The driver's write of a group's result: its rows (a row already there is kept) and its
    time, unless a rerun found everything done and would overwrite the time that did the work;
    then the study's record (ia2.record), if it keeps one. The fingerprint is the driver's: it
    decides what is pending (a remote worker resolves the runtime on its own machine)."""
    from .record import fingerprint, save

    fp = fingerprint(study.config, group)
    for row in result.rows:
        store.add(row)
    old = next((g for g in store.groups() if g["key"] == result.key), None)
    if result.rows or result.trained or old is None:
        store.add_group({"key": result.key, "executor": executor, "seconds": result.seconds,
                         "trained": result.trained, "evaluated": len(result.rows),
                         "host": result.host, "stages": result.stages, "fingerprint": fp})
    elif old.get("fingerprint") != fp:  # found done: its record is now current
        store.add_group(dict(old, fingerprint=fp))
    if study.config.record:
        save(study, store)


def run(study, work, store, progress: bool, total_jobs: int) -> None:
    """Run the groups `work` of `study` with its configured executor, recording into `store`."""
    if study.config.executor.name == "ray":
        return run_ray(study, work, store, progress)
    from tqdm.auto import tqdm

    with tqdm(total=total_jobs, desc=f"ia2 run {study.config.name}", unit="job",
              disable=not progress) as bar:
        for g in work:
            bar.set_postfix_str(g.key)
            record(store, run_group(study, g, GroupStore(store), bar), "sequential", study, g)


# --- Ray ---------------------------------------------------------------------------------------
def _remote_group(config, group, known: dict, cwd: str) -> GroupResult:
    """A group on a Ray worker: the driver's working directory (relative paths in the config
    mean the same), one torch thread per requested CPU, rows returned rather than written."""
    import torch
    from transformers.utils import logging as hf_logging

    from .experiment import Study

    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(max(1, int(config.executor.cpus_per_group)))
    hf_logging.disable_progress_bar()  # workers' bars would interleave on the driver's terminal
    return run_group(Study(config), group, GroupStore(known=known))


def _gpus(config, ray) -> float:
    ex, device = config.executor, config.runtime.device
    if ex.gpus_per_group is not None:
        return ex.gpus_per_group
    if device.startswith("cuda"):
        return 1
    return 1 if device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1 else 0


def _connect(ray, ex: ExecutorConfig) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    kwargs = {"include_dashboard": False} if ex.address is None else {}
    try:
        ray.init(address=ex.address, runtime_env={"env_vars": env} if env else None,
                 logging_level=logging.WARNING, **kwargs)
    except Exception as e:  # Ray raises plain exceptions (ConnectionError, timeouts, ...)
        where = f"the Ray cluster at {ex.address}" if ex.address else "a local Ray cluster"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise IA2Error(f"could not start or reach {where}: {first}") from None


def _failure(ray, group, error) -> str:
    """One line for a failed group; the remote traceback is logged unless it was bad input."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, IA2Error):
        return f"group {group.key}: {cause}"
    log.error("%s", error)
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return f"group {group.key}: Ray killed its worker for want of memory"
    if isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return f"group {group.key}: its worker died (after the retries allowed: executor.max_retries)"
    return f"group {group.key}: {type(cause or error).__name__}: {cause or error}"


def run_ray(study, work, store, progress: bool) -> None:
    """Each group a Ray task (its CPUs, GPUs and retries from `executor:`); results are recorded
    as they arrive, so a killed driver loses only the groups still in flight."""
    from tqdm.auto import tqdm

    ray = _ray()
    config, ex = study.config, study.config.executor
    started = not ray.is_initialized()  # a caller's connection (tests, notebooks) is kept
    if started:
        _connect(ray, ex)
    failures = []
    try:
        gpus = _gpus(config, ray)
        task = ray.remote(_remote_group).options(
            num_cpus=ex.cpus_per_group, num_gpus=gpus, max_retries=ex.max_retries)
        known = ray.put({r["key"]: r for r in store.rows()})  # what resuming skips
        conf, cwd = ray.put(config), os.getcwd()
        # method groups (they train) first: long tasks early keep the last ones short
        order = sorted(work, key=lambda g: g.kind != "method")
        refs = {task.remote(conf, g, known, cwd): g for g in order}
        have = ray.cluster_resources()  # how many groups fit at once
        slots = have.get("CPU", 1) // ex.cpus_per_group
        slots = max(1, int(min(slots, have.get("GPU", 0) // gpus) if gpus else slots))
        pending = list(refs)
        with tqdm(total=len(work), desc=f"ia2 run {config.name} (ray)", unit="group",
                  disable=not progress) as bar:
            while pending:
                # Ray starts tasks in submission order as slots free up: the first are running.
                running = [refs[r].key for r in pending[:slots]]
                queued = len(pending) - len(running)
                bar.set_postfix_str(", ".join(running) + (f" (+{queued} queued)" if queued else ""))
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        record(store, ray.get(ref), "ray", study, refs[ref])
                    except ray.exceptions.RayError as e:
                        failures.append(_failure(ray, refs[ref], e))
                    bar.update(1)
    finally:
        if started:
            ray.shutdown()
    if failures:
        more = f" (and {len(failures) - 1} more failed groups)" if len(failures) > 1 else ""
        raise IA2Error(failures[0] + more)
