"""How often the teacher's ICL response is the right answer on the queries a run trains on.

IA2, KD and SFT on ICL outputs learn the teacher's response ŷ, not the ground truth y, so such an
adapter is at best as right as its teacher on those queries. Recording the agreement tells a run
that failed because its teacher was wrong (e.g. demonstrations that pull every answer to one
label) from one that failed in training.
"""

from __future__ import annotations

from ..errors import IA2Error
from ..tasks.parsers import answers_match, cut_at_stop, parse_answer
from ..tasks.prompts import label_token_ids


def response_correct(tokenizer, spec, response_ids, example, label_ids=None,
                     stops=None) -> bool | None:
    """Whether one teacher response is the example's answer: for classification its first token
    is the gold label's first token (`label_ids`, as top-1 accuracy scores it); for generation
    its text, cut at the first of `stops` (the task's by default), parses to the gold answer.
    None when the task has no parser."""
    ids = [int(t) for t in response_ids]
    if spec.kind == "classification":
        return bool(ids) and ids[0] == label_ids[int(example.label)]
    if not spec.parser:
        return None
    text = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True),
                       spec.stop if stops is None else stops)
    return answers_match(spec.parser, parse_answer(spec.parser, text), str(example.label))


def teacher_accuracy(tokenizer, spec, episode, train_signals, dev_signals, preset="natural",
                     label_ids=None, stops=None) -> dict | None:
    """{"train": {"correct", "n", "accuracy"}, "dev": {...}} over the episode's queries, or None
    where it cannot be counted: a generation task without an answer parser, label words that
    share a first token (possible when the teacher is not constrained to them)."""
    if spec.kind == "classification" and label_ids is None:
        try:
            label_ids = label_token_ids(tokenizer, spec, preset)
        except IA2Error:
            return None
    elif spec.kind != "classification" and not spec.parser:
        return None
    out = {}
    for split, examples, signals in (("train", episode.train, train_signals),
                                     ("dev", episode.dev, dev_signals)):
        hits = [response_correct(tokenizer, spec, s.response_ids, ex, label_ids, stops)
                for ex, s in zip(examples, signals, strict=True)]
        out[split] = {"correct": sum(hits), "n": len(hits),
                      "accuracy": sum(hits) / len(hits) if hits else None}
    return out
