"""Batched greedy generation and exact-match scoring for generation tasks (GSM8K, MATH, SciQ).

Prompts arrive as token ids (`encode_prompt`) and are never re-tokenized. Batches are left-padded
so every row's next token sits at the same column; decoding stops per row at EOS, at one of the
task's stop strings (a blank line by default), or after `spec.max_new_tokens`. The returned text
is cut just before the first stop string, then parsed with the task's answer parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from ..errors import IA2Error
from ..runtime import runtime_of, token_batches
from ..tasks.parsers import answers_match, cut_at_stop, parse_answer
from ..tasks.prompts import encode_prompt
from ..tasks.spec import Example, TaskSpec
from .icl import demos_per_query


@dataclass
class Generation:
    ids: list[int]  # generated ids through the EOS or the token completing the first stop string
    text: str  # decoded, cut before the first stop string, special tokens dropped
    finish: str  # "eos", "stop" or "length"


class StopOnStrings(StoppingCriteria):
    """Marks a row done once its generated text (after `start`) contains any stop string."""

    def __init__(self, tokenizer, stops: Sequence[str], start: int):
        self.tokenizer, self.stops, self.start = tokenizer, tuple(stops), start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def _finish(tokenizer, row: list[int], eos: list[int], stops: Sequence[str]) -> Generation:
    if any(t in eos for t in row):
        row = row[: next(i for i, t in enumerate(row) if t in eos) + 1]
    text = tokenizer.decode(row, skip_special_tokens=True)
    answer = cut_at_stop(text, stops)
    if answer != text:
        # shortest id prefix whose text already holds a stop string (containment is monotone)
        lo, hi = 1, len(row)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(row[:mid], skip_special_tokens=True) for s in stops if s):
                hi = mid
            else:
                lo = mid + 1
        return Generation(row[:lo], answer, "stop")
    return Generation(row, text, "eos" if row and row[-1] in eos else "length")


def greedy_generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    stop: Sequence[str] = ("\n\n",), batch_size: int = 8,
                    progress: bool = False, token_budget: int | None = None) -> list[Generation]:
    """Greedy continuations of token-id prompts, in input order. Batches hold at most
    `batch_size` prompts and, with a token budget (default: the model's runtime's), at most
    that many tokens counting each row's prompt width plus `max_new_tokens`."""
    if max_new_tokens < 1:
        raise IA2Error(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise IA2Error("every prompt needs at least one token")
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=eos or None)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
    if token_budget is None:
        token_budget = runtime_of(model).token_budget
    batches = token_batches(order, [len(p) for p in prompts], batch_size, token_budget,
                            extra=max_new_tokens)
    out: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for idx in tqdm(batches, desc="generate", disable=not progress):
            rows = [list(prompts[i]) for i in idx]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, x in enumerate(rows):
                ids[r, width - len(x):] = torch.tensor(x)
                mask[r, width - len(x):] = 1
            criteria = StoppingCriteriaList([StopOnStrings(tokenizer, stop, width)] if stop else [])
            with torch.inference_mode():
                seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      generation_config=config, stopping_criteria=criteria)
            for r, i in enumerate(idx):
                out[i] = _finish(tokenizer, seqs[r, width:].tolist(), eos, stop)
    finally:
        model.train(was_training)
    return out


@dataclass
class GenerationScores:
    records: list[dict]
    metrics: dict[str, float]
    definitions: dict = field(default_factory=dict)


def score_generation(parser: str, texts: Sequence[str], golds: Sequence[str],
                     uids: Sequence[str] | None = None) -> GenerationScores:
    """Parse each text with the named parser and exact-match it against the gold answer."""
    if len(texts) != len(golds):
        raise IA2Error(f"{len(texts)} generations but {len(golds)} gold answers")
    if not texts:
        raise IA2Error("no examples to score")
    records = []
    for i, (text, gold) in enumerate(zip(texts, golds)):
        parsed = parse_answer(parser, text)
        records.append({"uid": None if uids is None else uids[i], "text": text,
                        "parsed": parsed, "gold": str(gold),
                        "correct": answers_match(parser, parsed, str(gold))})
    definitions = {"exact_match": f"parser {parser!r}: parsed answer equals the normalised gold",
                   "decoding": "greedy, cut before the first stop string"}
    return GenerationScores(records, generation_metrics(records), definitions)


def generation_metrics(records: list[dict]) -> dict:
    """Exact match and parse rate of scored records (slices scored apart can be joined)."""
    n = len(records)
    return {"exact_match": sum(r["correct"] for r in records) / n,
            "parsed_rate": sum(r["parsed"] is not None for r in records) / n, "n": n}


def evaluate_generation(model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                        demos=(), preset: str = "natural",
                        batch_size: int = 8, max_length: int | None = None,
                        progress: bool = False) -> GenerationScores:
    """Generate greedily for each query (after its demonstrations, if any: one list for every
    query or one list per query, see `ia2.evaluate.icl.demos_per_query`) and score exact match.
    Prompt plus `spec.max_new_tokens` fit the context window (`max_length`, default the model's)
    as in `evaluate_classification`: demonstrations are dropped, a query too long is an error."""
    from ..models import context_window

    if spec.kind != "generation" or not spec.parser:
        raise IA2Error(f"task {spec.name} is not a generation task with an answer parser")
    per_query = demos_per_query(demos, len(queries))
    window = context_window(model, max_length)
    prompts = [encode_prompt(tokenizer, spec, q, d, preset, window,
                             reserve=spec.max_new_tokens) for q, d in zip(queries, per_query)]
    gens = greedy_generate(model, tokenizer, [p.ids for p in prompts], spec.max_new_tokens,
                           spec.stop, batch_size, progress)
    scores = score_generation(spec.parser, [g.text for g in gens], [str(q.label) for q in queries],
                              [q.uid for q in queries])
    for rec, g in zip(scores.records, gens):
        rec.update(finish=g.finish, n_tokens=len(g.ids))
    scores.metrics["n_demos"] = min((p.n_demos for p in prompts), default=0)
    scores.definitions["max_new_tokens"] = spec.max_new_tokens
    scores.definitions["stop"] = list(spec.stop)
    scores.definitions["context_window"] = window
    return scores
