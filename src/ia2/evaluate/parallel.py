"""Evaluation split across the processes of a `torchrun` launch (see `ia2.distributed`).

Each process scores a contiguous slice of the queries; the slices' records are gathered on every
process in query order and the metrics are computed from all of them, so every process holds
the numbers one process would have computed (up to the last bits of float batching)."""

from __future__ import annotations

from ..distributed import gather_objects, rank_world, shard_indices
from ..tasks.spec import Example


def score_parallel(score, model, tokenizer, spec, queries, demos, config) -> tuple[dict, dict, list]:
    """`score(model, tokenizer, spec, queries, demos, config)` -> (metrics, definitions,
    records), run on this process's slice of `queries` (and of per-query `demos`), joined."""
    rank, world = rank_world()
    if world == 1:
        return score(model, tokenizer, spec, queries, demos, config)
    idx = shard_indices(len(queries), rank, world)
    demos = list(demos)
    per_query = bool(demos) and not isinstance(demos[0], Example)
    part = None
    if idx:  # fewer queries than processes: some have none
        part = score(model, tokenizer, spec, [queries[i] for i in idx],
                     [demos[i] for i in idx] if per_query else demos, config)
    parts = [p for p in gather_objects(part) if p is not None]
    records = [r for _, _, recs in parts for r in recs]
    if spec.kind == "classification":
        from .classify import classification_metrics

        metrics, joined = classification_metrics(records, config.n_bins,
                                                 confidence=config.confidence)
    else:
        from .generate import generation_metrics

        metrics, joined = generation_metrics(records), {}
    metrics["n_demos"] = min(m["n_demos"] for m, _, _ in parts)
    definitions = dict(parts[0][1], **joined, processes=world)
    return metrics, definitions, records
