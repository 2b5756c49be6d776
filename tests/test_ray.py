"""`ia2 run --executor ray` on a local 2-CPU Ray cluster: the sequential executor's rows, a killed
worker retried, a killed driver restarted; the executor's config checks; the shared model lock."""

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from ia2 import experiment
from ia2.config import load_experiment
from ia2.executors import ExecutorConfig
from ia2.store import ResultsStore
from test_experiment import _config, _snapshot, tiny_dir  # noqa: F401  (tiny_dir: a fixture)

# 4 groups: zero-shot, ICL, and two methods that share one teacher entry per episode
GRID = {"methods": ["ia2", "ia2->sft"], "seeds": [0], "lr": [1e-3]}


def _rows(out: Path) -> dict:
    with ResultsStore(out / "results.sqlite") as store:
        return {r["key"]: {k: v for k, v in r.items() if k != "created"} for r in store.rows()}


def _groups(out: Path) -> dict:
    with ResultsStore(out / "results.sqlite") as store:
        return {g["key"]: g for g in store.groups()}


def _files(out: Path) -> dict:
    return {str(p.relative_to(out)): json.loads(p.read_text())
            for sub in ("selection", "analysis") for p in (out / sub).rglob("*.json")}


def _finished_runs_only(files: dict) -> dict:
    """The snapshot's files minus those of runs (runs/<task>/<run>/) without a run.json."""
    run = lambda k: "/".join(k.split("/")[:3])  # noqa: E731
    return {k: v for k, v in files.items()
            if not k.startswith("runs/") or f"{run(k)}/run.json" in files}


