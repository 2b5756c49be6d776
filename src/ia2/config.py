"""The experiment config: one YAML composing each stage's typed config.

```yaml
name: demo
model: gemma-3-270m
tasks:
  - {task: sst2, ood: [finphrasebank, poem_sentiment], options: {min_words: 8}}
methods: [sft, ia2, ia2->sft]
baselines: [zero_shot, icl]
n: [8]
seeds: [0]
lr: [1.0e-3]
teacher: {site: attn, constrain_to_labels: true}   # ia2.teacher.collect.TeacherConfig
adapter: {kind: lora, r: 8, alpha: 8}               # ia2.methods.adapters.AdapterConfig
train: {epochs: 50, patience: 5}                     # ia2.methods.trainer.TrainConfig
eval: {size: 500}                                   # ia2.evaluate.runner.EvalConfig
analysis: {asim: true, subspace: true}
runtime: {device: auto, dtype: auto}                 # ia2.runtime.Runtime (docs/gpus.md)
executor: {name: sequential}                         # ia2.executors.ExecutorConfig (docs/clusters.md)
```
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import validate
from .errors import IA2Error
from .evaluate.runner import EvalConfig
from .executors import ExecutorConfig
from .methods.adapters import AdapterConfig
from .methods.losses import ALIGNMENTS, KD_MODES
from .methods.pipeline import METHODS
from .methods.trainer import TrainConfig
from .models import DEFAULT_MODEL
from .runtime import Runtime
from .teacher.collect import TeacherConfig

BASELINES = ("zero_shot", "icl")


@dataclass(frozen=True)
class TaskEntry:
    task: str
    ood: tuple[str, ...] | None = None  # None: the task's own OOD list
    options: dict = field(default_factory=dict)  # TaskSpec overrides, e.g. min_words
    n: tuple[int, ...] | None = None  # None: the study's n
    methods: tuple[str, ...] | None = None  # None: the study's methods
    extra_methods: dict = field(default_factory=dict)  # {N: [methods]} also trained at that N


ASIM_MODES = ("generate", "teacher_forced")  # ia2.evaluate.analysis.MODES


@dataclass(frozen=True)
class AnalysisConfig:
    asim: bool = True  # activation similarity per layer, in distribution
    asim_queries: int = 50
    # generate: each model answers on its own (the paper's); teacher_forced: the evaluated
    # model is fed the base model's ICL response
    asim_mode: str = "generate"
    subspace: bool = True  # LoRA update-subspace overlap between methods

    def __post_init__(self):
        if self.asim_mode not in ASIM_MODES:
            raise IA2Error(f"analysis: unknown asim_mode {self.asim_mode!r} "
                           f"(choose from {', '.join(ASIM_MODES)})")
        validate.integer("analysis.asim_queries", self.asim_queries, low=1)


@dataclass
class ExperimentConfig:
    name: str
    tasks: tuple[TaskEntry, ...]
    model: str = DEFAULT_MODEL
    out: str | None = None  # default runs/<name>
    record: str | None = None  # a committable record of the study (ia2.record), e.g. results/<name>
    data_dir: str | None = None
    source: str = "local"  # task data: local files (data_dir) or the hub (`datasets`, online)
    preset: str = "natural"
    methods: tuple[str, ...] = ("sft", "ia2", "ia2->sft")
    baselines: tuple[str, ...] = BASELINES
    n: tuple[int, ...] = (8,)
    seeds: tuple[int, ...] = (0,)
    lr: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    beta: tuple[float, ...] = (0.001, 0.01, 0.05, 0.5)  # ia2+sft only: the authors' grid
    balanced: bool = False  # class-balanced train/dev draws (the paper draws at random)
    sft_labels: str = "ground_truth"
    alignment: str = "mse"
    kd: str = "full"  # kd's teacher distribution: full (exact KL) or topk
    max_demos: int | None = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    runtime: Runtime = field(default_factory=Runtime)  # device, dtype, attention, memory
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # sequential or ray

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise IA2Error(f"unknown method {bad[0]!r} (choose from {', '.join(METHODS)})")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise IA2Error(f"unknown baseline {bad[0]!r} (choose from {', '.join(BASELINES)})")
        if self.kd not in KD_MODES:
            raise IA2Error(f"unknown kd {self.kd!r} (choose from {', '.join(KD_MODES)})")
        if not self.tasks or not self.n or not self.seeds or not self.lr:
            raise IA2Error("experiment: tasks, n, seeds and lr must each name at least one value")
        validate.choice("sft_labels", self.sft_labels, ("ground_truth", "icl"))
        validate.choice("source", self.source, ("local", "hub"))
        validate.choice("alignment", self.alignment, ALIGNMENTS)
        validate.each(validate.integer, "n", self.n, low=2)  # one example and one demonstration
        validate.each(validate.seed, "seeds", self.seeds)
        validate.each(validate.number, "lr", self.lr, low=0, low_open=True)
        validate.each(validate.number, "beta", self.beta, 0, 1)
        validate.integer("max_demos", self.max_demos, low=0, optional=True)
        for e in self.tasks:
            where = f"tasks.{e.task}"
            if e.n is not None:
                if not e.n:
                    raise IA2Error(f"{where}.n: name at least one N (or leave it out)")
                validate.each(validate.integer, f"{where}.n", e.n, low=2)
            if not isinstance(e.extra_methods, dict):
                raise IA2Error(f"{where}.extra_methods: expected a mapping N -> methods")
            for n, ms in e.extra_methods.items():
                if n not in self.ns(e):
                    raise IA2Error(f"{where}.extra_methods: N = {n} is not among its n {list(self.ns(e))}")
                if not isinstance(ms, (list, tuple)):
                    raise IA2Error(f"{where}.extra_methods.{n}: expected a list of methods")
            bad = [m for n in self.ns(e) for m in self.methods_at(e, n) if m not in METHODS]
            if bad:
                raise IA2Error(f"{where}: unknown method {bad[0]!r} (choose from {', '.join(METHODS)})")
        if "ia2+sft" in self.all_methods() and not self.beta:
            raise IA2Error("experiment: ia2+sft needs at least one beta value")

    def ns(self, entry: TaskEntry) -> tuple[int, ...]:
        """The N a task is run with: its own `n`, else the study's."""
        return tuple(entry.n) if entry.n is not None else self.n

    def methods_at(self, entry: TaskEntry, n: int) -> tuple[str, ...]:
        """The methods trained on a task at N: its own (else the study's), then its extras."""
        base = tuple(entry.methods) if entry.methods is not None else self.methods
        return base + tuple(m for m in entry.extra_methods.get(n, ()) if m not in base)

    def all_methods(self) -> set[str]:
        return {m for e in self.tasks for n in self.ns(e) for m in self.methods_at(e, n)}

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("runs") / self.name)


