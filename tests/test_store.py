import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ia2.errors import IA2Error
from ia2.store import COLUMNS, ResultsStore, run_key


def _row(key="k1", **kw):
    row = dict(key=key, model="smollm2-135m", adapter="/runs/a", method="ia2", task="sst2",
               eval_task="sst2", n=4, seed=0, lr=1e-4, beta=None, setting="adapter",
               metrics={"accuracy": 0.75, "label_set_accuracy": 0.8, "ece": 0.1, "brier": 0.3,
                        "nll": 0.5, "ece_equal_width": 0.12},
               definitions={"calibration": {"binning": "equal_mass", "n_bins": 15}})
    row.update(kw)
    return row


def test_add_get_has_roundtrip(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        assert not s.has("k1") and s.get("k1") is None
        assert s.add(_row())
        assert s.has("k1")
        got = s.get("k1")
    assert got["accuracy"] == 0.75 and got["label_set_accuracy"] == 0.8
    assert got["exact_match"] is None  # not in the metrics
    assert got["metrics"]["ece_equal_width"] == 0.12
    assert got["definitions"]["calibration"]["n_bins"] == 15
    assert got["n"] == 4 and got["lr"] == 1e-4 and got["beta"] is None
    assert got["created"].endswith("+00:00")
    assert set(got) == set(COLUMNS)


def test_add_is_idempotent_unless_overwrite(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        assert s.add(_row())
        assert not s.add(_row(metrics={"accuracy": 0.1}))
        assert s.get("k1")["accuracy"] == 0.75
        assert s.add(_row(metrics={"accuracy": 0.1}), overwrite=True)
        assert s.get("k1")["accuracy"] == 0.1
        assert len(s.rows()) == 1


def test_rows_filters(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        s.add(_row("a", seed=0, setting="icl", adapter=None))
        s.add(_row("b", seed=1))
        s.add(_row("c", seed=2, task="agnews"))
        assert [r["key"] for r in s.rows()] == ["a", "b", "c"]
        assert [r["key"] for r in s.rows(task="sst2")] == ["a", "b"]
        assert [r["key"] for r in s.rows(seed=[1, 2])] == ["b", "c"]
        assert [r["key"] for r in s.rows(adapter=None)] == ["a"]
        assert [r["key"] for r in s.rows(task="sst2", setting="adapter")] == ["b"]
        with pytest.raises(IA2Error, match="cannot filter"):
            s.rows(colour="red")


@pytest.mark.parametrize("bad,match", [
    (dict(setting="few_shot"), "setting"),
    (dict(key=""), "key"),
    (dict(speed=3), "unknown fields"),
    (dict(metrics=[1, 2]), "metrics must be a dict"),
])
def test_bad_rows_raise_and_write_nothing(tmp_path, bad, match):
    with ResultsStore(tmp_path / "r.db") as s:
        with pytest.raises(IA2Error, match=match):
            s.add(_row(**bad))
        assert s.rows() == []


def test_export_jsonl(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        s.add(_row("b"))
        s.add(_row("a", metrics={"exact_match": 0.5}))
        assert s.export_jsonl(tmp_path / "out" / "r.jsonl") == 2
    lines = (tmp_path / "out" / "r.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["key"] for r in rows] == ["a", "b"]
    assert rows[0]["exact_match"] == 0.5 and rows[0]["metrics"] == {"exact_match": 0.5}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.jsonl"]  # no temp file left


def test_merge_union_by_key(tmp_path):
    with ResultsStore(tmp_path / "a.db") as a, ResultsStore(tmp_path / "b.db") as b:
        a.add(_row("x", metrics={"accuracy": 0.1}))
        b.add(_row("x", metrics={"accuracy": 0.9}))  # same key: the target's row is kept
        b.add(_row("y"))
    with ResultsStore(tmp_path / "c.db") as c:
        c.add(_row("z"))
    with ResultsStore(tmp_path / "a.db") as a:
        assert a.merge([tmp_path / "b.db", tmp_path / "c.db"]) == 2
        assert [r["key"] for r in a.rows()] == ["x", "y", "z"]
        assert a.get("x")["accuracy"] == 0.1
        assert a.get("y")["definitions"] == _row()["definitions"]
        assert a.merge([tmp_path / "b.db"]) == 0
        with pytest.raises(IA2Error, match="no such results database"):
            a.merge([tmp_path / "missing.db"])
        (tmp_path / "junk.db").write_text("not sqlite at all" * 100)
        with pytest.raises(IA2Error, match="junk.db"):
            a.merge([tmp_path / "junk.db"])


def test_wal_mode_and_concurrent_reader(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as w:
        assert w.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        w.add(_row("a"))
        w.db.execute("BEGIN IMMEDIATE")  # a writer holding its lock
        w.db.execute("DELETE FROM results")
        with ResultsStore(path) as r:  # a reader still sees the last committed state
            assert [x["key"] for x in r.rows()] == ["a"]
        w.db.rollback()


def test_not_a_database(tmp_path):
    p = tmp_path / "bad.db"
    p.write_text("garbage" * 1000)
    with pytest.raises(IA2Error, match="bad.db"):
        ResultsStore(p)


def test_killed_writer_leaves_only_whole_rows(tmp_path):
    path = tmp_path / "r.db"
    script = (
        "import sys; from ia2.store import ResultsStore\n"
        "s = ResultsStore(sys.argv[1])\n"
        "for i in range(10**6):\n"
        "    s.add(dict(key=f'k{i:07d}', setting='icl', model='m', task='t', eval_task='t',\n"
        "               metrics={'accuracy': i / 10**6, 'pad': 'x' * 2000}, definitions={'i': i}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it has written something
            time.sleep(0.2)
            try:
                if sqlite3.connect(path).execute("SELECT count(*) FROM results").fetchone()[0] > 5:
                    break
            except sqlite3.Error:
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with ResultsStore(path) as s:
        rows = s.rows()
        assert len(rows) > 5
        for r in rows:
            i = r["definitions"]["i"]
            assert r["key"] == f"k{i:07d}" and r["metrics"]["accuracy"] == r["accuracy"] == i / 10**6
            assert len(r["metrics"]["pad"]) == 2000


def test_run_key_is_stable():
    k = run_key(model="m", method="ia2", seed=1, beta=None, n=4)
    assert k == run_key(n=4, seed=1, method="ia2", model="m")
    assert k == "method=ia2|model=m|n=4|seed=1"
    assert k != run_key(model="m", method="ia2", seed=2, n=4)
