"""`ia2 run`: a whole study from one YAML — teacher signals, training, selection, evaluation.

Work is split into groups that own everything they decide on, so `--shard i/n` can hand whole
groups to different machines:
- a baseline group: zero-shot for a task, or ICL for (task, N, seed), on the task and its OOD tasks;
- a method group: (task, method, N) — every lr (and β) × seed is trained, the lr (β) with the
  lowest mean dev loss over seeds is selected (never the evaluation set), and the selected
  runs are evaluated in and out of distribution, then analysed.
Everything is resumable: finished runs, stored evaluations, written analyses and cached teacher
signals are skipped, so a killed study restarted recomputes nothing it had finished.
Groups run one after another or as Ray tasks (`executor:`, ia2.executors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from . import executors
from .config import ExperimentConfig, check_inputs, dump
from .errors import IA2Error
from .io import write_json, write_text

log = logging.getLogger(__name__)


def safe(name: str) -> str:
    """A method or key as a file name: `ia2->sft` -> `ia2_then_sft`, `ia2+sft` -> `ia2_plus_sft`."""
    return name.replace("->", "_then_").replace("+", "_plus_").replace("/", "-")


@dataclass(frozen=True)
class Group:
    kind: str  # zero_shot | icl | method
    task: str
    method: str | None = None
    n: int | None = None
    seed: int | None = None

    @property
    def key(self) -> str:
        return "/".join(str(p) for p in (self.kind, self.task, self.method, self.n, self.seed)
                        if p is not None)


@dataclass(frozen=True)
class TrainUnit:
    task: str
    method: str
    n: int
    seed: int
    lr: float
    beta: float | None = None

    def run_dir(self, out: Path) -> Path:
        m = safe(self.method)
        b = "" if self.beta is None else f"-b{self.beta:g}"
        return out / "runs" / self.task / f"{m}-n{self.n}-s{self.seed}-lr{self.lr:g}{b}"


def groups(config: ExperimentConfig) -> list[Group]:
    out = []
    for entry in config.tasks:
        if "zero_shot" in config.baselines:
            out.append(Group("zero_shot", entry.task))
        for n in config.ns(entry):
            # methods first: they take longest, and a study stopped part-way has its comparisons
            out += [Group("method", entry.task, m, n) for m in config.methods_at(entry, n)]
            if "icl" in config.baselines:
                out += [Group("icl", entry.task, n=n, seed=s) for s in config.seeds]
    return out


def units(config: ExperimentConfig, group: Group) -> list[TrainUnit]:
    betas = config.beta if group.method == "ia2+sft" else (None,)
    return [TrainUnit(group.task, group.method, group.n, s, lr, b)
            for lr in config.lr for b in betas for s in config.seeds]


def shard(items: list[Group], index: int, count: int) -> list[Group]:
    """A deterministic 1/count of the groups (by a stable hash of each group's key)."""
    if not (count >= 1 and 0 <= index < count):
        raise IA2Error(f"--shard {index}/{count}: need 0 <= i < n")
    h = lambda g: int(hashlib.sha1(g.key.encode()).hexdigest(), 16)  # noqa: E731
    return [g for g in items if h(g) % count == index]


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise IA2Error(f"--shard takes i/n (e.g. 0/4), not {text!r}") from None
    return i, n


def owned_groups(config: ExperimentConfig, shard_spec: str | None = None,
                 only: tuple[str, ...] = ()) -> list[Group]:
    """The groups one call owns: its shard of the grid, narrowed to the keys matching any of
    the `only` globs (e.g. `icl/sst2/8/*`), in the grid's order."""
    every = groups(config)
    hits = {p: {g.key for g in every if fnmatchcase(g.key, p)} for p in only}
    for pattern, keys in hits.items():
        if not keys:
            first = {}  # one key of each kind, from this grid
            for g in every:
                first.setdefault(g.kind, g.key)
            raise IA2Error(f"--only {pattern!r} matches no group of the grid (its keys look like "
                           f"{', '.join(first.values())})")
    work = shard(every, *parse_shard(shard_spec))
    return [g for g in work if g.key in set().union(*hits.values())] if only else work


class Study:
    """Runs the groups of one experiment; holds the caches shared across them."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.out = config.out_dir
        self.timings: dict[str, float] = {}  # seconds per stage since the last reset
        self._inner: list[float] = []

    @contextmanager
    def timed(self, stage: str):
        """Add the block's wall time to `timings[stage]`, less the time of stages nested in it
        (a model load inside an analysis counts as load)."""
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            inner = self._inner.pop()
            self.timings[stage] = self.timings.get(stage, 0.0) + spent - inner
            if self._inner:
                self._inner[-1] += spent

    # --- inputs ------------------------------------------------------------------------------
    def spec(self, name: str):
        from .tasks.registry import get_task

        entry = next((e for e in self.config.tasks if e.task == name), None)
        return get_task(name, **(entry.options if entry else {}))

    def methods_at(self, task: str, n: int) -> tuple[str, ...]:
        return self.config.methods_at(next(e for e in self.config.tasks if e.task == task), n)

    def eval_tasks(self, task: str) -> list[str]:
        entry = next(e for e in self.config.tasks if e.task == task)
        ood = entry.ood if entry.ood is not None else self.spec(task).ood
        return [task, *ood]

    @lru_cache(maxsize=64)
    def episode(self, task: str, n: int, seed: int):
        from .episodes import make_episode

        return make_episode(self.spec(task), n, seed, self.config.data_dir,
                            self.config.max_demos, self.config.eval.size, self.config.balanced,
                            self.config.source)

    @lru_cache(maxsize=32)
    def queries(self, task: str):
        from .episodes import eval_set

        return eval_set(self.spec(task), self.config.data_dir, self.config.eval.size,
                        self.config.source)

    def model(self):
        """A fresh base model: training attaches adapters in place, so each run gets its own.
        Placed by the study's runtime, resolved at the first load (a dry run resolves none)."""
        from .models import load_model

        self._runtime = getattr(self, "_runtime", None) or self.config.runtime.resolve()
        with self.timed("load"):
            return load_model(self.config.model, self._runtime)

    # --- baselines ---------------------------------------------------------------------------
    def run_baseline(self, group: Group, store, bar) -> None:
        from .evaluate.runner import evaluate_and_store

        model, tok = None, None
        source = self.spec(group.task)
        for name in self.eval_tasks(group.task):
            ident = dict(model=self.config.model, adapter=None, method=group.kind,
                         task=group.task, n=group.n, seed=group.seed)
            pool = self.episode(group.task, group.n, group.seed).demo_pool if group.n else ()
            if model is None:
                model, tok = self.model()
            with self.timed("evaluate"):
                evaluate_and_store(store, model, tok, self.spec(name), self.queries(name),
                                   group.kind, self.eval_config(group.n), ident, pool, source,
                                   group.seed or 0)
            bar.update(1)

    def eval_config(self, n: int | None = None):
        """The evaluation config; with N, ICL's k resolved to N-1 capped by max_demos (the
        demonstrations each teacher prompt had) unless the config fixes icl_k."""
        from .evaluate.runner import icl_k_for

        return icl_k_for(replace(self.config.eval, preset=self.config.preset), n,
                         self.config.max_demos)

    # --- methods -----------------------------------------------------------------------------
    def run_config(self, unit: TrainUnit):
        from .methods.pipeline import RunConfig

        return RunConfig(method=unit.method, labels=self.config.sft_labels,
                         beta=unit.beta if unit.beta is not None else 0.5,
                         alignment=self.config.alignment, preset=self.config.preset,
                         kd=self.config.kd, adapter=self.config.adapter,
                         train=replace(self.config.train, lr=unit.lr, seed=unit.seed,
                                       progress=False))

    def train(self, unit: TrainUnit):
        from .episodes import episode_fingerprint
        from .methods.integrity import adapter_problem
        from .methods.pipeline import (RunConfig, TrainingData, check_finished, finished,
                                       needs_full_distribution, needs_teacher, train_method)
        from .runtime import runtime_of
        from .teacher.collect import teach_episode

        config, out = self.run_config(unit), unit.run_dir(self.out)
        damaged = finished(out) and adapter_problem(out / "adapter")
        if finished(out) and not damaged:
            check_finished(out, config, {"model": self.config.model, "task": unit.task,
                                         "n": unit.n, "seed": unit.seed})
            return None
        if damaged:  # a damaged finished run is an unfinished one: trained again
            log.warning("retraining %s: %s", out, damaged)
        spec, episode = self.spec(unit.task), self.episode(unit.task, unit.n, unit.seed)
        model, tok = self.model()
        if needs_teacher(config):
            teacher = replace(self.config.teacher, preset=self.config.preset)
            # one teacher entry per episode for every method: with it if a kd run there needs it
            if any(needs_full_distribution(RunConfig(method=m, kd=self.config.kd))
                   for m in self.methods_at(unit.task, unit.n)):
                teacher = replace(teacher, full_distribution=True)
            with self.timed("teacher"):
                tset = teach_episode(model, tok, spec, episode, teacher, progress=False)
            if not needs_full_distribution(config):  # [T, V] per example: drop what is unused
                for sig in tset.train + tset.dev:
                    sig.logprobs = None
            data = TrainingData.from_teacher_set(episode, tset)
        else:
            data = TrainingData(episode.train, episode.dev)
        extra = {"model": self.config.model, "model_fingerprint": model.ia2_fingerprint,
                 "task": unit.task, "n": unit.n, "seed": unit.seed,
                 "episode": episode_fingerprint(episode)}
        if (dtype := runtime_of(model).dtype) != "fp32":  # recorded; fp32 runs keep their configs
            extra["dtype"] = dtype
        with self.timed("train"):
            return train_method(model, tok, spec, data, config, out, extra=extra,
                                overwrite=bool(damaged))

    def select(self, group: Group) -> dict:
        """The lr (and β) with the lowest mean dev loss over seeds, from the runs' curves."""
        scores: dict[tuple, list[float]] = {}
        for unit in units(self.config, group):
            doc = json.loads((unit.run_dir(self.out) / "run.json").read_text())
            last = list(doc["stages"].values())[-1]  # ia2->sft: the sft stage decides
            scores.setdefault((unit.lr, unit.beta), []).append(float(last["best_dev_loss"]))
        means = {k: sum(v) / len(v) for k, v in scores.items()}
        lr, beta = min(means, key=lambda k: (means[k], k[0]))
        doc = {"task": group.task, "method": group.method, "n": group.n, "lr": lr, "beta": beta,
               "criterion": "mean over seeds of the final stage's best dev loss",
               "candidates": [{"lr": k[0], "beta": k[1], "mean_dev_loss": v}
                              for k, v in sorted(means.items(), key=lambda kv: kv[0][0])]}
        path = self.selection_path(group)
        if not path.is_file() or json.loads(path.read_text()) != doc:  # a rerun rewrites nothing
            write_json(path, doc)
        return doc

    def selection_path(self, group: Group) -> Path:
        return self.out / "selection" / f"{safe(group.key)}.json"

    def run_method(self, group: Group, store, bar) -> None:
        from .evaluate.runner import adapter_identity, evaluate_and_store

        for unit in units(self.config, group):
            self.train(unit)
            bar.update(1)
        chosen = self.select(group)
        for seed in self.config.seeds:
            unit = TrainUnit(group.task, group.method, group.n, seed, chosen["lr"], chosen["beta"])
            adapter_dir = unit.run_dir(self.out) / "adapter"
            ident = dict(model=self.config.model, adapter=adapter_identity(adapter_dir),
                         method=group.method, task=group.task, n=group.n, seed=seed,
                         lr=chosen["lr"], beta=chosen["beta"])
            model = tok = None
            for name in self.eval_tasks(group.task):
                if model is None:
                    model, tok = self._adapted(adapter_dir)
                with self.timed("evaluate"):
                    evaluate_and_store(store, model, tok, self.spec(name), self.queries(name),
                                       "adapter", self.eval_config(), ident)
                bar.update(1)
            if self.config.analysis.asim and seed == self.config.seeds[0]:
                with self.timed("analysis"):
                    self.asim(group, unit, adapter_dir)
        if self.config.analysis.subspace:  # this cell's pairs whose adapters are here
            with self.timed("analysis"):
                self.subspace(group.task, group.n)

    def _adapted(self, adapter_dir: Path):
        from .methods.integrity import load_adapter

        model, tok = self.model()
        return load_adapter(model, adapter_dir), tok

    # --- analyses (ia2.analyses) --------------------------------------------------------------
    def asim(self, group: Group, unit: TrainUnit, adapter_dir: Path | None) -> None:
        from .analyses import asim

        asim(self, group, unit, adapter_dir)

    def subspace(self, task: str | None = None, n: int | None = None) -> None:
        from .analyses import subspace

        subspace(self, task, n)


def cost(config: ExperimentConfig, work: list[Group], done: list[dict] = ()) -> dict:
    """What --dry-run prints: counts of the work, GPU hours and FLOPs, and with the finished
    groups `done`, the hours at their pace (`ia2.estimate`)."""
    from . import record
    from .estimate import study_cost

    out = study_cost(config, work)
    paced = record.pace(config, work, done) if done else None
    if paced:
        out["hours_at_recorded_pace"], out["pace_basis"] = float(f"{paced[0]:.3g}"), paced[1]
    return out


def run_study(config: ExperimentConfig, shard_spec: str | None = None, dry_run: bool = False,
              progress: bool = True, max_groups: int | None = None,
              only: tuple[str, ...] = ()) -> Path:
    """Run (or with `dry_run` print) the study's groups (its shard, narrowed by `only`), at
    most `max_groups` of those not finished yet. A study with a `record:` is restored from it
    first (ia2.record)."""
    from . import record
    from .store import ResultsStore

    check_inputs(config)  # before the output directory exists: bad input leaves nothing behind
    executors.check(config.executor)
    work = owned_groups(config, shard_spec, only)
    done = record.finished(config)
    work = record.pending(config, work, done)
    if max_groups is not None:
        work = work[:max_groups]
    counts = cost(config, work, done if dry_run else ())
    if dry_run:
        for g in work:
            extra = f"  ({len(units(config, g))} training runs)" if g.kind == "method" else ""
            print(f"{g.key}{extra}")
        from .estimate import dry_run_lines

        print("\n".join(dry_run_lines(counts)))
        return config.out_dir
    study = Study(config)
    study.out.mkdir(parents=True, exist_ok=True)
    write_text(study.out / "experiment.yaml", dump(config))
    total = counts["training_runs"] + counts["evaluations"]
    start = time.time()
    with ResultsStore(study.out / "results.sqlite") as store:
        if record.restore(study, store):
            log.info("restored %s; %d groups to run", config.record, len(work))
        executors.run(study, work, store, progress, total)  # sequential, or Ray tasks
        if config.analysis.subspace:  # pairs whose groups finished together (Ray workers)
            study.subspace()
        if config.record:
            record.save(study, store)
    log.info("study %s finished in %.0f s", config.name, time.time() - start)
    return study.out
