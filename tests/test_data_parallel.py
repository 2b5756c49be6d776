"""Teacher collection and evaluation split across processes (ia2.distributed): the slicing,
and 2 CPU processes under torchrun (gloo) against one process on a tiny model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ia2.distributed import gather_objects, load_or_build, rank_world, shard_indices

SCRIPT = Path(__file__).with_name("data_parallel_script.py")


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (9, 4), (16, 3)])
def test_slices_cover_every_index_once_in_order(n, world):
    parts = [shard_indices(n, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        shard_indices(n, world, world)


def test_one_process_is_a_plain_call(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_world() == (0, 1) and gather_objects("x") == ["x"]

    class Cache:
        def load_or_build(self, build, progress):
            return build([0, 1, 2], progress), 3

    assert load_or_build(Cache(), lambda idx, bar: [i * 10 for i in idx]) == ([0, 10, 20], 3)


def _run(cmd, cwd):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_one_cache_and_the_one_process_numbers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(SCRIPT), str(one)], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(two)], tmp_path)
    single = torch.load(one / "rank0.pt", weights_only=False)
    r0, r1 = (torch.load(two / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    # the work was split: each process computed part of the prompts and queries, together all
    total = single["counts"]
    assert total == {"prompts": 9, "queries": 7 + 7 + 5}
    for what in total:
        assert 0 < r0["counts"][what] < total[what] and 0 < r1["counts"][what] < total[what]
        assert r0["counts"][what] + r1["counts"][what] == total[what]

    # one cache entry, written by rank 0, the same key as one process; both ranks hold it
    assert r0["key"] == r1["key"] == single["key"]
    assert [p.name for p in (two / "cache").iterdir() if p.is_dir()] == [r0["key"]]
    assert r0["computed"] == 9
    for a, b, s in zip(r0["signals"], r1["signals"], single["signals"], strict=True):
        assert a[0].tolist() == b[0].tolist() == s[0].tolist()  # the same ICL responses
        for x, y, z in zip(a[1:], b[1:], s[1:]):
            assert torch.equal(x, y)
            torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-4)  # batching moves the last bits

    # one set of numbers: equal on both ranks, as one process computed them, stored once
    for row0, row1, row_s in zip(r0["rows"], r1["rows"], single["rows"], strict=True):
        m0, m1, ms = row0["metrics"], row1["metrics"], row_s["metrics"]
        assert row0["key"] == row_s["key"] and m0 == m1
        assert m0.keys() == ms.keys()
        for k, v in ms.items():
            if isinstance(v, float):
                assert m0[k] == pytest.approx(v, abs=1e-6), k
            elif k != "per_set":
                assert m0[k] == v, k
        assert row0["definitions"]["processes"] == 2
    assert r0["rows"][0]["metrics"]["n"] == 7 and r0["rows"][2]["metrics"]["n"] == 5
    from ia2.store import ResultsStore

    with ResultsStore(two / "results.sqlite") as store:
        assert len(store.rows()) == 3
