"""Activation similarity ("asim" in the paper): how close a model's activations without
demonstrations come to the base model's activations with demonstrations.

The base model reads demonstrations + query and answers greedily (the teacher pass); its site
outputs are read at the positions that predict each response token (the last query token, then
every response token but the last). The evaluated model reads the query alone, and:

- `mode="generate"` (the paper's, the default): it answers greedily on its own, its site outputs
  read the same way. The two responses may differ, in tokens and in length; step t is compared
  with step t for t < min(both lengths), as the authors' analysis does.
- `mode="teacher_forced"`: it is fed the base model's ICL response, and every step of that
  response is compared.

Per layer: cosine similarity of the two vectors at each compared step, averaged over the steps
of a query, then over queries. For single-token answers both modes compare only the last query
token, so they coincide.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Sequence

import torch

from ..errors import IA2Error
from ..tasks.prompts import encode_prompt, label_token_ids
from ..tasks.spec import Example, TaskSpec
from ..teacher.capture import Capture
from ..teacher.collect import TeacherConfig, teach
from ..teacher.sites import activation_sites
from .icl import demos_per_query

MODES = ("generate", "teacher_forced")


def _forced_activations(model, sites, ids: list[int], start: int, length: int) -> torch.Tensor:
    with Capture(sites, detach=True) as cap, torch.no_grad():
        model(input_ids=torch.tensor([ids], device=next(model.parameters()).device),
              use_cache=False)
    return torch.stack([o[0, start:start + length].float().cpu() for o in cap.outputs])  # [L, T, H]


def activation_similarity(model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                          demos, config: TeacherConfig = TeacherConfig(),
                          mode: str = "generate") -> list[float]:
    """Mean cosine similarity per layer (one value per captured layer). `demos`: one list for
    every query or one list per query (`ia2.evaluate.icl.demos_per_query`). Both passes decode
    with `config` (response budget, stop strings, label constraint on the first token)."""
    if mode not in MODES:
        raise IA2Error(f"unknown activation-similarity mode {mode!r} (choose from {', '.join(MODES)})")
    if not queries:
        raise IA2Error(f"task {spec.name}: no queries for activation similarity")
    config = replace(config.for_task(spec), dtype="fp32", topk=0)
    label_ids = label_token_ids(tokenizer, spec, config.preset) if config.constrain_to_labels else None
    per_query = demos_per_query(demos, len(queries))
    with_demos = [encode_prompt(tokenizer, spec, q, d, config.preset).ids
                  for q, d in zip(queries, per_query)]
    alone = [encode_prompt(tokenizer, spec, q, [], config.preset).ids for q in queries]
    base = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with base:
        icl = teach(model, tokenizer, with_demos, config, label_ids)
    if mode == "generate":
        own = teach(model, tokenizer, alone, config, label_ids)
        pairs = []
        for a, b in zip(icl, own):
            t = min(a.length, b.length)  # the authors' rule: the common leading steps
            pairs.append((a.activations[:, :t].float(), b.activations[:, :t].float()))
    else:
        sites = activation_sites(model, config.site, config.layers)
        pairs = []
        for ids, sig in zip(alone, icl):
            forced = _forced_activations(model, sites, ids + sig.response_ids.tolist(),
                                         len(ids) - 1, sig.length)
            pairs.append((sig.activations.float(), forced))
    sims = [torch.nn.functional.cosine_similarity(a, b, dim=-1).mean(dim=1) for a, b in pairs]
    return torch.stack(sims).mean(dim=0).tolist()  # per query [L], then mean over queries