def _convert(tp, value, where: str):
    """Coerce a YAML value to a field's annotated type (dataclasses, tuples, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_convert(typing.get_args(tp)[0], v, where) for v in items)
    if origin is list:
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            raise IA2Error(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, bool, str) and not isinstance(value, tp):
        raise IA2Error(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data, where: str = "config"):
    if not isinstance(data, dict):
        if cls is TaskEntry and isinstance(data, str):
            return TaskEntry(data)
        raise IA2Error(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise IA2Error(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise IA2Error(f"{where}: {e}") from None


def load_experiment(path) -> ExperimentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise IA2Error(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise IA2Error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return from_dict(ExperimentConfig, data, str(path))


def check_inputs(config: ExperimentConfig) -> None:
    """What a study needs that is known before any work: the model name, each task with its
    options and its OOD tasks, the prompt preset, the data files and the output directory.
    `ia2 run` calls it before writing anything; it loads no model and reads no data file."""
    from .models import check_name
    from .tasks.registry import get_task, resolve_data_dir

    check_name(config.model)
    options = {e.task: e.options for e in config.tasks}  # an OOD task listed itself has its own
    trains = bool(config.all_methods()) or "icl" in config.baselines
    for entry in config.tasks:
        spec = get_task(entry.task, **entry.options)
        if trains and spec.eval_only:
            raise IA2Error(f"task {spec.name} is evaluation-only: it can be an OOD task or a "
                           "zero_shot baseline, not trained on or used for demonstrations")
        for name in [entry.task, *(spec.ood if entry.ood is None else entry.ood)]:
            ev = get_task(name, **options.get(name, {}))
            ev.template(config.preset)
            if config.source == "hub":  # read online at run time: only its hub id is known now
                if not ev.source.hub:
                    raise IA2Error(f"task {ev.name} has no hub dataset (use source: local)")
                continue
            for split in ["eval"] + (["train"] if trains and name == entry.task else []):
                rel = ev.source.files.get(split)
                if rel is None:
                    raise IA2Error(f"task {ev.name} has no {split} file")
                root = ev.source.options.get("root")
                path = Path(root or resolve_data_dir(config.data_dir)) / rel
                if not path.is_file():
                    raise IA2Error(f"task {ev.name}: data file {path} not found")
    if config.out_dir.exists() and not config.out_dir.is_dir():
        raise IA2Error(f"output directory {config.out_dir} is a file")


def dump(config) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


__all__ = ["ExperimentConfig", "TaskEntry", "AnalysisConfig", "load_experiment", "check_inputs",
           "dump"]
