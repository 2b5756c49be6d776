"""How often the teacher's ICL response is the right answer on the queries a run trains on.

IA2, KD and SFT on ICL outputs learn the teacher's response ŷ, not the ground truth y, so such an
adapter is at best as right as its teacher on those queries. Recording the agreement tells a run
that failed because its teacher was wrong (e.g. demonstrations that pull every answer to one
label) from one that failed in training.
"""

from __future__ import annotations

from ..tasks.parsers import answers_match, parse_answer
from ..tasks.prompts import label_token_ids


def response_correct(tokenizer, spec, response_ids, example, label_ids=None) -> bool | None:
    """Whether one teacher response is the example's answer: for classification its first token
    is the gold label's first token (as top-1 accuracy scores it); for generation its text, cut
    at the first stop string, parses to the gold answer. None when the task has no parser."""
    ids = [int(t) for t in response_ids]
    if spec.kind == "classification":
        return bool(ids) and ids[0] == label_ids[example.label]
    if not spec.parser:
        return None
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [text.find(s) for s in spec.stop if s and s in text]
    text = text[: min(hits)] if hits else text
    return answers_match(spec.parser, parse_answer(spec.parser, text), str(example.label))


def teacher_accuracy(tokenizer, spec, episode, train_signals, dev_signals,
                     preset: str = "natural") -> dict | None:
    """{"train": {"correct", "n", "accuracy"}, "dev": {...}} over the episode's queries, or None
    for a generation task without an answer parser."""
    if spec.kind != "classification" and not spec.parser:
        return None
    label_ids = label_token_ids(tokenizer, spec, preset) if spec.kind == "classification" else None
    out = {}
    for split, examples, signals in (("train", episode.train, train_signals),
                                     ("dev", episode.dev, dev_signals)):
        hits = [response_correct(tokenizer, spec, s.response_ids, ex, label_ids)
                for ex, s in zip(examples, signals, strict=True)]
        out[split] = {"correct": sum(hits), "n": len(hits),
                      "accuracy": sum(hits) / len(hits) if hits else None}
    return out
