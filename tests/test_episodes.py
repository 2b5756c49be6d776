"""Episodes: the train / dev / demo pool / eval contract, determinism, fingerprints, errors.
Runs on small task files written here (a user task), plus SST-2 where the shared data exists."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ia2.episodes import DEV_MAX, episode_fingerprint, eval_set, make_episode
from ia2.errors import IA2Error
from ia2.paths import data_dir
from ia2.tasks import get_task, load_task_file


def _task(folder, train_labels, eval_labels):
    (folder / "task.yaml").write_text(
        'name: three\nkind: classification\ntemplate: "T: {text}\\nL:"\nlabels: [a, b, c]\n'
        "label_field: y\nfiles: {train: train.jsonl, eval: test.jsonl}\n", encoding="utf-8")
    for name, labels in (("train.jsonl", train_labels), ("test.jsonl", eval_labels)):
        rows = [{"text": f"{name} {i}", "y": y} for i, y in enumerate(labels)]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return load_task_file(folder / "task.yaml")


@pytest.fixture
def three_way(tmp_path):
    """A 3-class task: 60 training rows (20 per class), 40 eval rows."""
    return _task(tmp_path, "abc" * 20, "abc" * 13 + "a")


@pytest.fixture
def skewed(tmp_path):
    """40 a, 10 b, 10 c in training."""
    return _task(tmp_path, "a" * 40 + "b" * 10 + "c" * 10, "abc")


def _uids(examples):
    return [ex.uid for ex in examples]


@pytest.mark.parametrize("n", [2, 3, 7, 12, 30])
@pytest.mark.parametrize("balanced", [False, True])
def test_contract(three_way, n, balanced):
    ep = make_episode(three_way, n, seed=1, balanced=balanced)
    n_dev = max(1, min(DEV_MAX, n // 2))
    assert (ep.task, ep.n, ep.seed) == ("three", n, 1)
    assert (len(ep.train), len(ep.dev)) == (n, n_dev)
    train, dev, pool = set(_uids(ep.train)), set(_uids(ep.dev)), set(_uids(ep.demo_pool))
    assert len(train) == n and len(dev) == n_dev and len(pool) == len(ep.demo_pool)
    assert not train & dev and not train & pool and not dev & pool
    assert len(pool) == min(256, 60 - n - n_dev)  # the rest of the training pool
    if balanced:
        counts = Counter(ex.label for ex in ep.train)
        assert max(counts.values()) - min(counts.get(c, 0) for c in range(3)) <= 1
    assert len(ep.demos_for_train) == n and len(ep.demos_for_dev) == n_dev
    for i, demos in enumerate(ep.demos_for_train):
        assert sorted(demos) == [j for j in range(n) if j != i]
    assert ep.demos_for_dev == ep.demos_for_train[:n_dev]  # the authors' dev prompts
    assert len(ep.eval) == 40 and len(set(_uids(ep.eval))) == 40


def test_max_demos_caps_and_orders_vary(three_way):
    ep = make_episode(three_way, 12, seed=0, max_demos=4)
    assert all(len(d) == 4 for d in ep.demos_for_train + ep.demos_for_dev)
    assert all(i not in d for i, d in enumerate(ep.demos_for_train))
    assert len(set(ep.demos_for_train)) > 1  # a seeded order per example, not one fixed list
    assert make_episode(three_way, 12, seed=0, max_demos=0).demos_for_train[0] == ()


def test_deterministic_and_seed_dependent(three_way):
    a, b = make_episode(three_way, 9, seed=3), make_episode(three_way, 9, seed=3)
    assert a == b and episode_fingerprint(a) == episode_fingerprint(b)
    c = make_episode(three_way, 9, seed=4)
    assert _uids(a.train) != _uids(c.train)
    assert episode_fingerprint(a) != episode_fingerprint(c)
    assert a.eval == c.eval  # every seed is scored on the same queries
    assert a.eval == eval_set(three_way)
    assert _uids(a.eval) != sorted(_uids(a.eval), key=lambda u: int(u.split(":")[1]))  # shuffled


def test_fingerprint_covers_content(three_way):
    import dataclasses

    ep = make_episode(three_way, 6, seed=0)
    fp = episode_fingerprint(ep)
    assert len(fp) == 64 and int(fp, 16) >= 0
    changed = dataclasses.replace(ep, demos_for_train=ep.demos_for_train[::-1])
    assert episode_fingerprint(changed) != fp
    relabelled = dataclasses.replace(ep, eval=(dataclasses.replace(ep.eval[0], label=(ep.eval[0].label + 1) % 3),) + ep.eval[1:])
    assert episode_fingerprint(relabelled) != fp


def test_eval_size(three_way):
    small = eval_set(three_way, eval_size=5)
    assert small == eval_set(three_way)[:5]
    with pytest.raises(IA2Error, match="eval_size"):
        eval_set(three_way, eval_size=0)


@pytest.mark.parametrize("n, balanced, message", [
    (1, True, "N must be at least 2"),
    (50, True, "needs 75 training examples but the pool has 60"),
    (33, True, "train set of 33 needs 11 examples of label 'b' but only 10"),
    (24, True, "dev set of 12 needs 4 examples of label '[bc]' but only 2"),
])
def test_errors(skewed, n, balanced, message):
    with pytest.raises(IA2Error, match=message):
        make_episode(skewed, n, seed=0, balanced=balanced)


def test_unbalanced_draw_takes_what_the_pool_has(skewed):
    ep = make_episode(skewed, 33, seed=0, balanced=False)
    assert len(ep.train) == 33 and len(ep.dev) == 16


def test_eval_only_task_cannot_train():
    with pytest.raises(IA2Error, match="poem_sentiment is evaluation-only; train on one of sst2"):
        make_episode(get_task("poem_sentiment"), 4, seed=0)


def test_sst2_episode_on_shared_data():
    try:
        root = data_dir()
    except IA2Error as e:
        pytest.skip(f"no benchmark data: {e}")
    ep = make_episode("sst2", 16, seed=0, data_dir=root, balanced=True)
    assert Counter(ex.label for ex in ep.train) == {0: 8, 1: 8}
    drawn = make_episode("sst2", 16, seed=0, data_dir=root)  # at random, the paper's way
    assert Counter(ex.label for ex in drawn.train) != {0: 8, 1: 8} or drawn.train != ep.train
    assert len(ep.dev) == 8 and len(ep.eval) == 500 and len(ep.demo_pool) == 256
    assert all(ex.uid.startswith("sst2/train.tsv:") for ex in ep.train + ep.dev + ep.demo_pool)
    assert all(ex.uid.startswith("sst2/validation.tsv:") for ex in ep.eval)
    long = make_episode(get_task("sst2", min_words=8), 16, seed=0, data_dir=root)
    assert all(len(ex.inputs["text"].split()) >= 8 for ex in long.train + long.dev + long.demo_pool)
    assert long.eval == ep.eval


def test_default_draw_is_at_random(skewed):
    """The paper samples train and dev at random: on a 4:1:1 pool the draw follows the pool,
    where a balanced draw would force equal classes."""
    counts = Counter()
    for seed in range(20):
        counts.update(ex.label for ex in make_episode(skewed, 6, seed=seed).train)
    assert counts[0] > 2 * counts[1] and counts[0] > 2 * counts[2]
    assert all(Counter(ex.label for ex in make_episode(skewed, 6, seed=s, balanced=True).train)
               == {0: 2, 1: 2, 2: 2} for s in range(5))
