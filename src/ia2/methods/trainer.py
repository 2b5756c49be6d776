"""Training on `transformers.Trainer`: one subclass whose `compute_loss` calls the method's loss.

Defaults are the paper's: batch 4, Adam (AdamW with weight decay 0) at a constant learning rate
without warmup or gradient clipping, up to 50 epochs, the dev loss (the method's own loss on dev
examples) evaluated every 2 steps, early stopping after 5 evaluations without improvement. The
best state is restored at the end, also when the epoch limit comes first (the authors' code
meant to and keeps the last; `restore_best=False` does that).
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerState

from .. import validate
from ..errors import IA2Error
from ..runtime import Runtime, runtime_of
from ..teacher.capture import Capture
from ..teacher.sites import activation_sites
from . import losses
from .adapters import position_offset

LOSSES = ("sft", "kd", "ia2", "ia2+sft")


@dataclass
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 4  # global: split evenly across data-parallel processes
    epochs: int = 50
    eval_steps: int = 2
    patience: int = 5
    seed: int = 0
    data_seed: int | None = None  # None: the same as `seed`
    max_grad_norm: float | None = None  # None: no clipping (the paper's); a norm to clip at
    restore_best: bool = True  # end at the best dev state; False: the last (the authors' code)
    save_total_limit: int = 2  # the best checkpoint is always kept besides the latest
    full_determinism: bool | None = None  # None: on CPU only (cheap there; CUDA pays for it)
    report_to: list[str] = field(default_factory=lambda: ["none"])
    progress: bool = True

    def __post_init__(self):
        validate.number("train.lr", self.lr, low=0, low_open=True)
        for name in ("batch_size", "epochs", "eval_steps", "patience", "save_total_limit"):
            validate.integer(f"train.{name}", getattr(self, name), low=1)
        validate.seed("train.seed", self.seed)
        validate.seed("train.data_seed", self.data_seed, optional=True)
        validate.number("train.max_grad_norm", self.max_grad_norm, low=0, low_open=True,
                        optional=True)


@dataclass(frozen=True)
class Objective:
    """What one training stage minimises. `loss` is one of LOSSES; `beta` weighs CE in ia2+sft;
    `alignment` is the IA2 distance (see `losses.alignment`); `site`/`layers` where it is read;
    `kd` is KD's teacher distribution: "full" (exact KL) or "topk" (the cached top-k)."""

    loss: str
    beta: float = 0.5
    alignment: str = "mse"
    site: str = "attn"
    layers: tuple[int, ...] | None = None
    kd: str = "full"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise IA2Error(f"unknown loss {self.loss!r} (choose from {', '.join(LOSSES)})")
        if self.kd not in losses.KD_MODES:
            raise IA2Error(f"unknown kd {self.kd!r} (choose from {', '.join(losses.KD_MODES)})")
        if self.alignment not in losses.ALIGNMENTS:
            raise IA2Error(f"unknown alignment {self.alignment!r} "
                           f"(choose from {', '.join(losses.ALIGNMENTS)})")
        validate.number("beta", self.beta, 0, 1)

    @property
    def uses_activations(self) -> bool:
        return self.loss in ("ia2", "ia2+sft")

    @property
    def uses_logits(self) -> bool:
        return self.loss != "ia2"


