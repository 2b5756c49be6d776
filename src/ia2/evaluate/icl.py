"""Fast next-token scoring when many queries share one prompt prefix.

ICL evaluation prompts are `special prefix + demonstrations + query`. With one shared demonstration
set many queries share `PromptIds.ids[:query_start]`: that prefix is run through the model once and
its KV cache reused for every batch of queries. Zero-shot and adapter evaluation use the same path
with the prefix being the special tokens alone (possibly empty). With demonstrations drawn per
query (the paper's ICL baseline) every prefix is unique; such prompts are batched whole instead.

Cache reuse: each batch gets fresh `Cache`/layer objects whose key/value tensors are `expand`ed
views of the prefix's (no copy). A forward only ever concatenates onto them (`DynamicLayer.update`
builds new tensors), so the shared prefix tensors are never written; sliding-window layers keep
their own counters in the per-batch layer copy.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..errors import IA2Error
from ..runtime import runtime_of, token_batches
from ..tasks.prompts import PromptIds, encode_prompt, label_token_ids
from ..tasks.spec import Example, TaskSpec
from .classify import ClassificationScores, score_classification


def _device(model) -> torch.device:
    return next(model.parameters()).device


class _eval_mode:
    """Run in eval mode (no dropout) and restore the caller's mode afterwards."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def prefix_cache(model, prefix_ids: Sequence[int]) -> DynamicCache | None:
    """The KV cache of `prefix_ids` (batch 1), or None for an empty prefix."""
    if len(prefix_ids) == 0:
        return None
    ids = torch.tensor([list(prefix_ids)], device=_device(model))
    with torch.inference_mode(), _eval_mode(model):
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    if not isinstance(out.past_key_values, DynamicCache):
        raise IA2Error(f"prefix reuse needs a DynamicCache; the model returned "
                       f"{type(out.past_key_values).__name__}")
    return out.past_key_values


def _batch_view(cache: DynamicCache, batch: int) -> DynamicCache:
    """A per-batch cache over the shared prefix tensors (expanded views, not copies)."""
    view = copy.copy(cache)
    view.layers = []
    for layer in cache.layers:
        mine = copy.copy(layer)  # own counters (e.g. a sliding layer's cumulative_length)
        if getattr(mine, "keys", None) is not None and mine.keys.numel():
            mine.keys = mine.keys.expand(batch, -1, -1, -1)
            mine.values = mine.values.expand(batch, -1, -1, -1)
        view.layers.append(mine)
    return view


def _batches(lengths: list[int], batch_size: int, token_budget: int | None = None,
             extra: int = 0) -> list[list[int]]:
    # Similar lengths together means little padding; results are put back in input order.
    # With a token budget a batch also holds at most that many (padded + `extra`) tokens.
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return token_batches(order, lengths, batch_size, token_budget, extra)


def _budget(model, token_budget: int | None) -> int | None:
    return runtime_of(model).token_budget if token_budget is None else token_budget


def next_token_logits(model, prefix_ids: Sequence[int], query_ids_list: Sequence[Sequence[int]],
                      batch_size: int = 8, progress: bool = False,
                      token_budget: int | None = None) -> torch.Tensor:
    """[Q, V] float32 logits (on the CPU) at each query's last token, as if `prefix_ids + query`
    ran alone, whatever the model's device and dtype.

    The prefix is encoded once; queries are right-padded within a batch, positions continue
    from the prefix length, and each query's logits are read at its own last real token. A
    token budget (default: the model's runtime's) counts the prefix in every row.
    """
    if batch_size < 1:
        raise IA2Error(f"batch size must be >= 1, got {batch_size}")
    if any(len(q) == 0 for q in query_ids_list):
        raise IA2Error("every query needs at least one token")
    if not query_ids_list:
        return torch.empty(0, model.config.get_text_config().vocab_size)
    device = _device(model)
    cache = prefix_cache(model, prefix_ids)
    p = len(prefix_ids)
    out: list[torch.Tensor | None] = [None] * len(query_ids_list)
    groups = _batches([len(q) for q in query_ids_list], batch_size, _budget(model, token_budget), p)
    with torch.inference_mode(), _eval_mode(model):
        for idx in tqdm(groups, desc="queries", disable=not progress, unit="batch"):
            qs = [list(query_ids_list[i]) for i in idx]
            b, width = len(qs), max(len(q) for q in qs)
            ids = torch.zeros(b, width, dtype=torch.long)
            mask = torch.zeros(b, p + width, dtype=torch.long)
            mask[:, :p] = 1
            for r, q in enumerate(qs):
                ids[r, : len(q)] = torch.tensor(q)
                mask[r, p : p + len(q)] = 1
            last = torch.tensor([len(q) - 1 for q in qs])
            positions = torch.arange(p, p + width).expand(b, width)
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=None if cache is None else _batch_view(cache, b),
                use_cache=cache is not None,
                logits_to_keep=last[:, None].to(device),  # [B, 1]: each row's own last token
            ).logits[:, -1]
            for r, i in enumerate(idx):
                out[i] = logits[r].float().cpu()
    return torch.stack(out)


