"""Episodes: the reproducible split of a task into train / dev / demonstration pool / eval.

CONTRACT (implemented by `make_episode`):
- `train`: N examples drawn at random from the task's training pool with `seed` (the paper's
  way; class-balanced for classification when `balanced`).
- `dev`: min(48, N // 2) examples (the paper), at least 1, disjoint from train.
- `demos_for_train[i]`: indices into `train` of the demonstrations for train example i: the other
  N-1 train examples in a seeded order, capped by `max_demos`.
- `demos_for_dev[j]`: the demonstrations of train example j (`demos_for_train[j]`), as the
  authors' code gives dev example j.
- `demo_pool`: examples for ICL evaluation demonstrations, disjoint from train and dev.
- `eval`: the evaluation set: the first `eval_size` (the paper: 500) of the eval split after a
  fixed shuffle that does not depend on `seed`, so every seed is scored on the same queries.
Same arguments -> identical episode (and so byte-identical prompts).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from .errors import IA2Error
from .tasks.registry import get_task, list_tasks, load_split
from .tasks.spec import Example, TaskSpec


@dataclass(frozen=True)
class Episode:
    task: str
    n: int
    seed: int
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    demo_pool: tuple[Example, ...]
    eval: tuple[Example, ...]
    demos_for_train: tuple[tuple[int, ...], ...]
    demos_for_dev: tuple[tuple[int, ...], ...]


DEV_MAX = 48  # the paper's dev size cap
DEMO_POOL_MAX = 256  # enough ICL demonstrations for any N; keeps episodes light


def _rng(spec: TaskSpec, seed: int, purpose: str) -> random.Random:
    # One string-seeded stream per purpose: changing one draw never shifts another.
    return random.Random(f"{spec.name}:{seed}:{purpose}")


def _draw(pool: list[Example], available: list[int], k: int, rng: random.Random,
          spec: TaskSpec, balanced: bool, what: str) -> list[int]:
    """k indices from `available`; for balanced classification, k // C per class with the
    remainder going to classes chosen at random. The result is shuffled (classes interleave)."""
    if not (balanced and spec.kind == "classification"):
        if k > len(available):
            raise IA2Error(f"task {spec.name}: {what} needs {k} examples but only "
                           f"{len(available)} are left in the training pool")
        return rng.sample(available, k)
    by_class: dict[int, list[int]] = {c: [] for c in range(len(spec.labels))}
    for i in available:
        by_class[int(pool[i].label)].append(i)
    classes = list(by_class)
    rng.shuffle(classes)
    quota = {c: k // len(classes) + (r < k % len(classes)) for r, c in enumerate(classes)}
    chosen = []
    for c in sorted(quota):
        if quota[c] > len(by_class[c]):
            raise IA2Error(f"task {spec.name}: a balanced {what} needs {quota[c]} examples of "
                           f"label {spec.labels[c]!r} but only {len(by_class[c])} are left; "
                           "lower N or pass balanced=False")
        chosen += rng.sample(by_class[c], quota[c])
    rng.shuffle(chosen)
    return chosen


def make_episode(spec: TaskSpec | str, n: int, seed: int, data_dir=None,
                 max_demos: int | None = None, eval_size: int | None = 500,
                 balanced: bool = False, source: str = "local") -> Episode:
    """Split a task into train / dev / demo pool / eval as the module docstring's contract says."""
    if isinstance(spec, str):
        spec = get_task(spec)
    if spec.eval_only:
        trained_on = [t.name for t in list_tasks() if spec.name in t.ood] or ["another task"]
        raise IA2Error(f"task {spec.name} is evaluation-only; train on one of "
                       f"{', '.join(trained_on)}")
    if n < 2:
        raise IA2Error(f"N must be at least 2 (one example and one demonstration), not {n}")
    if max_demos is not None and max_demos < 0:
        raise IA2Error(f"max_demos must be >= 0, not {max_demos}")
    pool = load_split(spec, "train", data_dir, source)
    n_dev = max(1, min(DEV_MAX, n // 2))
    if n + n_dev > len(pool):
        raise IA2Error(f"task {spec.name}: N={n} plus {n_dev} dev examples needs {n + n_dev} "
                       f"training examples but the pool has {len(pool)}")
    everything = list(range(len(pool)))
    train = _draw(pool, everything, n, _rng(spec, seed, "train"), spec, balanced,
                  f"train set of {n}")
    used = set(train)
    dev = _draw(pool, [i for i in everything if i not in used], n_dev, _rng(spec, seed, "dev"),
                spec, balanced, f"dev set of {n_dev}")
    used.update(dev)
    rest = [i for i in everything if i not in used]
    demo_pool = _rng(spec, seed, "demo_pool").sample(rest, min(DEMO_POOL_MAX, len(rest)))

    cap = n if max_demos is None else max_demos
    order = _rng(spec, seed, "demos")
    demos_for_train = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        order.shuffle(others)
        demos_for_train.append(tuple(others[:cap]))
    demos_for_dev = demos_for_train[:n_dev]  # n_dev <= N // 2
    return Episode(
        task=spec.name, n=n, seed=seed,
        train=tuple(pool[i] for i in train), dev=tuple(pool[i] for i in dev),
        demo_pool=tuple(pool[i] for i in demo_pool),
        eval=eval_set(spec, data_dir, eval_size, source),
        demos_for_train=tuple(demos_for_train), demos_for_dev=tuple(demos_for_dev))


def eval_set(spec: TaskSpec | str, data_dir=None, eval_size: int | None = 500,
             source: str = "local") -> tuple[Example, ...]:
    """The first `eval_size` (None: all) of the eval split after a fixed, seed-independent shuffle;
    also how eval-only (OOD) tasks are scored."""
    if isinstance(spec, str):
        spec = get_task(spec)
    if eval_size is not None and eval_size < 1:
        raise IA2Error(f"eval_size must be at least 1, not {eval_size}")
    examples = load_split(spec, "eval", data_dir, source)
    order = list(range(len(examples)))
    random.Random(f"{spec.name}:eval").shuffle(order)
    return tuple(examples[i] for i in order[:eval_size])


def _example_json(ex: Example) -> dict:
    return {"uid": ex.uid, "inputs": ex.inputs, "label": ex.label, "solution": ex.solution}


def episode_fingerprint(episode: Episode) -> str:
    """sha256 of a canonical JSON of the whole episode (a cache key part for later stages).
    The prompt preset is not part of an episode; callers add it to their keys."""
    doc = {"task": episode.task, "n": episode.n, "seed": episode.seed,
           **{part: [_example_json(ex) for ex in getattr(episode, part)]
              for part in ("train", "dev", "demo_pool", "eval")},
           "demos_for_train": [list(d) for d in episode.demos_for_train],
           "demos_for_dev": [list(d) for d in episode.demos_for_dev]}
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
