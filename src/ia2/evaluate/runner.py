"""Evaluation settings, computed the same way for every method.

- `zero_shot`: the base model, no demonstrations.
- `icl`: the base model with k demonstrations from the episode's held-out pool. The paper's way
  (`icl_demos="per_query"`, the default): each query gets its own seeded random draw of k
  demonstrations, k = N-1 (what the teacher saw; capped by the study's `max_demos`). The other
  way (`icl_demos="shared"`): `icl_sets` sets, each shared by every query, scored and averaged.
- `adapter`: a trained adapter, no demonstrations (the paper's setting for trained models).
- `adapter_icl`: a trained adapter with demonstrations (on request).
Out of distribution, the queries come from the evaluation task and the demonstrations from the
training task; both are rendered with the evaluation task's template, which the built-in OOD
pairs share with their source tasks.
"""

from __future__ import annotations

import hashlib
import json
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from .. import validate
from ..distributed import barrier, is_main
from ..errors import IA2Error
from ..runtime import runtime_of
from ..store import SETTINGS
from ..tasks.spec import Example, TaskSpec
from .classify import CONFIDENCES
from .generate import evaluate_generation
from .icl import evaluate_classification
from .parallel import score_parallel

DEMO_MODES = ("per_query", "shared")


@dataclass(frozen=True)
class EvalConfig:
    size: int = 500  # evaluation queries (the paper: 500 after a fixed shuffle)
    icl_demos: str = "per_query"  # per_query (the paper's) | shared
    icl_k: int | None = None  # demonstrations per ICL prompt; None: N-1 of the group (`icl_k_for`)
    icl_sets: int = 3  # shared mode only: sets averaged. per_query makes one draw per query
    balanced_demos: bool = False  # classification: cycle through the classes (the paper: random)
    batch_size: int = 8
    n_bins: int = 15  # equal-mass ECE bins (the paper's); equal-width ECE is reported beside it
    confidence: str = "label_set"  # which confidence the ECE is about: label_set or top1
    preset: str = "natural"

    def __post_init__(self):
        for name in ("size", "icl_sets", "batch_size", "n_bins"):
            validate.integer(f"eval.{name}", getattr(self, name), low=1)
        validate.integer("eval.icl_k", self.icl_k, low=0, optional=True)  # unset: N-1
        validate.choice("eval.icl_demos", self.icl_demos, DEMO_MODES)
        validate.choice("eval.confidence", self.confidence, CONFIDENCES)


def icl_k_for(config: EvalConfig, n: int | None, max_demos: int | None = None) -> EvalConfig:
    """`config` with icl_k resolved: as given, else N-1 (the demonstrations each teacher prompt
    had) capped by `max_demos`, as the authors' evaluation does."""
    if config.icl_k is not None or n is None:
        return config
    k = n - 1 if max_demos is None else min(n - 1, max_demos)
    return replace(config, icl_k=k)


def _draw(pool: Sequence[Example], spec: TaskSpec, k: int, rng: random.Random,
          balanced: bool) -> list[Example]:
    order = list(pool)
    rng.shuffle(order)
    if not (balanced and spec.kind == "classification"):
        return order[:k]
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
    return picked


def _check_pool(pool: Sequence[Example], spec: TaskSpec, k: int) -> None:
    if len(pool) < k:
        raise IA2Error(f"task {spec.name}: the demonstration pool has {len(pool)} examples, "
                       f"fewer than k={k}")


def demo_sets(pool: Sequence[Example], spec: TaskSpec, k: int, sets: int, seed: int,
              balanced: bool = False) -> list[list[Example]]:
    """Shared mode: `sets` demonstration sets of k examples from `pool`, seeded; random, or
    class-balanced (labels interleaved) for classification when asked."""
    if k == 0:
        return [[]]
    _check_pool(pool, spec, k)
    return [_draw(pool, spec, k, random.Random(f"icl-demos/{spec.name}/{seed}/{s}"), balanced)
            for s in range(sets)]


def per_query_demos(pool: Sequence[Example], spec: TaskSpec, k: int,
                    queries: Sequence[Example], seed: int,
                    balanced: bool = False) -> list[list[Example]]:
    """Per-query mode (the paper's): for each query its own k demonstrations from `pool`, drawn
    at random without replacement, seeded by (demonstration task, seed, query uid) so a query's
    demonstrations do not depend on which other queries are evaluated."""
    if k == 0:
        return [[] for _ in queries]
    _check_pool(pool, spec, k)
    return [_draw(pool, spec, k, random.Random(f"icl-demos/{spec.name}/{seed}/query/{q.uid}"),
                  balanced) for q in queries]


def _demo_draws(config: EvalConfig, queries, pool, spec: TaskSpec, seed: int) -> list:
    """The demonstrations each scoring pass uses: shared mode, one shared list per set;
    per-query mode, one pass whose entry is a list per query."""
    if config.icl_k is None:
        raise IA2Error("eval: icl_k is unset (N-1 of a study group): give k explicitly")
    if config.icl_demos == "shared":
        return demo_sets(pool, spec, config.icl_k, config.icl_sets, seed, config.balanced_demos)
    return [per_query_demos(pool, spec, config.icl_k, queries, seed, config.balanced_demos)]


