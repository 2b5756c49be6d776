"""A study's durable record (ia2.record): what it holds, a study continued from it without
`runs/`, fingerprints, --max-groups, and a report regenerated from it byte for byte."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ia2 import experiment, record
from ia2.config import dump, load_experiment
from ia2.errors import IA2Error
from ia2.evaluate.calibration import ece
from ia2.report import write_report
from ia2.store import ResultsStore
from test_experiment import _config, tiny_dir  # noqa: F401  (tiny_dir: a fixture)

GRID = {"methods": ["sft", "ia2->sft"], "seeds": [0, 1], "lr": [1e-3]}


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("recorded")
    path = _config(root, tiny_dir, record=str(root / "record"), **GRID)
    out = experiment.run_study(load_experiment(path), progress=False)
    return root, path, out


def _rows(path) -> dict:
    with ResultsStore(path) as store:
        return {r["key"]: r for r in store.rows()}


def test_the_record_holds_every_row_group_run_and_analysis(study):
    root, _, out = study
    rec = root / "record"
    rows, groups = record.read(rec)
    assert {r["key"]: r for r in rows} == _rows(out / "results.sqlite")
    assert sorted(g["key"] for g in groups) == sorted(
        g.key for g in experiment.groups(load_experiment(root / "study.yaml")))
    runs = sorted(p.name for p in (rec / "runs" / "sst2").iterdir())
    assert runs == sorted(f"{p.name}.json" for p in (out / "runs" / "sst2").iterdir())
    doc = json.loads((rec / "runs" / "sst2" / runs[0]).read_text())
    assert doc["run"]["stages"] and doc["config"]["seed"] in (0, 1)
    for sub in ("selection", "analysis"):
        assert sorted(p.relative_to(rec) for p in (rec / sub).rglob("*.json")) == \
            sorted(p.relative_to(out) for p in (out / sub).rglob("*.json"))
    assert not list(rec.rglob("*.safetensors")) and not list(rec.rglob("*.sqlite"))
    config = load_experiment(root / "study.yaml")
    by_key = {g.key: g for g in experiment.groups(config)}
    for g in groups:  # each group's seconds split into stages
        assert g["fingerprint"] == record.fingerprint(config, by_key[g["key"]])
        assert sum(g["stages"].values()) == pytest.approx(g["seconds"], abs=0.5)
    trained = [g for g in groups if g["key"].startswith("method/")]
    assert all(g["stages"]["train"] > 0 for g in trained)


def test_per_query_outcomes_give_the_stored_metrics(study):
    rows = _rows(study[2] / "results.sqlite").values()
    for r in rows:
        pq = r["per_query"]
        ok = np.array([c == "1" for c in pq["correct"]])
        assert len(ok) == r["metrics"]["n"]
        assert ok.mean() == pytest.approx(r["label_set_accuracy"])
        # rounded to 4 places: the ECE they give is the stored one up to that rounding
        assert ece(np.array(pq["confidence"]), ok) == pytest.approx(r["ece"], abs=1e-3)
    assert len({r["per_query"]["uids"] for r in rows if r["eval_task"] == "sst2"}) == 1


def test_a_study_continues_from_its_record_without_runs(study, tmp_path, tiny_dir,  # noqa: F811
                                                        capsys):
    from ia2.cli import main

    root, _, out = study
    rec = tmp_path / "record"
    shutil.copytree(root / "record", rec)
    before = record.read(rec)
    # another machine: the record only, no study directory; one more seed is asked for
    path = _config(tmp_path, tiny_dir, record=str(rec), **dict(GRID, seeds=[0, 1, 2]))
    config = load_experiment(path)
    pending = record.pending(config, experiment.groups(config))
    # the seed's ICL group, and the method groups (their seeds changed); zero-shot and the old
    # seeds' ICL groups are done
    assert sorted(g.key for g in pending) == ["icl/sst2/4/2", "method/sst2/ia2->sft/4",
                                              "method/sst2/sft/4"]
    assert [g.key for g in pending][0].startswith("method/")  # methods first in a cell
    assert main(["run", str(path), "--dry-run"]) == 0  # the groups left, at the record's pace
    out = capsys.readouterr().out
    summary = dict(kv.split("=") for kv in next(
        line for line in out.splitlines() if line.startswith("groups=")).split("; "))
    assert summary["groups"] == "3" and float(summary["hours_at_recorded_pace"]) > 0
    kept = len(before[1]) - 2  # the method groups' times are of other seeds: not counted
    assert f"of the {kept} recorded groups" in out
    # --only: the new seed's ICL group alone, and none of the selection is left after it
    assert main(["run", str(path), "--dry-run", "--only", "icl/*"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(("icl/", "method/", "zero_shot/"))] == ["icl/sst2/4/2"]
    assert main(["run", str(path), "--only", "icl/*", "--max-groups", "3", "--no-report"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "groups left: 0"
    rows, groups = record.read(rec)
    assert len(groups) == len(before[1]) + 1 and not (tmp_path / "study" / "runs").exists()
    assert {r["key"] for r in before[0]} < {r["key"] for r in rows}
    assert sorted(g.key for g in record.pending(config, experiment.groups(config))) == \
        ["method/sst2/ia2->sft/4", "method/sst2/sft/4"]
    # asked again as it was: nothing to run, nothing written
    same = load_experiment(_config(tmp_path, tiny_dir, record=str(rec), **GRID))
    assert record.pending(same, experiment.groups(same)) == []
    files = lambda: {p: p.stat().st_mtime_ns for p in rec.rglob("*")  # noqa: E731
                     if p.is_file() and p.name != "experiment.yaml"}  # it says what was asked
    mtimes = files()
    experiment.run_study(same, progress=False)
    assert files() == mtimes
    assert (rec / "experiment.yaml").read_text() == dump(same)
    # a setting that changes the numbers reruns every group
    other = load_experiment(_config(tmp_path, tiny_dir, record=str(rec),
                                    **dict(GRID, train={"epochs": 3, "eval_steps": 1})))
    assert len(record.pending(other, experiment.groups(other))) == len(before[1])


def test_the_report_from_the_record_is_byte_identical(study, tmp_path):
    root, _, out = study
    first = write_report(root / "record", tmp_path / "a" / "R.md", tmp_path / "a" / "fig", "cmd")
    copy = tmp_path / "elsewhere"
    shutil.copytree(root / "record", copy)  # the record alone, without the study's directory
    (copy / "NOTES.md").write_text("## What we learned\n\nnothing yet\n")
    second = write_report(copy, tmp_path / "a" / "R2.md", tmp_path / "a" / "fig", "cmd")
    text = second.read_text()
    notes = "## What we learned\n\nnothing yet\n\n"
    assert notes in text  # before the tables
    assert text.replace(notes, "") == first.read_text().replace("# Results: record",
                                                                "# Results: elsewhere")
    assert "Generated by `cmd` from `evaluations.jsonl`" in text
    assert "### IA2→SFT against SFT" in text and "## Time per stage" in text
    with pytest.raises(IA2Error, match="not an `ia2 run` directory or a study record"):
        write_report(tmp_path)


def test_several_studies_report_on_one_page_a_section_each(study, tmp_path):
    root, _, _ = study
    a, b = tmp_path / "alpha", tmp_path / "beta"
    shutil.copytree(root / "record", a)
    shutil.copytree(root / "record", b)
    (b / "NOTES.md").write_text("## Read\n\nbeta's own\n\n### Deeper\n\n#hashtag\n")
    page = write_report([a, b], tmp_path / "R.md", None, "cmd").read_text().split("\n")
    for rec in (a, b):  # each study's figures in its own figures/
        assert list((rec / "figures").glob("reliability-*.png"))
    assert page[0] == "# Results: alpha, beta" and page[2].startswith("Generated by `cmd`")
    starts = [page.index("## Study alpha"), page.index("## Study beta")]
    for rec, section in zip((a, b), (page[starts[0] + 2:starts[1]], page[starts[1] + 2:])):
        alone = write_report(rec, tmp_path / f"{rec.name}.md", rec / "figures", "x")
        body = alone.read_text().split("\n")[4:]  # after its title and source line
        assert section == [f"#{x}" if x.startswith(("# ", "## ", "### ")) else x for x in body]
    assert {"### Read", "beta's own", "#### Deeper", "#hashtag"} <= set(page)
    with pytest.raises(IA2Error, match="several studies needs --out"):
        write_report([a, b])
    with pytest.raises(IA2Error, match="distinct names"):
        write_report([a, tmp_path / "x" / "alpha"], tmp_path / "R2.md")
    empty = tmp_path / "gamma"  # a record with nothing in it yet: no page, no figure written
    empty.mkdir()
    for name in ("groups.jsonl", "evaluations.jsonl"):
        (empty / name).write_text("")
    shutil.rmtree(a / "figures")
    with pytest.raises(IA2Error, match="gamma/evaluations.jsonl: no results yet"):
        write_report([a, empty], tmp_path / "R3.md")
    assert not (a / "figures").exists() and not (tmp_path / "R3.md").exists()


def test_the_cli_report_is_the_same_in_any_process(study, tmp_path):
    import os
    import subprocess

    root = study[0]
    texts = []
    for seed in ("1", "2"):  # dict and set orders must not leak into the bytes
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "ia2", "report", str(root / "record") + "/",
                        "--out", str(tmp_path / "R.md"), "--figures", str(tmp_path / "f")],
                       check=True, capture_output=True, env=env)
        texts.append((tmp_path / "R.md").read_bytes())
    assert texts[0] == texts[1]
    assert f"`ia2 report {root / 'record'} --out".encode() in texts[0]  # the path normalised


def test_shards_sharing_a_record_keep_each_others_rows_and_groups(study, tmp_path):
    root, path, out = study
    config = load_experiment(path)
    rec = tmp_path / "record"
    rows, groups = record.read(root / "record")
    # a shard whose store holds only the first half, and an older copy of a group
    half = tmp_path / "shard"
    with ResultsStore(half / "results.sqlite") as store:
        for r in rows[: len(rows) // 2]:
            store.add(dict(r, per_query=None) if r is rows[0] else r)
        store.add_group(dict(groups[0], finished="2000-01-01T00:00:00+00:00", seconds=1.0))
    shutil.copytree(root / "record", rec)
    config.record, config.out = str(rec), str(half)
    with ResultsStore(half / "results.sqlite") as store:
        record.save(experiment.Study(config), store)
    new_rows, new_groups = record.read(rec)
    assert new_rows == rows and new_groups == groups  # nothing lost, nothing older kept
    with ResultsStore(half / "results.sqlite") as store:  # restoring brings the newer back
        record.restore(experiment.Study(config), store)
        assert store.get(rows[0]["key"])["per_query"] == rows[0]["per_query"]
        assert {g["key"]: g for g in store.groups()}[groups[0]["key"]] == groups[0]


def _teacher_docs(rec: Path) -> dict:
    docs = {f.name: json.loads(f.read_text()) for f in sorted(rec.glob("runs/*/*.json"))}
    return {k: d for k, d in docs.items() if d.get("teacher")}


def test_teacher_accuracy_is_recorded_and_backfilled_from_the_same_teacher(study, tmp_path):
    import runpy

    import yaml

    root, path, _ = study
    rec = tmp_path / "record"
    shutil.copytree(root / "record", rec)
    docs = _teacher_docs(rec)
    assert len(docs) == 2  # ia2->sft at one learning rate, 2 seeds
    counts = [d["teacher"]["accuracy"]["train"] for d in docs.values()]
    assert [c["n"] for c in counts] == [4, 4]
    assert 0 < sum(c["correct"] for c in counts) < 8  # some right, some wrong: a real count
    for name, d in docs.items():  # as a record written before the count existed
        del d["teacher"]["accuracy"]
        (rec / "runs" / "sst2" / name).write_text(json.dumps(d))
    doc = yaml.safe_load(Path(path).read_text())
    doc["record"] = str(rec)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    backfill = runpy.run_path(str(Path(__file__).parents[1] / "scripts" /
                                  "teacher-accuracy-backfill.py"))
    assert backfill["main"](str(tmp_path / "study.yaml")) == 0
    again = _teacher_docs(rec)
    for name, d in again.items():  # the same counts, said to be recomputed; nothing else changed
        recomputed = d["teacher"]["accuracy"].pop("recomputed")
        assert recomputed[:2] == "20" and d == _teacher_docs(root / "record")[name]
    # a store saving runs whose teacher.json predates the count keeps the record's count
    config = load_experiment(tmp_path / "study.yaml")
    config.out = str(tmp_path / "out")
    for name, d in _teacher_docs(root / "record").items():
        run = tmp_path / "out" / "runs" / "sst2" / name.removesuffix(".json")
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(d["config"]))
        (run / "run.json").write_text(json.dumps(d["run"]))
        (run / "teacher.json").write_text(json.dumps(
            {k: v for k, v in d["teacher"].items() if k != "accuracy"}))
    before = {f: f.read_text() for f in rec.glob("runs/*/*.json")}
    with ResultsStore(tmp_path / "out" / "results.sqlite") as store:
        record.save(experiment.Study(config), store)
    assert {f: f.read_text() for f in rec.glob("runs/*/*.json")} == before


def test_a_store_from_before_per_query_gains_the_columns(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, model TEXT, adapter TEXT, "
               "method TEXT, task TEXT, eval_task TEXT, n INTEGER, seed INTEGER, lr REAL, "
               "beta REAL, setting TEXT, accuracy REAL, label_set_accuracy REAL, ece REAL, "
               "brier REAL, nll REAL, exact_match REAL, metrics TEXT, definitions TEXT, "
               "created TEXT)")
    db.execute("INSERT INTO results (key, setting, metrics, definitions) "
               "VALUES ('k', 'icl', '{}', '{}')")
    db.commit()
    db.close()
    with ResultsStore(tmp_path / "old.sqlite") as store:
        assert store.get("k")["per_query"] is None
        store.add({"key": "k2", "setting": "icl", "per_query": {"correct": "1", "uids": "u"}})
        store.add_group({"key": "g", "seconds": 1.0, "stages": {"train": 1.0}})
        assert store.get("k2")["per_query"] == {"correct": "1", "uids": "u"}
        assert store.groups()[0]["stages"] == {"train": 1.0}


def test_per_task_n_and_methods(tmp_path, tiny_dir):  # noqa: F811
    config = load_experiment(_config(
        tmp_path, tiny_dir, n=[4], tasks=[
            {"task": "sst2", "n": [4, 6], "extra_methods": {6: ["kd"]}},
            {"task": "finphrasebank", "methods": ["ia2"]}]))
    keys = [g.key for g in experiment.groups(config) if g.kind == "method"]
    assert keys == ["method/sst2/sft/4", "method/sst2/ia2->sft/4", "method/sst2/sft/6",
                    "method/sst2/ia2->sft/6", "method/sst2/kd/6", "method/finphrasebank/ia2/4"]
    for tasks, message in (
            ([{"task": "sst2", "extra_methods": {8: ["kd"]}}], "N = 8 is not among its n"),
            ([{"task": "sst2", "methods": ["sf"]}], "unknown method 'sf'"),
            ([{"task": "sst2", "n": [1]}], "tasks.sst2.n")):
        with pytest.raises(IA2Error, match=message):
            load_experiment(_config(tmp_path, tiny_dir, tasks=tasks))


def test_max_groups_must_be_positive(tmp_path, tiny_dir, capsys):  # noqa: F811
    from ia2.cli import main

    assert main(["run", str(_config(tmp_path, tiny_dir)), "--max-groups", "0"]) == 2
    assert "--max-groups must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_only_selects_by_glob_and_rejects_a_glob_matching_nothing(tmp_path, tiny_dir,  # noqa: F811
                                                                   capsys):
    from ia2.cli import main

    config = load_experiment(_config(tmp_path, tiny_dir, **GRID))
    assert [g.key for g in experiment.owned_groups(config, only=("method/*/ia2->sft/*", "zero_shot/*"))] \
        == ["zero_shot/sst2", "method/sst2/ia2->sft/4"]  # the grid's order, not the globs'
    halves = [[g.key for g in experiment.owned_groups(config, f"{i}/2", ("icl/*",))]
              for i in range(2)]
    assert halves == [["icl/sst2/4/0", "icl/sst2/4/1"], []]  # no match in a shard: no error
    assert [g.key for g in experiment.shard(experiment.groups(config), 1, 2)] == []
    assert main(["run", str(_config(tmp_path, tiny_dir)), "--only", "icl/sst2/8/*"]) == 2
    err = capsys.readouterr().err
    assert "--only 'icl/sst2/8/*' matches no group of the grid (its keys look like zero_shot/sst2, " \
        "method/sst2/sft/4, icl/sst2/4/0)" in err and err.count("\n") == 1
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_continue_study_commits_the_record_after_each_group(tmp_path, tiny_dir):  # noqa: F811
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "continue-study.sh"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / "README").write_text("x\n")
    git("add", "README")
    git("commit", "-qm", "start")
    config = _config(repo, tiny_dir, record="results/tiny", out="runs/tiny", baselines=["zero_shot"],
                     methods=["sft"], seeds=[0], lr=[1e-3])
    (repo / "other").write_text("not the record\n")  # a change of the user's: never committed
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(script), config.name], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = git("log", "--format=%s").splitlines()
    assert log[:-1] == ["results/tiny: method/sst2/sft/4 " + log[0].split()[-2] + " s",
                        "results/tiny: zero_shot/sst2 " + log[1].split()[-2] + " s"]
    # untracked: the user's file, the study directory, the config, the record's lock file
    # (beside the record; ia2's own .gitignore lists results/.*.lock)
    assert git("status", "--porcelain").split() == ["??", "other", "??", "results/.tiny.lock",
                                                    "??", "runs/", "??", "study.yaml"]
    assert "ia2 report results/tiny" in done.stdout


REPRO = Path(__file__).parents[1] / "configs" / "repro-cpu.yaml"  # not run: only its grid


def test_pace_times_the_groups_left_by_the_finished_groups_of_their_kind():
    from ia2.estimate import flops as count

    config = load_experiment(REPRO)
    grid = {g.key: g for g in experiment.groups(config)}
    icl, method, zero = grid["icl/sst2/8/0"], grid["method/sst2/sft/8"], grid["zero_shot/sst2"]
    flops = {g.key: count(config, [g]) for g in (icl, method, zero)}
    prints = {g.key: record.fingerprint(config, g) for g in (icl, method)}
    done = [{"key": icl.key, "seconds": 1200.0, "finished": "2026-01-02"},
            {"key": icl.key, "seconds": 9e9, "finished": "2026-01-01"},  # an older rerun
            {"key": method.key, "seconds": 2400.0, "finished": "2026-01-03"},
            {"key": "icl/gone/8/0", "seconds": 9e9, "finished": "2026-01-04"}]  # not in the grid
    for d in done:
        d["fingerprint"] = prints.get(d["key"])
    done.append({"key": zero.key, "seconds": 9e9, "finished": "2026-01-05",
                 "fingerprint": "other settings"})  # recorded under another config
    assert record.pace(config, [zero], []) is None
    # the finished groups themselves take what they took
    hours, how = record.pace(config, [icl, method], done)
    assert hours == pytest.approx((1200 + 2400) / 3600)
    assert "2 recorded groups" in how and "icl" in how and "method" in how
    # a kind none finished goes at the median pace of all the groups
    hours, _ = record.pace(config, [zero], done)
    overall = (1200 / flops[icl.key] + 2400 / flops[method.key]) / 2
    assert hours == pytest.approx(flops[zero.key] * overall / 3600)
    assert flops[icl.key] != flops[method.key]  # else the pace would not tell the kinds apart


def test_the_pace_is_the_median_of_the_recorded_groups(tmp_path, tiny_dir):  # noqa: F811
    from ia2.estimate import flops

    config = load_experiment(_config(tmp_path, tiny_dir, **dict(GRID, seeds=[0, 1, 2, 3])))
    icl = [g for g in experiment.groups(config) if g.kind == "icl"]
    # three ICL groups finished at 2, 4 and 10 s per TFLOP (the 10 while another job shared
    # the cores); the fourth is left: the median, not the minimum (2) or the mean (16/3)
    slow = [1.0, 5.0, 2.0]
    done = [{"key": g.key, "seconds": 2e-12 * flops(config, [g]) * s, "finished": f"t{i}",
             "fingerprint": record.fingerprint(config, g)} for i, (g, s) in enumerate(zip(icl, slow))]
    hours, basis = record.pace(config, icl[3:], done)
    assert hours == pytest.approx(4e-12 * flops(config, icl[3:]) / 3600)
    assert "median seconds per TFLOP of the 3 recorded groups by kind (icl 4.00; on None)" in basis
