"""Sizes a study will need, known before any model is loaded: for `ia2 run --dry-run`.

`teacher_cache_bytes(config, model_dims)` is the teacher cache a study writes: for every episode
a method needs the teacher for, each train and dev example stores its activations
(layers x positions x hidden x storage bytes), its response ids and top-k (int64 ids, fp32
log-probs) and, when a kd run needs the full distribution, positions x vocabulary x storage
bytes. Positions are counted at the response budget (`max_new_tokens`): an upper bound, since a
response that stops early stores fewer. Safetensors headers and manifests are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

STORAGE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
ID_BYTES, LOGPROB_BYTES = 8, 4  # int64 token ids, fp32 top-k log-probs


@dataclass(frozen=True)
class ModelDims:
    layers: int
    hidden: int
    vocab: int

    @classmethod
    def of(cls, dims) -> "ModelDims":
        """From a ModelDims, a mapping {layers, hidden, vocab} or a transformers config (its text
        config for multimodal ones: num_hidden_layers / n_layer, hidden_size / n_embd,
        vocab_size)."""
        if isinstance(dims, ModelDims):
            return dims
        if isinstance(dims, dict):
            return cls(int(dims["layers"]), int(dims["hidden"]), int(dims["vocab"]))
        cfg = dims.get_text_config() if hasattr(dims, "get_text_config") else dims
        def first(*names):
            return next(int(getattr(cfg, n)) for n in names if getattr(cfg, n, None))

        return cls(first("num_hidden_layers", "n_layer"), first("hidden_size", "n_embd"),
                   first("vocab_size"))


def example_bytes(dims: ModelDims, positions: int, layers: int, storage: str, topk: int,
                  full_distribution: bool) -> int:
    """Bytes of one example's teacher signals with `positions` aligned positions."""
    size = STORAGE_BYTES[storage]
    total = layers * positions * dims.hidden * size + positions * ID_BYTES
    total += positions * topk * (ID_BYTES + LOGPROB_BYTES)
    if full_distribution:
        total += positions * dims.vocab * size
    return total


def teacher_episodes(config) -> list[tuple[str, int, int]]:
    """(task, N, seed) of every episode whose teacher signals the study collects."""
    from .methods.pipeline import RunConfig, needs_teacher

    return [(e.task, n, s) for e in config.tasks for n in config.ns(e)
            if any(needs_teacher(RunConfig(method=m, labels=config.sft_labels))
                   for m in config.methods_at(e, n))
            for s in config.seeds]


def teacher_cache_bytes(config, model_dims,
                        episodes: Iterable[tuple[str, int, int]] | None = None) -> int:
    """Upper bound on the bytes of teacher cache `config` (an ExperimentConfig) writes, for a
    model of `model_dims` (see `ModelDims.of`). `episodes` narrows it to some (task, N, seed)
    episodes, e.g. a shard's; default: all of `teacher_episodes(config)`."""
    from .episodes import DEV_MAX
    from .methods.pipeline import RunConfig, needs_full_distribution
    from .tasks.registry import get_task

    dims = ModelDims.of(model_dims)
    teacher = config.teacher
    layers = len(teacher.layers) if teacher.layers else dims.layers
    entries = {e.task: e for e in config.tasks}
    options = {e.task: e.options for e in config.tasks}
    total = 0
    for task, n, _seed in (teacher_episodes(config) if episodes is None else episodes):
        full = any(needs_full_distribution(RunConfig(method=m, kd=config.kd))
                   for m in config.methods_at(entries[task], n))
        positions = teacher.max_new_tokens or get_task(task, **options.get(task, {})).max_new_tokens
        examples = n + max(1, min(DEV_MAX, n // 2))  # train + dev (ia2.episodes)
        total += examples * example_bytes(dims, positions, layers, teacher.dtype, teacher.topk,
                                          full)
    return total