class BoundObjective:
    """An objective bound to a (peft-wrapped) model's activation sites; call it on a batch."""

    def __init__(self, model, objective: Objective):
        self.objective = objective
        self.offset = position_offset(model)  # prompt tuning prepends virtual positions
        self.sites = (activation_sites(model, objective.site, objective.layers)
                      if objective.uses_activations else [])
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # The vocabulary projection is the costliest layer of a small model with a large
        # vocabulary (Gemma 3: 262k); project only the positions a loss reads (IA2: just one).
        self.trim_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        # Under DDP every adapter weight the forward touches must get a gradient. IA2 alone never
        # reaches weights past the last site (e.g. IA3's scale on the last MLP), so the loss adds
        # 0 x the (last-position) logits: exact, and it gives those weights zero gradients.
        self.touch_outputs = False

    def parts(self, model, batch: dict) -> dict[str, torch.Tensor]:
        obj = self.objective
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        positions = batch["positions"] + self.offset
        keep = None
        if self.trim_logits:
            keep = positions.unique() if obj.uses_logits else None  # sorted sequence indices
            kw["logits_to_keep"] = keep if keep is not None else 1
        mask = batch["target_mask"]
        out: dict[str, torch.Tensor] = {}
        if obj.uses_activations:
            with Capture(self.sites, positions=positions) as cap:
                result = model(**kw)
            student = torch.stack(cap.outputs)  # [L, B, T, H]
            # kept in its storage dtype; the alignment loss upcasts both sides to fp32
            teacher = batch["teacher_activations"].transpose(0, 1)
            if teacher.shape[0] != student.shape[0] or teacher.shape[-1] != student.shape[-1]:
                raise IA2Error(f"teacher activations have {teacher.shape[0]} layers x "
                               f"{teacher.shape[-1]} units, the student's sites {student.shape[0]} x "
                               f"{student.shape[-1]}: the cache belongs to another model or site")
            out["alignment"] = losses.alignment(student, teacher, mask, obj.alignment)
        else:
            result = model(**kw)
        if self.touch_outputs and not obj.uses_logits:
            out["outputs"] = result.logits.float().sum()
        if obj.uses_logits:
            # With trimmed logits, position p sits at its rank among the kept indices.
            where = positions if keep is None else torch.searchsorted(keep, positions)
            logits = losses.gather_positions(result.logits, where)
            if obj.loss == "kd" and obj.kd == "full":
                teacher = batch.get("teacher_logprobs")
                if teacher is None:
                    raise IA2Error("kd=full: the batch has no teacher_logprobs; collect the teacher "
                                   "with full_distribution")
                if teacher.shape[-1] != logits.shape[-1]:
                    raise IA2Error(f"teacher distributions have {teacher.shape[-1]} tokens, the "
                                   f"student's vocabulary {logits.shape[-1]}: another model's cache")
                out["kd"] = losses.kd_full(logits, teacher, mask)
            elif obj.loss == "kd":
                out["kd"] = losses.kd_topk(logits, batch["topk_ids"], batch["topk_logprobs"], mask)
            else:
                out["ce"] = losses.cross_entropy(logits, batch["target_ids"], mask)
        return out

    def __call__(self, model, batch: dict) -> torch.Tensor:
        p, obj = self.parts(model, batch), self.objective
        if obj.loss == "ia2+sft":
            loss = losses.ia2_sft(p["alignment"], p["ce"], obj.beta)
        else:
            loss = p[{"sft": "ce", "kd": "kd", "ia2": "alignment"}[obj.loss]]
        return loss + 0.0 * p["outputs"] if "outputs" in p else loss


class IA2Trainer(Trainer):
    """`Trainer` whose loss is a `BoundObjective`; the batch carries the teacher's tensors."""

    def __init__(self, *args, objective: BoundObjective, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.objective.touch_outputs = self.args.world_size > 1
        self.model_accepts_loss_kwargs = False  # our losses are already per-example means

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.objective(model, inputs)
        if not torch.isfinite(loss):
            raise IA2Error(f"the {self.objective.objective.loss} loss became {loss.item()} at step "
                           f"{self.state.global_step}; try a lower learning rate")
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


class LossBar(ProgressCallback):
    """The tqdm bar with the latest train and dev losses as its postfix, instead of log lines."""

    def __init__(self):
        super().__init__()
        self.latest: dict[str, float] = {}

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # a dev pass takes a moment; a second bar for it would only add noise

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            for key, name in (("loss", "train"), ("eval_loss", "dev")):
                if key in logs:
                    self.latest[name] = round(float(logs[key]), 5)
            self.training_bar.set_postfix(self.latest, refresh=False)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _precision_and_memory(runtime: Runtime) -> dict:
    """Mixed precision and activation checkpointing as TrainingArguments (Accelerate's autocast
    and, for fp16, its loss scaling): the frozen base stays in the runtime's dtype, the trainable
    adapter weights in fp32 (peft upcasts them), the losses in fp32 (ia2.methods.losses)."""
    kw = {"bf16": runtime.dtype == "bf16", "fp16": runtime.dtype == "fp16"}
    if runtime.gradient_checkpointing:
        # non-reentrant: the IA2 loss reads site outputs from inside checkpointed layers
        names = TrainingArguments.__dataclass_fields__
        new = "activation_checkpointing" in names  # transformers' newer name
        prefix = "activation" if new else "gradient"
        kw[f"{prefix}_checkpointing"] = True
        kw[f"{prefix}_checkpointing_kwargs"] = {"use_reentrant": False}
    return kw


def training_arguments(config: TrainConfig, output_dir, lr: float | None = None,
                       runtime: Runtime | None = None) -> TrainingArguments:
    """The Trainer's arguments; `runtime` (default: fp32, on a GPU if there is one) sets the
    device, mixed precision and gradient checkpointing."""
    world = world_size()
    if config.batch_size % world:
        raise IA2Error(f"batch size {config.batch_size} does not split over {world} processes")
    per_device = config.batch_size // world
    runtime = (runtime or Runtime(dtype="fp32")).resolve()
    cpu = runtime.device == "cpu"
    index = runtime.device.partition(":")[2]
    if not cpu and index and world == 1:
        torch.cuda.set_device(int(index))  # the Trainer places the model on the current GPU
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=config.lr if lr is None else lr,
        optim="adamw_torch", weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=config.max_grad_norm or 0.0,  # 0 turns the Trainer's clipping off
        num_train_epochs=config.epochs,
        eval_strategy="steps", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.eval_steps, save_total_limit=config.save_total_limit,
        load_best_model_at_end=config.restore_best, metric_for_best_model="eval_loss", greater_is_better=False,
        logging_strategy="steps", logging_steps=1,
        seed=config.seed, data_seed=config.seed if config.data_seed is None else config.data_seed,
        full_determinism=cpu if config.full_determinism is None else config.full_determinism,
        report_to=config.report_to, disable_tqdm=not config.progress,
        use_cpu=cpu, ddp_backend="gloo" if cpu and world > 1 else None,
        ddp_find_unused_parameters=False,  # see BoundObjective.touch_outputs
        remove_unused_columns=False, label_names=[], prediction_loss_only=True,
        dataloader_num_workers=0, **_precision_and_memory(runtime),
    )


