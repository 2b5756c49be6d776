"""Shared fixtures for the training tests: a tiny task, tiny models and a reference teacher.

The reference teacher is deliberately simple and independent of `ia2.teacher`: it runs the model
on demonstrations + query, decodes greedily token by token without a cache, and reads the
attention outputs at the aligned positions with plain forward hooks.
"""

from __future__ import annotations

import torch

from ia2.tasks.prompts import encode_prompt
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.teacher.signals import TeacherSignals
from ia2.teacher.sites import activation_sites
from ia2.testing import tiny_model, tiny_tokenizer

# Tiny matrices: one thread is fastest, and two threads spin-wait badly on a shared 2-core box.
torch.set_num_threads(1)

WORDS = ["good fun", "bad film", "great cast", "dull plot", "fine acting", "awful", "lovely",
         "boring", "superb", "weak", "charming", "tedious", "brilliant", "poor", "warm", "cold"]


def tiny_spec() -> TaskSpec:
    return TaskSpec(name="tiny", kind="classification", description="test task",
                    source=Source(loader="none"), templates={"natural": Template("Review: {text}\nSentiment:")},
                    labels=("negative", "positive"), verbalizers={"natural": ("no", "ok")})


def examples(n: int, start: int = 0) -> list[Example]:
    return [Example({"text": WORDS[(start + i) % len(WORDS)] + f" {start + i}"}, (start + i) % 2, f"ex{start + i}")
            for i in range(n)]


@torch.no_grad()
def reference_teacher(model, tokenizer, spec, query: Example, demos: list[Example], steps: int = 2,
                      topk: int = 4) -> TeacherSignals:
    """Greedy ICL response of `steps` tokens plus the attention outputs predicting it."""
    ids = encode_prompt(tokenizer, spec, query, demos).ids
    response = []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids + response])).logits[0, -1]
        response.append(int(logits.argmax()))
    full = torch.tensor([ids + response[:-1]])
    sites = activation_sites(model, "attn")
    outs = []
    handles = [m.register_forward_hook(lambda mod, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for m in sites]
    logits = model(input_ids=full).logits[0]
    for h in handles:
        h.remove()
    start = len(ids) - 1
    acts = torch.stack([o[0, start:start + steps] for o in outs])  # [L, T, H]
    logp = torch.log_softmax(logits[start:start + steps], -1)
    top = logp.topk(topk, -1)
    return TeacherSignals(torch.tensor(response), acts, top.indices, top.values)


def teacher_data(model, tokenizer, spec, n_train=8, n_dev=4, n_demos=3, steps=2):
    train, dev = examples(n_train), examples(n_dev, start=100)
    pool = examples(n_demos, start=200)
    sig_train = [reference_teacher(model, tokenizer, spec, ex, pool, steps) for ex in train]
    sig_dev = [reference_teacher(model, tokenizer, spec, ex, pool, steps) for ex in dev]
    return train, sig_train, dev, sig_dev
