"""Activation similarity ("asim" in the paper): how close a model's activations without
demonstrations come to the base model's activations with demonstrations.

Per layer: cosine similarity between (a) the evaluated model's site output on query + ICL
response, no demonstrations, and (b) the base model's site output on demonstrations + query
(the teacher pass), at the aligned positions (last query token and every response token but
the last), averaged over positions and then over queries.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Sequence

import torch

from ..tasks.prompts import encode, encode_prompt, label_token_ids, render_query, special_prefix
from ..tasks.spec import Example, TaskSpec
from ..teacher.capture import Capture
from ..teacher.collect import TeacherConfig, teach
from ..teacher.sites import activation_sites


def _student_activations(model, sites, ids: list[int], start: int, length: int) -> torch.Tensor:
    with Capture(sites, detach=True) as cap, torch.no_grad():
        model(input_ids=torch.tensor([ids]), use_cache=False)
    return torch.stack([o[0, start:start + length].float() for o in cap.outputs])  # [L, T, H]


def activation_similarity(model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                          demos: Sequence[Example], config: TeacherConfig = TeacherConfig(),
                          ) -> list[float]:
    """Mean cosine similarity per layer (a list, one value per captured layer)."""
    config = replace(config.for_task(spec), dtype="fp32", topk=0)
    label_ids = label_token_ids(tokenizer, spec, config.preset) if config.constrain_to_labels else None
    prompts = [encode_prompt(tokenizer, spec, q, list(demos), config.preset).ids for q in queries]
    base = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with base:
        signals = teach(model, tokenizer, prompts, config, label_ids)
    sites = activation_sites(model, config.site, config.layers)
    prefix = special_prefix(tokenizer)
    sims = []
    for q, sig in zip(queries, signals):
        query_ids = prefix + encode(tokenizer, render_query(spec, q, config.preset))
        ids = query_ids + sig.response_ids.tolist()
        student = _student_activations(model, sites, ids, len(query_ids) - 1, sig.length)
        cos = torch.nn.functional.cosine_similarity(student, sig.activations.float(), dim=-1)
        sims.append(cos.mean(dim=1))  # [L]: mean over aligned positions
    return torch.stack(sims).mean(dim=0).tolist()