def full_prompt_logits(model, prompts: Sequence[Sequence[int]], batch_size: int = 8,
                       progress: bool = False, token_budget: int | None = None) -> torch.Tensor:
    """[Q, V] last-token logits with every prompt encoded in full (left-padded batches): the
    baseline prefix reuse is measured against, and a reference for it."""
    if not prompts:
        return torch.empty(0, model.config.get_text_config().vocab_size)
    device = _device(model)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    with torch.inference_mode(), _eval_mode(model):
        for idx in tqdm(_batches([len(x) for x in prompts], batch_size,
                                 _budget(model, token_budget)), desc="prompts",
                        disable=not progress, unit="batch"):
            rows = [list(prompts[i]) for i in idx]
            width = max(len(x) for x in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, x in enumerate(rows):
                ids[r, width - len(x):] = torch.tensor(x)
                mask[r, width - len(x):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), use_cache=False,
                           logits_to_keep=1).logits[:, -1]
            for r, i in enumerate(idx):
                out[i] = logits[r].float().cpu()
    return torch.stack(out)


def logits_for_prompts(model, prompts: Sequence[PromptIds], batch_size: int = 8,
                       progress: bool = False) -> torch.Tensor:
    """Last-token logits for `encode_prompt` outputs. Prompts sharing a prefix share its cache;
    prompts whose prefix is their own are encoded whole, in batches (a one-query prefix pass
    per prompt would run batch 1)."""
    if not prompts:
        return torch.empty(0, model.config.get_text_config().vocab_size)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, pr in enumerate(prompts):
        groups.setdefault(tuple(pr.ids[: pr.query_start]), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    singles = [m[0] for m in groups.values() if len(m) == 1]
    if singles:
        logits = full_prompt_logits(model, [prompts[i].ids for i in singles], batch_size, progress)
        for row, i in zip(logits, singles):
            out[i] = row
    for prefix, members in groups.items():
        if len(members) == 1:
            continue
        logits = next_token_logits(model, prefix, [prompts[i].ids[prompts[i].query_start:]
                                                   for i in members], batch_size, progress)
        for row, i in zip(logits, members):
            out[i] = row
    return torch.stack(out)


def demos_per_query(demos, n_queries: int) -> list[list[Example]]:
    """One demonstration list per query: `demos` is either one list shared by every query or
    a list of `n_queries` lists (one per query)."""
    demos = list(demos)
    if not demos:
        return [[] for _ in range(n_queries)]
    if isinstance(demos[0], Example):
        return [demos] * n_queries
    if len(demos) != n_queries:
        raise IA2Error(f"{len(demos)} demonstration lists for {n_queries} queries")
    return [list(d) for d in demos]


def evaluate_classification(model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                            demos=(), preset: str = "natural",
                            batch_size: int = 8, max_length: int | None = None,
                            n_bins: int = 15, confidence: str = "label_set",
                            progress: bool = False) -> ClassificationScores:
    """Score a classification task: with `demos` this is ICL (`demos`: one list for every
    query, or one list per query, see `demos_per_query`); without, zero-shot or an adapted
    model. Every prompt fits the context window (`max_length`, default the model's): demonstrations
    that do not fit are dropped (`n_demos` counts the fewest kept), a query that alone does not
    fit is an IA2Error naming it."""
    from ..models import context_window

    if spec.kind != "classification":
        raise IA2Error(f"task {spec.name} is a {spec.kind} task, not classification")
    per_query = demos_per_query(demos, len(queries))
    window = context_window(model, max_length)
    prompts = [encode_prompt(tokenizer, spec, q, d, preset, window)
               for q, d in zip(queries, per_query)]
    logits = logits_for_prompts(model, prompts, batch_size, progress)
    scores = score_classification(logits, label_token_ids(tokenizer, spec, preset),
                                  [int(q.label) for q in queries], n_bins=n_bins,
                                  confidence=confidence, uids=[q.uid for q in queries])
    scores.metrics["n_demos"] = min((p.n_demos for p in prompts), default=0)
    scores.definitions["context_window"] = window
    return scores