def _ray_study(path: Path, **executor):
    config = load_experiment(path)
    config.executor = ExecutorConfig("ray", **executor)
    return experiment.run_study(config, progress=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    crash, cache = tmp_path_factory.mktemp("crash"), tmp_path_factory.mktemp("ray-cache")
    # The workers get their own teacher cache (filled concurrently by the two method groups)
    # and the crash hook, armed by a test through a file.
    env = {"IA2_TEST_CRASH_DIR": str(crash), "IA2_CACHE": str(cache)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": env,
                          "worker_process_setup_hook": "ia2.testing.crash_once_hook"})
    yield SimpleNamespace(ray=ray, crash=crash, cache=cache,
                          address=ray.get_runtime_context().gcs_address)
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dir):  # noqa: F811
    """The study run by the sequential executor in this process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker has (cpus_per_group: 1)
    try:
        out = experiment.run_study(load_experiment(
            _config(tmp_path_factory.mktemp("seq"), tiny_dir, **GRID)), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_ray_executor_gives_the_sequential_rows(cluster, reference, tmp_path, tiny_dir):  # noqa: F811
    seq = _groups(reference)
    assert len(seq) == 4 and {g["executor"] for g in seq.values()} == {"sequential"}
    assert all(g["seconds"] > 0 for g in seq.values())

    out = _ray_study(_config(tmp_path, tiny_dir, **GRID))
    rows = _rows(out)
    assert len(rows) == 2 + 2 + 2 * 2  # zero-shot, ICL, 2 methods, each on sst2 and poem_sentiment
    assert rows == _rows(reference)  # same keys, same numbers
    assert _files(out) == _files(reference)  # selections, activation similarity, subspace
    groups = _groups(out)
    assert groups.keys() == seq.keys()
    assert {g["executor"] for g in groups.values()} == {"ray"}
    assert {k: (g["trained"], g["evaluated"]) for k, g in groups.items()} == \
        {k: (g["trained"], g["evaluated"]) for k, g in seq.items()}
    # both method groups needed the same teacher episode: one entry, filled once
    entries = [p for p in (cluster.cache / "teacher").iterdir() if p.is_dir()]
    assert len(entries) == 1
    assert json.loads((entries[0] / "manifest.json").read_text())["complete"]

    from ia2.report import write_report

    assert "## Where the time went" in write_report(out).read_text()

    before = _snapshot(out)  # a rerun finds everything done: nothing written again
    _ray_study(_config(tmp_path, tiny_dir, **GRID))
    assert _snapshot(out) == before and _groups(out) == groups


def test_a_killed_worker_is_retried(cluster, reference, tmp_path, tiny_dir):  # noqa: F811
    (cluster.crash / "armed").touch()
    try:
        out = _ray_study(_config(tmp_path, tiny_dir, **GRID))
    finally:
        (cluster.crash / "armed").unlink()
    assert (cluster.crash / "crashed").is_file(), "no worker was killed"
    assert _rows(out) == _rows(reference)
    # the killed group had finished training before it died: its retry trained nothing
    trained = sorted(g["trained"] for k, g in _groups(out).items() if k.startswith("method/"))
    assert trained == [0, 1]


def test_no_retries_left_is_one_error(cluster, tmp_path, tiny_dir, capsys):  # noqa: F811
    from ia2.cli import main

    (cluster.crash / "crashed").unlink(missing_ok=True)
    (cluster.crash / "armed").touch()
    path = _config(tmp_path, tiny_dir, **dict(GRID, methods=["sft"]), baselines=[],
                   executor={"name": "ray", "max_retries": 0})
    try:
        assert main(["run", str(path), "--no-report"]) == 2
    finally:
        (cluster.crash / "armed").unlink()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ia2: error: group method/sst2/sft/4: its worker died")


@pytest.mark.slow
def test_a_killed_driver_restarts_without_recomputing(cluster, tmp_path, tiny_dir):  # noqa: F811
    path = _config(tmp_path, tiny_dir, **dict(GRID, methods=["sft"]))  # 3 groups
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "ia2", "run", str(path), "--executor", "ray",
           "--address", cluster.address, "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, recorded = time.time() + 300, {}
    while not recorded and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        if (out / "results.sqlite").is_file():
            try:
                db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
                recorded = {r[0]: r for r in db.execute("SELECT * FROM groups")}
                db.close()
            except sqlite3.OperationalError:
                pass  # not created yet
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(recorded) < 3, "the driver was not killed mid-study"
    before = _snapshot(out)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _snapshot(out)
    # everything finished before the kill is left as it was; a run killed between its last
    # stage and run.json is finished on restart (its adapter/ and curves.json written again)
    before["files"] = _finished_runs_only(before["files"])
    for kind in ("files", "rows"):
        assert {k: v for k, v in after[kind].items() if k in before[kind]} == before[kind]
    assert len(after["rows"]) == 6
    groups = _groups(out)
    assert len(groups) == 3
    for key, row in recorded.items():
        stored = dict(groups[key], stages=json.dumps(groups[key]["stages"], sort_keys=True))
        assert tuple(stored.values()) == row  # not rerun: its record is untouched


def test_executor_settings_are_checked_before_anything_is_written(tmp_path, tiny_dir, capsys):  # noqa: F811
    from ia2.cli import main

    cases = [(["--executor", "dask"], {}, "unknown executor.name 'dask'"),
             ([], {"executor": {"name": "ray", "cpus_per_group": 0}},
              "executor.cpus_per_group must be a finite number > 0, got 0.0"),
             ([], {"executor": {"name": "ray", "max_retries": -1}},
              "executor.max_retries must be an integer >= 0, got -1"),
             ([], {"executor": {"name": "ray", "gpus_per_group": float("nan")}},
              "executor.gpus_per_group must be a finite number >= 0, got nan"),
             ([], {"executor": {"workers": 2}}, "unknown key 'workers'"),
             (["--address", "auto"], {}, "executor.address is for the ray executor")]
    for flags, over, message in cases:
        path = _config(tmp_path, tiny_dir, **over)
        assert main(["run", str(path), *flags]) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
        assert not (tmp_path / "study").exists()


def test_without_ray_one_line_says_how_to_install_it(tmp_path, tiny_dir, capsys, monkeypatch):  # noqa: F811
    from ia2.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["run", str(_config(tmp_path, tiny_dir)), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ia2: error: the ray executor needs Ray: pip install 'ia2[ray]'"]
    assert not (tmp_path / "study").exists()


def test_gpus_per_group_follows_the_runtime_device():
    from ia2.config import ExperimentConfig, TaskEntry
    from ia2.executors import _gpus
    from ia2.runtime import Runtime

    fake = SimpleNamespace(cluster_resources=lambda: {"CPU": 8, "GPU": 2})
    cpu_only = SimpleNamespace(cluster_resources=lambda: {"CPU": 8})
    base = ExperimentConfig(name="x", tasks=(TaskEntry("sst2"),), executor=ExecutorConfig("ray"))
    assert _gpus(base, fake) == 1 and _gpus(base, cpu_only) == 0  # device auto
    assert _gpus(replace(base, runtime=Runtime(device="cpu")), fake) == 0
    assert _gpus(replace(base, runtime=Runtime(device="cuda")), cpu_only) == 1
    assert _gpus(replace(base, executor=ExecutorConfig("ray", gpus_per_group=0.5)), cpu_only) == 0.5


def test_one_process_converts_a_model_while_others_wait(tmp_path, monkeypatch):
    """Workers sharing IA2_CACHE: the first to need an embedded model converts it under a lock
    (the teacher cache's), the others wait and then read it."""
    from ia2 import models
    from ia2.io import exclusive_lock

    monkeypatch.setenv("IA2_CACHE", str(tmp_path))
    made = []

    def convert(spec):
        made.append(spec.name)
        target = models.converted_dir(spec.name)
        target.mkdir(parents=True)
        (target / "ia2-model.json").write_text('{"gguf_sha256": "abc"}')
        return target

    monkeypatch.setattr(models, "_convert", convert)
    name, got = "smollm2-135m", []
    with exclusive_lock(models.converted_dir(name).parent / f".{name}.lock"):  # "another process"
        waiter = threading.Thread(target=lambda: got.append(models.resolve(name)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # blocked on the lock
        convert(models.EMBEDDED[name])
    waiter.join(10)
    assert made == [name]  # the waiter found the copy made meanwhile and converted nothing
    assert got == [(str(models.converted_dir(name)), "gguf:abc")]


def test_merge_joins_the_group_times(tmp_path):
    from ia2.store import merge_stores

    for name, key in (("a", "zero_shot/sst2"), ("b", "icl/sst2/4/0")):
        with ResultsStore(tmp_path / f"{name}.sqlite") as store:
            store.add_group({"key": key, "executor": "sequential", "seconds": 1.5, "trained": 0,
                             "evaluated": 2, "host": "h"})
    merge_stores(tmp_path / "all.sqlite", [tmp_path / "a.sqlite", tmp_path / "b.sqlite"])
    with ResultsStore(tmp_path / "all.sqlite") as store:
        assert [(g["key"], g["seconds"]) for g in store.groups()] == \
            [("icl/sst2/4/0", 1.5), ("zero_shot/sst2", 1.5)]
