"""Evaluation settings, computed the same way for every method.

- `zero_shot`: the base model, no demonstrations.
- `icl`: the base model with k demonstrations from the episode's held-out pool; `icl_sets`
  different demonstration sets are scored and averaged (the paper averages several).
- `adapter`: a trained adapter, no demonstrations (the paper's setting for trained models).
- `adapter_icl`: a trained adapter with demonstrations (on request).
Out of distribution, the queries come from the evaluation task and the demonstrations from the
training task; both are rendered with the evaluation task's template, which the built-in OOD
pairs share with their source tasks.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import IA2Error
from ..store import SETTINGS
from ..tasks.spec import Example, TaskSpec
from .generate import evaluate_generation
from .icl import evaluate_classification



@dataclass(frozen=True)
class EvalConfig:
    size: int = 500  # evaluation queries (the paper: 500 after a fixed shuffle)
    icl_k: int = 8  # demonstrations per ICL prompt
    icl_sets: int = 3  # demonstration sets averaged for ICL
    balanced_demos: bool = True  # classification: demonstrations cycle through the classes
    batch_size: int = 8
    n_bins: int = 15  # equal-mass ECE bins (the paper's); equal-width ECE is reported beside it
    confidence: str = "label_set"  # which confidence the ECE is about: label_set or top1
    preset: str = "natural"

    def __post_init__(self):
        if self.size < 1 or self.icl_k < 0 or self.icl_sets < 1 or self.batch_size < 1:
            raise IA2Error("eval: size, icl_sets and batch_size must be >= 1, icl_k >= 0")


def demo_sets(pool: Sequence[Example], spec: TaskSpec, k: int, sets: int, seed: int,
              balanced: bool = True) -> list[list[Example]]:
    """`sets` demonstration sets of k examples from `pool`, seeded; class-balanced (labels
    interleaved) for classification when asked, so no set is all one class."""
    if k == 0:
        return [[]]
    if len(pool) < k:
        raise IA2Error(f"task {spec.name}: the demonstration pool has {len(pool)} examples, "
                       f"fewer than k={k}")
    out = []
    for s in range(sets):
        rng = random.Random(f"icl-demos/{spec.name}/{seed}/{s}")
        order = list(pool)
        rng.shuffle(order)
        if balanced and spec.kind == "classification":
            by_label: dict[int, list[Example]] = {}
            for ex in order:
                by_label.setdefault(int(ex.label), []).append(ex)
            queues = [by_label[c] for c in sorted(by_label)]
            picked: list[Example] = []
            while len(picked) < k:
                for q in queues:
                    if q and len(picked) < k:
                        picked.append(q.pop())
            rng.shuffle(picked)
            order = picked
        out.append(order[:k])
    return out


def _score(model, tokenizer, spec, queries, demos, config: EvalConfig) -> tuple[dict, dict, list]:
    if spec.kind == "classification":
        s = evaluate_classification(model, tokenizer, spec, queries, demos, config.preset,
                                    config.batch_size, n_bins=config.n_bins,
                                    confidence=config.confidence)
    else:
        s = evaluate_generation(model, tokenizer, spec, queries, demos, config.preset,
                                config.batch_size)
    return s.metrics, s.definitions, s.records


def evaluate_setting(model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                     setting: str, config: EvalConfig = EvalConfig(),
                     demo_pool: Sequence[Example] = (), demo_spec: TaskSpec | None = None,
                     seed: int = 0) -> dict:
    """Metrics for one setting: {"metrics", "per_set", "definitions", "records"}. Metrics of
    settings with demonstrations are means over `config.icl_sets` sets (`<metric>_std` beside)."""
    if setting not in SETTINGS:
        raise IA2Error(f"unknown setting {setting!r} (choose from {', '.join(SETTINGS)})")
    if not queries:
        raise IA2Error(f"task {spec.name}: no evaluation queries")
    with_demos = setting in ("icl", "adapter_icl")
    sets = (demo_sets(demo_pool, demo_spec or spec, config.icl_k, config.icl_sets, seed,
                      config.balanced_demos) if with_demos else [[]])
    base = setting in ("zero_shot", "icl")
    # The base model of an adapter is the same weights with the adapter switched off.
    ctx = model.disable_adapter() if base and hasattr(model, "disable_adapter") else nullcontext()
    per_set, scored = [], []
    with ctx:
        for demos in sets:
            metrics, definitions, recs = _score(model, tokenizer, spec, list(queries), demos, config)
            per_set.append(metrics)
            scored.append((definitions, recs))
    definitions, records = scored[0]  # records and reliability bins: those of the first set
    keys = [k for k, v in per_set[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics = {k: float(np.mean([m[k] for m in per_set])) for k in keys}
    if len(per_set) > 1:
        metrics.update({f"{k}_std": float(np.std([m[k] for m in per_set])) for k in keys})
    definitions = dict(definitions, setting=setting, eval=asdict(config),
                       demo_sets=[[d.uid for d in s] for s in sets] if with_demos else [])
    return {"metrics": metrics, "per_set": per_set, "definitions": definitions, "records": records}


def adapter_identity(adapter_dir) -> str | None:
    """sha256 of the adapter's weights file: results follow the weights, not the path."""
    if adapter_dir is None:
        return None
    import hashlib
    from pathlib import Path

    files = sorted(Path(adapter_dir).glob("adapter_model.*"))
    if not files:
        raise IA2Error(f"{adapter_dir}: no adapter_model.safetensors (not a PEFT adapter directory)")
    return "sha256:" + hashlib.sha256(files[0].read_bytes()).hexdigest()[:16]


def evaluate_and_store(store, model, tokenizer, spec: TaskSpec, queries: Sequence[Example],
                       setting: str, config: EvalConfig, identity: dict,
                       demo_pool: Sequence[Example] = (), demo_spec: TaskSpec | None = None,
                       seed: int = 0, force: bool = False) -> dict:
    """Evaluate one setting unless the store already holds it; return the store row.

    `identity` names the run (model, adapter, method, task, n, seed, lr, beta); the key adds the
    evaluation task, the setting and every evaluation option that changes a number."""
    from ..store import run_key

    ident = dict(identity, eval_task=spec.name, setting=setting)
    opts = {"size": len(queries), "preset": config.preset, "n_bins": config.n_bins,
            "confidence": config.confidence}
    if setting in ("icl", "adapter_icl"):
        opts.update(icl_k=config.icl_k, icl_sets=config.icl_sets, balanced=config.balanced_demos,
                    demo_task=(demo_spec or spec).name)
    key = run_key(**ident, **opts)
    if not force and store.has(key):
        return store.get(key)
    out = evaluate_setting(model, tokenizer, spec, queries, setting, config, demo_pool,
                           demo_spec, seed)
    row = dict(ident, key=key, metrics=dict(out["metrics"], per_set=out["per_set"]),
               definitions=out["definitions"])
    store.add(row, overwrite=force)
    return store.get(key)
