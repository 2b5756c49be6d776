"""Episodes: the reproducible split of a task into train / dev / demonstration pool / eval.

CONTRACT (implemented by `make_episode`):
- `train`: N examples (class-balanced for classification when `balanced`), drawn from the task's
  training pool with `seed`.
- `dev`: min(48, N // 2) examples (the paper), at least 1, disjoint from train.
- `demos_for_train[i]`: indices into `train` of the demonstrations for train example i: the other
  N-1 train examples in a seeded order, capped by `max_demos`.
- `demos_for_dev[j]`: indices into `train`: all train examples in a seeded order, capped.
- `demo_pool`: examples for ICL evaluation demonstrations, disjoint from train and dev.
- `eval`: the evaluation set: the first `eval_size` (the paper: 500) of the eval split after a
  fixed shuffle that does not depend on `seed`, so every seed is scored on the same queries.
Same arguments -> identical episode (and so byte-identical prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tasks.spec import Example


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
