"""Method dispatch: each of the paper's methods is a sequence of training stages on ONE adapter.

    sft       cross-entropy on the ground truth (or, with labels="icl", on the ICL responses)
    kd        KL to the teacher's next-token distribution at the ICL response positions
              (kd="full": the whole vocabulary, the default; kd="topk": the cached top-k)
    ia2       activation alignment to the teacher (the ICL run) on query + ICL response
    ia2+sft   (1 - beta) * ia2 + beta * sft on the ICL response, one forward pass
    ia2->sft  ia2 to convergence, then sft on the ground truth; same adapter, fresh optimizer
    sft->ia2  the reverse

A run directory holds: `adapter/` (PEFT format), `config.yaml`, `curves.json` + `curves.png`,
`teacher.json` (the teacher cache key) and, written last, `run.json` (the run is finished; it
records the adapter files' sha256 and the base model's fingerprint, see `integrity`).
Each stage trains under `stages/<i>-<loss>/`; a finished stage leaves its adapter and
`stage.json` there, so an interrupted run resumes at the stage (and checkpoint) it reached, and
says so. A run that finished no stage is replaced by a rerun with another config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import validate
from ..errors import IA2Error
from ..io import atomic_path, write_json, write_text
from ..tasks.spec import Example, TaskSpec
from ..teacher.signals import TeacherSignals
from .adapters import AdapterConfig, attach
from .data import Collator, ItemDataset, build_items
from .integrity import adapter_record, base_fingerprint
from .losses import ALIGNMENTS, KD_MODES
from .trainer import Objective, StageResult, TrainConfig, last_checkpoint, train_stage

log = logging.getLogger(__name__)

METHODS = ("sft", "kd", "ia2", "ia2+sft", "ia2->sft", "sft->ia2")


@dataclass(frozen=True)
class Stage:
    loss: str  # sft, kd, ia2, ia2+sft
    target: str  # icl or ground_truth: the tokens after the query
    sft_stage: bool = False  # takes RunConfig.sft_lr


@dataclass
class RunConfig:
    method: str = "ia2"
    labels: str = "ground_truth"  # sft's target: ground_truth or icl (SFT on ICL responses)
    beta: float = 0.5  # ia2+sft's CE weight
    alignment: str = "mse"  # mse (the paper's), cosine or layernorm_mse
    sft_lr: float | None = None  # lr of the sft stage of ia2->sft / sft->ia2; None: train.lr
    kd: str = "full"  # kd's teacher distribution: full (exact KL) or topk (cached top-k)
    preset: str = "natural"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise IA2Error(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.labels not in ("ground_truth", "icl"):
            raise IA2Error(f"unknown sft labels {self.labels!r} (choose ground_truth or icl)")
        if self.kd not in KD_MODES:
            raise IA2Error(f"unknown kd {self.kd!r} (choose from {', '.join(KD_MODES)})")
        validate.choice("alignment", self.alignment, ALIGNMENTS)
        validate.number("beta", self.beta, 0, 1)
        validate.number("sft_lr", self.sft_lr, low=0, low_open=True, optional=True)


def stages(config: RunConfig) -> list[Stage]:
    sft_gt = Stage("sft", "ground_truth", sft_stage=True)
    return {
        "sft": [Stage("sft", config.labels)],
        "kd": [Stage("kd", "icl")],
        "ia2": [Stage("ia2", "icl")],
        "ia2+sft": [Stage("ia2+sft", "icl")],
        "ia2->sft": [Stage("ia2", "icl"), sft_gt],
        "sft->ia2": [sft_gt, Stage("ia2", "icl")],
    }[config.method]


def needs_teacher(config: RunConfig) -> bool:
    return any(s.target == "icl" or s.loss != "sft" for s in stages(config))


def needs_full_distribution(config: RunConfig) -> bool:
    """Whether the teacher must be collected with `full_distribution` (exact KD)."""
    return config.kd == "full" and any(s.loss == "kd" for s in stages(config))


@dataclass
class TrainingData:
    """In-memory inputs of a run: examples and, where the method needs them, their teacher
    signals (aligned at `site` / `layers`, as the teacher collected them)."""

    train: Sequence[Example]
    dev: Sequence[Example]
    train_signals: Sequence[TeacherSignals] | None = None
    dev_signals: Sequence[TeacherSignals] | None = None
    site: str = "attn"
    layers: tuple[int, ...] | None = None
    teacher: dict | None = None  # the teacher signals' cache key, config and accuracy

    @classmethod
    def from_teacher_set(cls, episode, teacher_set) -> "TrainingData":
        cfg = teacher_set.config
        return cls(episode.train, episode.dev, teacher_set.train, teacher_set.dev, cfg.site,
                   tuple(cfg.layers) if cfg.layers is not None else None,
                   {"key": teacher_set.key, "path": str(teacher_set.path) if teacher_set.path else None,
                    "config": _plain(cfg), "accuracy": teacher_set.accuracy})


@dataclass
class RunResult:
    out_dir: Path
    stages: dict[str, dict]  # stage name -> its curves and best step
    trained: bool  # False when a finished run was found and reused
    model: object = None  # the PeftModel holding the trained adapter (None when reused)


def _plain(obj):
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def _datasets(tokenizer, spec, data: TrainingData, stage: Stage, preset: str, kd: str = "full",
              max_length: int | None = None):
    kw = dict(target=stage.target, activations=stage.loss in ("ia2", "ia2+sft"),
              topk=stage.loss == "kd" and kd == "topk", full=stage.loss == "kd" and kd == "full",
              preset=preset, max_length=max_length)
    return (ItemDataset(build_items(tokenizer, spec, data.train, data.train_signals, **kw)),
            ItemDataset(build_items(tokenizer, spec, data.dev, data.dev_signals, **kw)))


def _resolved(config: RunConfig, data: TrainingData, extra: dict) -> dict:
    doc = {"method": config.method, "stages": [f"{s.loss}:{s.target}" for s in stages(config)],
           **_plain(config), "site": data.site, "layers": list(data.layers) if data.layers else None,
           "n_train": len(data.train), "n_dev": len(data.dev), **extra}
    del doc["train"]["progress"]  # display only: a resumed run may show a bar or not
    if data.teacher:
        doc["teacher_key"] = data.teacher["key"]
    return doc


def _distributed():
    from accelerate import PartialState

    return PartialState()


def _save_adapter(model, path: Path) -> None:
    """PEFT `save_pretrained` into a temporary directory renamed onto `path`: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _load_adapter(model, path: Path) -> bool:
    """Load a finished stage's weights; False when the file is damaged (the stage is redone)."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path / "adapter_model.safetensors"))
    except (SafetensorError, OSError) as e:
        log.warning("%s: damaged (%s); training that stage again", path, str(e).splitlines()[0])
        return False
    set_peft_model_state_dict(model, state)
    return True


def plot_curves(curves: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        if c["train"]:
            ax.plot(*zip(*c["train"]), label="train", alpha=0.6)
        if c["dev"]:
            ax.plot(*zip(*c["dev"]), "o-", label="dev", markersize=3)
        if c.get("best_step") is not None:
            ax.axvline(c["best_step"], color="grey", linestyle=":", label="best (restored)")
        ax.set(title=name, xlabel="step", ylabel="loss")
        if all(v > 0 for _, v in c["train"] + c["dev"]):
            ax.set_yscale("log")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def finished(out_dir) -> bool:
    return (Path(out_dir) / "run.json").is_file()


def _flat(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: dict, new: dict, shared_only: bool = False) -> str:
    """`key: old → new` for every (dotted) key whose value differs, comma-joined. With
    `shared_only`, keys missing on either side are not differences (e.g. derived keys)."""
    a, b = _flat(old), _flat(new)
    keys = a.keys() & b.keys() if shared_only else a.keys() | b.keys()
    unset = "(unset)"
    return ", ".join(f"{k}: {a.get(k, unset)} → {b.get(k, unset)}" for k in sorted(keys)
                     if a.get(k, unset) != b.get(k, unset))


def check_finished(out_dir, config: RunConfig, extra: dict | None = None) -> None:
    """A finished run in `out_dir` asked for again with a different config is an error naming
    the keys that differ (only settings known without data: the config and `extra`)."""
    path = Path(out_dir) / "config.yaml"
    if not path.is_file():
        return
    asked = json.loads(json.dumps({**_plain(config), **(extra or {})}))
    del asked["train"]["progress"]
    diff = differences(yaml.safe_load(path.read_text()) or {}, asked, shared_only=True)
    if diff:
        raise IA2Error(f"{out_dir} holds a finished run with a different config ({diff}); "
                       "pass --overwrite to retrain or choose another --out")


def _stages_done(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("stages/*/stage.json"))


def train_method(model, tokenizer, spec: TaskSpec, data: TrainingData, config: RunConfig, out_dir,
                 overwrite: bool = False, extra: dict | None = None,
                 keep_checkpoints: bool = False) -> RunResult:
    """Attach a fresh adapter to `model` (frozen) and train it with the method's stages.

    A finished run in `out_dir` is returned as is unless `overwrite` (asked for with another
    config, it is an error naming what differs); an unfinished one with the same config resumes,
    with another config it is replaced if it finished no stage. `extra` (model, task, seed...)
    goes into config.yaml."""
    out = Path(out_dir)
    state = _distributed()
    if finished(out) and not overwrite:
        check_finished(out, config, extra)
        return RunResult(out, json.loads((out / "run.json").read_text())["stages"], trained=False)
    resolved = _resolved(config, data, extra or {})
    text = yaml.safe_dump(resolved, sort_keys=False)
    old = out / "config.yaml"
    replace = False
    if not overwrite and old.is_file() and old.read_text() != text:
        diff = differences(yaml.safe_load(old.read_text()) or {}, resolved) or "key order"
        if _stages_done(out):
            raise IA2Error(f"{out} holds an unfinished run with a different config ({diff}); "
                           "choose another --out or pass --overwrite")
        log.warning("%s: replacing an unfinished run that finished no stage (%s)", out, diff)
        replace = True
    elif old.is_file() and not overwrite and state.is_main_process:
        log.warning("resuming %s (%s finished before)", out,
                    ", ".join(_stages_done(out)) or "no stage")
    if (overwrite or replace) and out.exists():
        if state.is_main_process:
            shutil.rmtree(out)
        state.wait_for_everyone()
    if needs_teacher(config) and data.train_signals is None:
        raise IA2Error(f"method {config.method} needs teacher signals")
    if needs_full_distribution(config) and any(
            s.logprobs is None for s in [*data.train_signals, *(data.dev_signals or ())]):
        raise IA2Error("kd=full needs the teacher's full next-token distribution: collect the "
                       "teacher with full_distribution (ia2 teach --full-distribution) or use kd=topk")
    teacher_preset = ((data.teacher or {}).get("config") or {}).get("preset", config.preset)
    if needs_teacher(config) and teacher_preset != config.preset:
        raise IA2Error(f"the teacher signals were collected with prompt preset {teacher_preset!r}, "
                       f"this run uses {config.preset!r}: the query tokens would not line up")
    if state.is_main_process:
        write_text(out / "config.yaml", text)
        if data.teacher:
            write_json(out / "teacher.json", data.teacher)

    from transformers import set_seed

    from ..models import context_window

    base = base_fingerprint(model)  # before the adapter is attached
    window = context_window(model)
    set_seed(config.train.seed)  # the adapter's random init (LoRA's A) is part of the run
    model = attach(model, config.adapter)
    collator = Collator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    curves: dict[str, dict] = {}
    for i, stage in enumerate(stages(config), 1):
        name = f"{i}-{stage.loss}"
        sdir = out / "stages" / name
        # finished before an interruption: reuse its weights
        if (sdir / "stage.json").is_file() and _load_adapter(model, sdir / "adapter"):
            curves[name] = json.loads((sdir / "stage.json").read_text())
            continue
        objective = Objective(stage.loss, beta=config.beta, alignment=config.alignment,
                              site=data.site, layers=data.layers, kd=config.kd)
        train_ds, dev_ds = _datasets(tokenizer, spec, data, stage, config.preset, config.kd,
                                     window)
        ckpt = sdir / "checkpoints"
        last = last_checkpoint(ckpt)
        if last and state.is_main_process:
            log.warning("resuming %s: stage %s from %s", out, name, Path(last).name)
        lr = config.sft_lr if stage.sft_stage and config.sft_lr is not None else config.train.lr
        result = train_stage(model, objective, train_ds, dev_ds, collator, config.train, ckpt,
                             lr=lr)
        curves[name] = _stage_doc(stage, result, lr)
        if state.is_main_process:
            _save_adapter(model, sdir / "adapter")
            write_json(sdir / "stage.json", curves[name])
        state.wait_for_everyone()

    if state.is_main_process:
        _save_adapter(model, out / "adapter")
        write_json(out / "curves.json", curves)
        plot_curves(curves, out / "curves.png", f"{config.method} on {spec.name}")
        if not keep_checkpoints:
            for sdir in (out / "stages").iterdir():
                shutil.rmtree(sdir / "checkpoints", ignore_errors=True)
        write_json(out / "run.json", {"finished": True, "method": config.method, "stages": curves,
                                      **adapter_record(out / "adapter", base)})
    state.wait_for_everyone()
    return RunResult(out, curves, trained=True, model=model)


def _stage_doc(stage: Stage, r: StageResult, lr: float) -> dict:
    return {"loss": stage.loss, "target": stage.target, "lr": lr, "train": r.train_curve,
            "dev": r.dev_curve, "best_step": r.best_step, "best_dev_loss": r.best_dev_loss,
            "steps": r.steps, "stopped_early": r.stopped_early}


def default_out_dir(model_name: str, task: str, method: str, n: int, seed: int, lr: float) -> Path:
    safe = lambda s: str(s).replace("/", "_").replace(">", "").replace("+", "_")  # noqa: E731
    return Path("runs") / safe(model_name) / task / f"{safe(method)}-n{n}-s{seed}-lr{lr:g}"


def run_episode(model_name: str, task: str, config: RunConfig, n: int, seed: int, out_dir=None,
                data_dir=None, teacher=None, cache_root=None, overwrite: bool = False,
                max_demos: int | None = None, task_options: dict | None = None,
                balanced: bool = False, runtime=None) -> RunResult:
    """The whole path for one run: episode -> teacher signals (cached) -> training -> run dir.
    `task_options` are TaskSpec overrides (e.g. min_words); `balanced` the episode draw;
    `runtime` (ia2.runtime.Runtime) where and in which dtype the model runs."""
    from ..episodes import episode_fingerprint, make_episode
    from ..models import load_model
    from ..runtime import runtime_of
    from ..tasks.registry import get_task
    from ..teacher.collect import TeacherConfig, teach_episode

    out = Path(out_dir) if out_dir else default_out_dir(model_name, task, config.method, n, seed,
                                                         config.train.lr)
    if finished(out) and not overwrite:
        return train_method(None, None, None, None, config, out,
                            extra={"model": model_name, "task": task, "n": n, "seed": seed})
    spec = get_task(task, **(task_options or {}))
    episode = make_episode(spec, n, seed, data_dir=data_dir, max_demos=max_demos,
                           balanced=balanced)
    model, tokenizer = load_model(model_name, runtime)
    extra = {"model": model_name, "model_fingerprint": model.ia2_fingerprint, "task": task,
             "n": n, "seed": seed, "episode": episode_fingerprint(episode)}
    dtype = runtime_of(model).dtype
    if dtype != "fp32":  # recorded; fp32 runs keep their configs
        extra["dtype"] = dtype
    if needs_teacher(config):
        teacher = teacher or TeacherConfig(preset=config.preset)
        if needs_full_distribution(config):
            teacher = dataclasses.replace(teacher, full_distribution=True)
        # the teacher is the base model before any adapter is attached; rank 0 fills the cache
        with _distributed().main_process_first():
            tset = teach_episode(model, tokenizer, spec, episode, teacher, cache_root=cache_root)
        data = TrainingData.from_teacher_set(episode, tset)
    else:
        data = TrainingData(episode.train, episode.dev)
    return train_method(model, tokenizer, spec, data, config, out, overwrite=overwrite, extra=extra)