@dataclass
class StageResult:
    train_curve: list[tuple[int, float]]  # (step, train loss)
    dev_curve: list[tuple[int, float]]  # (step, dev loss)
    best_step: int | None
    best_dev_loss: float | None
    steps: int
    stopped_early: bool


def train_stage(model, objective: Objective, train_dataset, dev_dataset, collator,
                config: TrainConfig, output_dir, lr: float | None = None,
                callbacks: list[TrainerCallback] = (), resume: bool = True) -> StageResult:
    """Train `model`'s adapter on one objective under a fresh optimizer; on return the model holds
    the best state (lowest dev loss). Resumes from the last checkpoint in `output_dir` if any."""
    runtime = runtime_of(model)
    peft_kind = type(getattr(model, "active_peft_config", None)).__name__
    if runtime.gradient_checkpointing and peft_kind == "PrefixTuningConfig":
        raise IA2Error("gradient checkpointing cannot train prefix tuning: its prefix lives in "
                       "the KV cache, which checkpointed layers do not keep")
    args = training_arguments(config, output_dir, lr, runtime)
    trainer = IA2Trainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=dev_dataset,
                         data_collator=collator, objective=BoundObjective(model, objective),
                         callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience),
                                    *callbacks])
    trainer.remove_callback(PrinterCallback)
    if config.progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossBar())
    checkpoint = last_checkpoint(output_dir) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.state
    best = state.best_model_checkpoint
    max_steps = state.max_steps
    return StageResult(
        train_curve=[(h["step"], h["loss"]) for h in state.log_history if "loss" in h],
        dev_curve=[(h["step"], h["eval_loss"]) for h in state.log_history if "eval_loss" in h],
        best_step=int(best.rsplit("-", 1)[-1]) if best else None,
        best_dev_loss=state.best_metric,
        steps=state.global_step,
        stopped_early=state.global_step < max_steps,
    )


def last_checkpoint(folder) -> str | None:
    """The newest checkpoint the Trainer finished writing, or None. Its trainer_state.json is
    written last, so a process killed while saving leaves a checkpoint without a whole one,
    which the Trainer cannot resume from (it is passed over, and rewritten when that step
    is saved again)."""
    done = []
    for path in Path(folder).glob("checkpoint-*") if os.path.isdir(folder) else ():
        match, state = re.fullmatch(r"checkpoint-(\d+)", path.name), path / "trainer_state.json"
        if not (match and state.is_file()):
            continue
        try:
            TrainerState.load_from_json(str(state))
        except (ValueError, TypeError, KeyError):  # cut short mid-write
            continue
        done.append((int(match.group(1)), str(path)))
    return max(done)[1] if done else None
