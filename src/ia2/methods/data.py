"""Training items and their collator: the student's input is the query alone (no demonstrations)
followed by a target (the ground-truth answer or the teacher's ICL response).

An item's aligned positions are those whose next-token prediction produces the target: the last
query token and every target token but the last. The last target token is never an input, so the
sequence is `special_prefix + query + target[:-1]` and position `start + t` predicts `target[t]`.
That sequence must fit the model's context window (`max_length`): an example that does not is
one IA2Error naming it; text is never cut (docs/reliability.md, "The context window").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import IA2Error
from ..tasks.prompts import encode_answer, encode_prompt
from ..tasks.spec import Example, TaskSpec
from ..teacher.signals import TeacherSignals

Target = Literal["ground_truth", "icl"]


@dataclass
class Item:
    uid: str
    input_ids: list[int]
    start: int  # first aligned position
    target_ids: list[int]  # [T]
    activations: torch.Tensor | None = None  # [L, T, H] teacher's, for ia2
    topk_ids: torch.Tensor | None = None  # [T, K], for kd with the top-k
    topk_logprobs: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None  # [T, V], for kd with the full distribution


def build_items(tokenizer, spec: TaskSpec, examples: Sequence[Example],
                signals: Sequence[TeacherSignals] | None = None, target: Target = "icl",
                activations: bool = False, topk: bool = False, preset: str = "natural",
                full: bool = False, max_length: int | None = None) -> list[Item]:
    """One item per example. `target="icl"` trains on the teacher's response (signals needed);
    `activations` / `topk` / `full` attach the teacher's tensors for IA2 / top-k KD / full KD.
    With `max_length` (the context window), an item longer than it is an error."""
    if target not in ("ground_truth", "icl"):
        raise IA2Error(f"unknown target {target!r} (choose ground_truth or icl)")
    needs_signals = target == "icl" or activations or topk or full
    if needs_signals and (signals is None or len(signals) != len(examples)):
        got = "none" if signals is None else len(signals)
        raise IA2Error(f"{spec.name}: {len(examples)} examples but {got} teacher signals")
    items = []
    for i, ex in enumerate(examples):
        sig = signals[i] if needs_signals else None
        query = encode_prompt(tokenizer, spec, ex, (), preset, max_length).ids
        if target == "icl":
            tgt = [int(t) for t in sig.response_ids.tolist()]
        else:
            tgt = list(encode_answer(tokenizer, spec, ex, preset))
        if not tgt:
            raise IA2Error(f"{spec.name}: example {ex.uid} has an empty {target} target")
        if max_length is not None and len(query) + len(tgt) - 1 > max_length:
            raise IA2Error(f"task {spec.name}: training example {ex.uid} needs "
                           f"{len(query) + len(tgt) - 1} tokens (query {len(query)} + {target} "
                           f"target {len(tgt)}), more than the context window allows "
                           f"({max_length})")
        item = Item(ex.uid, query + tgt[:-1], len(query) - 1, tgt)
        if activations:
            item.activations = _checked(sig.activations, 3, ex.uid, "activations", len(tgt))
        if topk:
            if sig.topk_ids is None or sig.topk_logprobs is None:
                raise IA2Error(f"teacher signals for {ex.uid} hold no top-k distribution; "
                               "kd needs a teacher cache collected with top-k")
            item.topk_ids = _checked(sig.topk_ids, 2, ex.uid, "topk_ids", len(tgt))
            item.topk_logprobs = _checked(sig.topk_logprobs, 2, ex.uid, "topk_logprobs", len(tgt))
        if full:
            if sig.logprobs is None:
                raise IA2Error(f"teacher signals for {ex.uid} hold no full distribution; kd=full needs "
                               "the teacher collected with full_distribution (ia2 teach "
                               "--full-distribution), or use kd=topk")
            item.logprobs = _checked(sig.logprobs, 2, ex.uid, "logprobs", len(tgt))
        items.append(item)
    if full and len({it.logprobs.shape[1] for it in items}) > 1:
        raise IA2Error(f"{spec.name}: teacher distributions disagree in vocabulary size")
    if activations:
        shapes = {(it.activations.shape[0], it.activations.shape[2]) for it in items}
        if len(shapes) > 1:
            raise IA2Error(f"{spec.name}: teacher activations disagree in [layers, hidden]: {sorted(shapes)}")
    return items


def _checked(x: torch.Tensor, dim: int, uid: str, name: str, length: int) -> torch.Tensor:
    t_axis = 1 if name == "activations" else 0
    if x.dim() != dim or x.shape[t_axis] != length:
        raise IA2Error(f"teacher {name} for {uid} have shape {tuple(x.shape)}; expected "
                       f"{length} aligned positions on axis {t_axis}")
    return x


class ItemDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[Item]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]


@dataclass
class Collator:
    """Right-pads a list of items into a batch.

    input_ids, attention_mask [B, S]; positions, target_ids, target_mask [B, T];
    teacher_activations [B, L, T, H] in the stored dtype (zeros at padding); topk_ids, topk_logprobs [B, T, K];
    teacher_logprobs [B, T, V] in the stored dtype (zeros at padding: uniform, finite, masked).
    No `labels` key: the Trainer would otherwise rescale losses by token counts.
    """

    pad_id: int

    def __call__(self, items: list[Item]) -> dict[str, torch.Tensor]:
        b = len(items)
        s = max(len(it.input_ids) for it in items)
        t = max(len(it.target_ids) for it in items)
        batch = {
            "input_ids": torch.full((b, s), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(b, s, dtype=torch.long),
            "positions": torch.zeros(b, t, dtype=torch.long),
            "target_ids": torch.zeros(b, t, dtype=torch.long),
            "target_mask": torch.zeros(b, t, dtype=torch.bool),
        }
        for i, it in enumerate(items):
            n, k = len(it.input_ids), len(it.target_ids)
            batch["input_ids"][i, :n] = torch.tensor(it.input_ids)
            batch["attention_mask"][i, :n] = 1
            batch["positions"][i, :k] = torch.arange(it.start, it.start + k)
            batch["target_ids"][i, :k] = torch.tensor(it.target_ids)
            batch["target_mask"][i, :k] = True
        if items[0].activations is not None:
            # in the storage dtype (half an fp32 copy's bytes); the trainer moves the batch to
            # the model's device and the alignment loss upcasts to fp32 there
            layers, _, hidden = items[0].activations.shape
            acts = torch.zeros(b, layers, t, hidden, dtype=items[0].activations.dtype)
            for i, it in enumerate(items):
                acts[i, :, : it.activations.shape[1]] = it.activations
            batch["teacher_activations"] = acts
        if items[0].topk_ids is not None:
            k = max(it.topk_ids.shape[1] for it in items)
            ids = torch.zeros(b, t, k, dtype=torch.long)
            # padding entries get -inf log-prob: zero teacher mass, so they add nothing to the KL
            logp = torch.full((b, t, k), float("-inf"))
            logp[..., 0] = 0.0  # keeps padded positions finite (they are masked anyway)
            for i, it in enumerate(items):
                n, kk = it.topk_ids.shape
                ids[i, :n, :kk] = it.topk_ids
                logp[i, :n, :] = float("-inf")
                logp[i, :n, :kk] = it.topk_logprobs.float()
            batch["topk_ids"], batch["topk_logprobs"] = ids, logp
        if items[0].logprobs is not None:
            vocab, dtype = items[0].logprobs.shape[1], items[0].logprobs.dtype
            full = torch.zeros(b, t, vocab, dtype=dtype)
            for i, it in enumerate(items):
                full[i, : it.logprobs.shape[0]] = it.logprobs
            batch["teacher_logprobs"] = full
        return batch