def _demo_record(config: EvalConfig, draws: list, spec: TaskSpec, seed: int) -> dict:
    """What the definitions say about the demonstrations (reports read these)."""
    rec = {"mode": config.icl_demos, "k": config.icl_k, "balanced": config.balanced_demos,
           "demo_task": spec.name, "seed": seed,
           "sets": len(draws) if config.icl_demos == "shared" else None}
    if config.icl_demos == "shared":
        rec["uids"] = [[d.uid for d in s] for s in draws]
    else:  # 500 lists would bloat every row; their digest identifies them
        uids = [[d.uid for d in ds] for ds in draws[0]]
        rec["uids_sha256"] = hashlib.sha256(json.dumps(uids).encode()).hexdigest()[:16]
    return rec


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
    """Metrics for one setting: {"metrics", "per_set", "definitions", "records"}. In shared mode
    metrics of settings with demonstrations are means over `config.icl_sets` sets (`<metric>_std`
    beside); in per-query mode there is one pass. `definitions["demos"]` says which was used."""
    if setting not in SETTINGS:
        raise IA2Error(f"unknown setting {setting!r} (choose from {', '.join(SETTINGS)})")
    if not queries:
        raise IA2Error(f"task {spec.name}: no evaluation queries")
    queries = list(queries)
    with_demos = setting in ("icl", "adapter_icl")
    dspec = demo_spec or spec
    draws = _demo_draws(config, queries, demo_pool, dspec, seed) if with_demos else [[]]
    base = setting in ("zero_shot", "icl")
    # The base model of an adapter is the same weights with the adapter switched off.
    ctx = model.disable_adapter() if base and hasattr(model, "disable_adapter") else nullcontext()
    per_set, scored = [], []
    with ctx:
        for demos in draws:
            # under torchrun each process scores a slice (ia2.evaluate.parallel)
            metrics, definitions, recs = score_parallel(_score, model, tokenizer, spec, queries,
                                                        demos, config)
            per_set.append(metrics)
            scored.append((definitions, recs))
    definitions, records = scored[0]  # records and reliability bins: those of the first set
    if with_demos and config.icl_demos == "per_query":
        for rec, ds in zip(records, draws[0]):
            rec["demos"] = [d.uid for d in ds]
    keys = [k for k, v in per_set[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics = {k: float(np.mean([m[k] for m in per_set])) for k in keys}
    if len(per_set) > 1:
        metrics.update({f"{k}_std": float(np.std([m[k] for m in per_set])) for k in keys})
    definitions = dict(definitions, setting=setting, eval=asdict(config),
                       demos=_demo_record(config, draws, dspec, seed) if with_demos else None)
    return {"metrics": metrics, "per_set": per_set, "definitions": definitions, "records": records}


def per_query(records: list[dict], queries: Sequence[Example], confidence: str) -> dict:
    """Each query's outcome, compact, in the queries' order: `correct` a 0/1 string (label-set
    correctness, or top-1 with confidence="top1"; exact match for generation), `confidence` the
    calibration metrics' confidence to 4 places, `uids` a hash of the query ids (rows resampled
    together must share it)."""
    uids = hashlib.sha256("\n".join(q.uid for q in queries).encode()).hexdigest()[:16]
    if records and "correct" in records[0]:  # generation
        return {"uids": uids, "correct": "".join("01"[bool(r["correct"])] for r in records)}
    ok, conf = (("label_set_correct", "label_set_confidence") if confidence == "label_set"
                else ("top1_correct", "top1_confidence"))
    return {"uids": uids, "correct": "".join("01"[bool(r[ok])] for r in records),
            "confidence": [round(float(r[conf]), 4) for r in records]}


def adapter_identity(adapter_dir) -> str | None:
    """sha256 of the adapter's weights file: results follow the weights, not the path."""
    if adapter_dir is None:
        return None
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
    evaluation task, the setting and every evaluation option that changes a number, the model's
    dtype among them (bf16/fp16 only: fp32 keys are those of earlier versions)."""
    from ..store import run_key

    ident = dict(identity, eval_task=spec.name, setting=setting)
    opts = {"size": len(queries), "preset": config.preset, "n_bins": config.n_bins,
            "confidence": config.confidence}
    dtype = runtime_of(model).dtype
    if dtype != "fp32":  # the model's dtype changes the numbers; fp32 rows keep their keys
        opts["dtype"] = dtype
    if setting in ("icl", "adapter_icl"):
        if config.icl_k is None:
            raise IA2Error("eval: icl_k is unset (N-1 of a study group): give k explicitly")
        opts.update(icl_demos=config.icl_demos, icl_k=config.icl_k,
                    balanced=config.balanced_demos, demo_task=(demo_spec or spec).name)
        if config.icl_demos == "shared":
            opts["icl_sets"] = config.icl_sets
    key = run_key(**ident, **opts)
    if not force and store.has(key):
        return store.get(key)
    out = evaluate_setting(model, tokenizer, spec, queries, setting, config, demo_pool,
                           demo_spec, seed)
    row = dict(ident, key=key, metrics=dict(out["metrics"], per_set=out["per_set"]),
               definitions=dict(out["definitions"], model_dtype=dtype),
               per_query=per_query(out["records"], queries, config.confidence))
    if is_main():  # every process holds the same numbers; one writes them
        store.add(row, overwrite=force)
    barrier()
    return store.get(key)
