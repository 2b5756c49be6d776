"""A study's analyses of its adapters: activation similarity to ICL (per layer) and the overlap
of LoRA update subspaces between methods. Each writes one JSON file under the study's
`analysis/` and is skipped when that file was made the same way (ia2.experiment runs them)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from .experiment import Group, TrainUnit, safe
from .io import write_json

log = logging.getLogger(__name__)


def asim(study, group, unit, adapter_dir: Path | None) -> None:
    """Activation similarity of this run (and of the base model, once) to ICL, with the ICL
    baseline's demonstrations (per query, k = N-1 by default)."""
    from .evaluate.analysis import activation_similarity
    from .evaluate.runner import demo_sets, per_query_demos

    name = "base" if adapter_dir is None else group.method
    path = study.out / "analysis" / "asim" / f"{group.task}-n{group.n}-s{unit.seed}-{safe(name)}.json"
    ev, mode = study.eval_config(group.n), study.config.analysis.asim_mode
    how = {"mode": mode, "icl_demos": ev.icl_demos, "icl_k": ev.icl_k}
    if path.is_file():  # a file made another way is redone, not mixed into the report
        done = json.loads(path.read_text())
        if all(done.get(k) == v for k, v in how.items()):
            return
    spec, episode = study.spec(group.task), study.episode(group.task, group.n, unit.seed)
    queries = study.queries(group.task)[: study.config.analysis.asim_queries]
    if ev.icl_demos == "shared":  # the first of the baseline's sets
        demos = demo_sets(episode.demo_pool, spec, ev.icl_k, 1, unit.seed, ev.balanced_demos)[0]
    else:
        demos = per_query_demos(episode.demo_pool, spec, ev.icl_k, queries, unit.seed,
                                ev.balanced_demos)
    model, tok = study._adapted(adapter_dir) if adapter_dir else study.model()
    teacher = replace(study.config.teacher, preset=study.config.preset)
    sims = activation_similarity(model, tok, spec, queries, demos, teacher, mode)
    write_json(path, {"task": group.task, "n": group.n, "seed": unit.seed, "model": name,
                      "site": teacher.site, **how, "queries": len(queries),
                      "per_layer": sims})
    if adapter_dir is not None:
        asim(study, group, unit, None)

def subspace(study, task: str | None = None, n: int | None = None) -> None:
    """Overlap of the selected LoRA adapters' update subspaces, per pair of methods (of one
    task and N if given). A pair whose adapter is not here (a study continued from its
    record on another machine) keeps the file it has, or is left out."""
    from itertools import combinations

    from .evaluate.runner import adapter_identity
    from .evaluate.subspace import subspace_overlap

    if study.config.adapter.kind != "lora":
        return
    cells = [(e, m) for e in study.config.tasks if task in (None, e.task)
             for m in study.config.ns(e) if n in (None, m)]
    for entry, cell_n in cells:
        seed = study.config.seeds[0]
        dirs = {}
        for m in study.config.methods_at(entry, cell_n):
            sel = study.selection_path(Group("method", entry.task, m, cell_n))
            if sel.is_file():
                s = json.loads(sel.read_text())
                unit = TrainUnit(entry.task, m, cell_n, seed, s["lr"], s["beta"])
                dirs[m] = unit.run_dir(study.out) / "adapter"
        for a, b in combinations(sorted(dirs), 2):
            path = (study.out / "analysis" / "subspace"
                    / f"{entry.task}-n{cell_n}-s{seed}-{safe(a)}-vs-{safe(b)}.json")
            missing = [m for m in (a, b) if not (dirs[m] / "adapter_config.json").is_file()]
            if missing:
                if not path.is_file():
                    log.info("subspace %s: no adapter for %s here", path.name, missing[0])
                continue
            ids = {m: adapter_identity(dirs[m]) for m in (a, b)}
            # done unless an adapter was retrained since (files before this had no ids)
            if path.is_file() and json.loads(path.read_text()).get("adapters", ids) == ids:
                continue
            per = subspace_overlap(dirs[a], dirs[b])
            mean = lambda k: sum(v[k] for v in per.values()) / len(per)  # noqa: E731
            write_json(path, {"task": entry.task, "n": cell_n, "seed": seed, "a": a, "b": b,
                              "overlap": mean("overlap"),
                              "random_expected": mean("random_expected"),
                              "random_empirical": mean("random_empirical"),
                              "adapters": ids, "modules": per})
