"""`ia2 run` end to end on a tiny model: grid, selection on dev, store, report, resumption."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ia2 import experiment
from ia2.config import load_experiment
from ia2.errors import IA2Error
from ia2.store import ResultsStore
from ia2.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _config(tmp_path, tiny_dir, **over):
    doc = {"name": "tiny", "model": str(tiny_dir), "out": str(tmp_path / "study"),
           "tasks": [{"task": "sst2", "ood": ["poem_sentiment"], "options": {"min_words": 12}}],
           "methods": ["sft", "ia2->sft"], "n": [4], "seeds": [0, 1], "lr": [1e-3, 1e-2],
           "max_demos": 2,
           "teacher": {"constrain_to_labels": True, "batch_size": 4},
           "train": {"epochs": 2, "eval_steps": 1, "full_determinism": False},
           "eval": {"size": 6, "batch_size": 6},  # ICL: N-1 = 3 per query, capped at 2
           "analysis": {"asim_queries": 2}}
    doc.update(over)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_grid_shards_partition_the_groups(tmp_path, tiny_dir):
    config = load_experiment(_config(tmp_path, tiny_dir))
    every = experiment.groups(config)
    parts = [experiment.shard(every, i, 3) for i in range(3)]
    assert sorted(g.key for p in parts for g in p) == sorted(g.key for g in every)
    assert parts == [experiment.shard(every, i, 3) for i in range(3)]  # deterministic
    counts = experiment.cost(config, every)
    assert counts["training_runs"] == 2 * 2 * 2  # methods x lr x seeds
    # eval queries: zero-shot 2 tasks x 6; ICL 2 seeds x 2 tasks x 6 x (k + 1) = 3 query lengths;
    # methods 2 x 2 seeds x 2 tasks x 6
    assert counts["eval_queries"] == 12 + 24 * 3 + 48


def test_icl_baseline_k_is_what_the_teacher_saw(tmp_path, tiny_dir):
    study = experiment.Study(load_experiment(_config(tmp_path, tiny_dir, max_demos=None)))
    assert study.eval_config(4).icl_k == 3 and study.eval_config(8).icl_k == 7
    assert study.eval_config(4).icl_demos == "per_query"
    assert study.eval_config().icl_k is None  # zero-shot and adapters have no demonstrations
    capped = experiment.Study(load_experiment(_config(tmp_path, tiny_dir)))
    assert capped.eval_config(4).icl_k == 2  # max_demos: 2
    fixed = experiment.Study(load_experiment(_config(tmp_path, tiny_dir,
                                                     eval={"icl_k": 1, "icl_demos": "shared"})))
    assert fixed.eval_config(4).icl_k == 1
    with pytest.raises(IA2Error, match="--shard"):
        experiment.parse_shard("3")


def test_bad_config_key_is_one_error(tmp_path, tiny_dir, capsys):
    from ia2.cli import main

    path = _config(tmp_path, tiny_dir, train={"epoch": 2})
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err


def _snapshot(out: Path) -> dict:
    files = {str(p.relative_to(out)): p.stat().st_mtime_ns
             for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")}
    with ResultsStore(out / "results.sqlite") as store:
        rows = {r["key"]: r["created"] for r in store.rows()}
    return {"files": files, "rows": rows}


def test_study_runs_selects_on_dev_reports_and_resumes(tmp_path, tiny_dir, monkeypatch):
    config = load_experiment(_config(tmp_path, tiny_dir))
    out = experiment.run_study(config, progress=False)
    with ResultsStore(out / "results.sqlite") as store:
        rows = store.rows()
    # zero-shot on 2 eval tasks, ICL for 2 seeds x 2 eval tasks, 2 methods x 2 seeds x 2 eval tasks
    assert len(rows) == 2 + 4 + 8
    sel = {r["method"]: r["lr"] for r in rows if r["setting"] == "adapter"}
    for method, lr in sel.items():
        path = experiment.Study(config).selection_path(experiment.Group("method", "sst2", method, 4))
        doc = yaml.safe_load(path.read_text())
        best = min(doc["candidates"], key=lambda c: c["mean_dev_loss"])
        assert lr == doc["lr"] == best["lr"]  # the dev loss chose it
    icl = [r for r in rows if r["setting"] == "icl"]
    for r in icl:
        d = r["definitions"]["demos"]
        assert (d["mode"], d["k"], d["demo_task"]) == ("per_query", 2, "sst2")
        assert "icl_demos=per_query" in r["key"] and "icl_k=2" in r["key"]
    asim = [yaml.safe_load(p.read_text()) for p in (out / "analysis" / "asim").glob("*.json")]
    assert asim and all((a["mode"], a["icl_demos"], a["icl_k"]) == ("generate", "per_query", 2)
                        for a in asim)
    assert list((out / "analysis" / "subspace").glob("*.json"))

    from ia2.report import write_report

    report = write_report(out).read_text()
    assert "IA2→SFT" in report and "Selected learning rates" in report
    assert "sst2→poem_sentiment acc" in report

    # Run again: nothing is trained, evaluated or analysed a second time.
    before = _snapshot(out)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr("ia2.methods.pipeline.train_stage", boom)
    monkeypatch.setattr("ia2.evaluate.runner.evaluate_setting", boom)
    monkeypatch.setattr("ia2.evaluate.analysis.teach", boom)
    experiment.run_study(config, progress=False)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_killed_study_restarts_without_recomputing(tmp_path, tiny_dir):
    path = _config(tmp_path, tiny_dir, methods=["sft"], seeds=[0, 1, 2])
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "ia2", "run", str(path), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("runs/sst2/*/run.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/sst2/*/run.json")}
    assert finished, "no run finished before the kill"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime  # finished before the kill: not retrained
    with ResultsStore(out / "results.sqlite") as store:
        assert len(store.rows(setting="adapter")) == 3 * 2  # every seed x eval task, once


def test_eval_cli_icl_defaults_to_n_minus_1_per_query(tmp_path, tiny_dir, capsys):
    import json

    from ia2.cli import main

    base = ["eval", "--model", str(tiny_dir), "--task", "sst2", "--n", "4", "--limit", "3",
            "--batch-size", "3", "--out", str(tmp_path), "--json"]
    assert main(base[:3] + ["--icl"] + base[3:]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["setting"], out["icl_k"], out["icl_demos"]) == ("icl", 3, "per_query")
    assert main(base + ["--icl", "2", "--icl-demos", "shared", "--sets", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["icl_k"], out["icl_demos"]) == (2, "shared") and "accuracy_std" in out
    with ResultsStore(tmp_path / "results.sqlite") as store:
        demos = sorted((r["definitions"]["demos"]["mode"], r["definitions"]["demos"]["k"])
                       for r in store.rows())
    assert demos == [("per_query", 3), ("shared", 2)]
