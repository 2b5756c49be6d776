"""What a study will cost, from its config alone (`ia2 run --dry-run`): no weights, no data, no hub.

The compute model (docs/gpus.md, "The paper's configs") counts tokens x parameters:
- a forward pass over T new tokens after c cached ones costs 2·P·T + 2·L·d·(T² + 2·c·T) FLOPs
  (P: parameters outside the embedding, L layers, d = heads x head_dim: causal attention's
  scores and weighted sum), plus 2·V·H per position whose next-token distribution is read (the
  LM head runs only there);
- a training step costs 2x its forward (LoRA's backward goes through every frozen layer for the
  activations' gradients, about a forward, but computes no weight gradient for them: a full
  fine-tune's 6·P becomes 4·P), 3x with gradient checkpointing (one more forward);
- teacher, evaluation and analysis passes are forwards (2·P per token); generation decodes one
  token per pass after a prefill of the prompt.
Each pass also reads the weights (and, decoding, the KV cache) from GPU memory, and the CPU
dispatches its kernels one decoder layer at a time (eager PyTorch: ~35 kernels a layer, ~10 µs
each); a pass takes the longest of its FLOPs at the sustained FLOP rate, its bytes at the
sustained bandwidth and its dispatch time (small batches and decoding are not compute bound);
a training step adds `Hardware.step_ms` of host work (the Trainer loop, the optimizer, collation).
Tokens come from per-task mean lengths (`TASKS`, characters measured on the local data at
`CHARS_PER_TOKEN`); padding is not counted. Training runs are counted to their epoch limit, so
training is an upper bound (early stopping ends most runs sooner); generated responses are
counted as long as the reference solutions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

CHARS_PER_TOKEN = 4.0  # English text under 50k-260k vocabularies; digits and code run shorter


@dataclass(frozen=True)
class ModelSize:
    params: int  # all parameters, the (tied) embedding once
    layers: int
    hidden: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = True

    @property
    def body(self) -> int:
        """Parameters a token's forward multiplies by, the embedding and the LM head aside."""
        return self.params - self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    def kv_bytes(self, dtype_bytes: int) -> int:
        """Bytes of KV cache per token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def dims(self) -> dict:  # for ia2.costs.teacher_cache_bytes
        return {"layers": self.layers, "hidden": self.hidden, "vocab": self.vocab}


# From each model's config.json on the hub; params is the published count (tests recompute it).
MODELS = {
    "Qwen/Qwen3-4B-Base": ModelSize(4_022_468_096, 36, 2560, 151_936, 32, 8, 128),
    "meta-llama/Llama-3.2-1B": ModelSize(1_235_814_400, 16, 2048, 128_256, 32, 8, 64),
    "meta-llama/Llama-3.2-3B": ModelSize(3_212_749_824, 28, 3072, 128_256, 24, 8, 128),
    "google/gemma-3-270m": ModelSize(268_098_176, 18, 640, 262_144, 4, 1, 256),
    "HuggingFaceTB/SmolLM2-135M": ModelSize(134_515_008, 30, 576, 49_152, 9, 3, 64),
}
ALIASES = {"meta-llama/Llama-3.2-1B-Instruct": "meta-llama/Llama-3.2-1B",
           "meta-llama/Llama-3.2-3B-Instruct": "meta-llama/Llama-3.2-3B",
           "gemma-3-270m": "google/gemma-3-270m", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M"}


def size_from_config(cfg: dict) -> ModelSize:
    """A decoder's size from its config.json (Llama/Qwen/Gemma/Mistral field names): q/k/v/o
    projections, a gated MLP, the embedding (and an untied head), norms ignored."""
    cfg = cfg.get("text_config", cfg)
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    tied = bool(cfg.get("tie_word_embeddings", True))
    per_layer = h * hd * (2 * heads + 2 * kv) + 3 * h * cfg["intermediate_size"]
    return ModelSize(layers * per_layer + vocab * h * (1 if tied else 2), layers, h, vocab,
                     heads, kv, hd, tied)


def model_size(name: str) -> ModelSize | None:
    """A known model's size (`MODELS`), or a local directory's from its config.json; None for
    a hub id not in the table (nothing is downloaded)."""
    name = ALIASES.get(name, name)
    if name in MODELS:
        return MODELS[name]
    config = Path(name).expanduser() / "config.json"
    if config.is_file():
        try:
            return size_from_config(json.loads(config.read_text()))
        except (KeyError, TypeError, ValueError):  # not a Llama-style decoder config
            return None
    return None


@dataclass(frozen=True)
class TaskSize:
    """Mean characters of a rendered query (paper preset) in the training pool and in the
    evaluation split, of a gold answer, and the evaluation split's rows."""
    train_query: float
    eval_query: float
    answer: float
    eval_rows: int


# Measured on the local data (shared/data) with `measure_task`; sciq, qasc, gsm_symbolic and
# sciq_gen are not local: their values are estimates from the hub datasets' descriptions.
TASKS = {
    "sst2": TaskSize(64, 117, 1, 872),
    "finphrasebank": TaskSize(145, 144, 1, 600),
    "poem_sentiment": TaskSize(51, 51, 1, 288),
    "agnews": TaskSize(247, 245, 1, 2000),
    "bbcnews": TaskSize(265, 265, 1, 2225),
    "strategyqa": TaskSize(68, 68, 1, 229),
    "gsm8k": TaskSize(252, 257, 287, 1319),
    "math_algebra": TaskSize(173, 162, 362, 1187),
    "sciq": TaskSize(170, 170, 1, 1000),  # estimate: question, 4 options
    "qasc": TaskSize(200, 200, 1, 926),  # estimate: question, 8 options
    "gsm_symbolic": TaskSize(260, 260, 290, 5000),  # estimate: as GSM8K
    "sciq_gen": TaskSize(100, 100, 450, 1000),  # estimate: question; support + answer
}
DEFAULT_TASK = TaskSize(200, 200, 200, 500)  # a user's task: a round guess, said in the output


def measure_task(name: str, data_dir=None, preset: str = "paper") -> TaskSize:
    """`TaskSize` of a built-in task from its local files (what `TASKS` was measured with)."""
    from .tasks.prompts import answer_text, render_query
    from .tasks.registry import get_task, load_split

    spec = get_task(name)
    ev = load_split(spec, "eval", data_dir)
    train = ev if spec.eval_only else load_split(spec, "train", data_dir)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return TaskSize(round(mean([len(render_query(spec, e, preset)) for e in train])),
                    round(mean([len(render_query(spec, e, preset)) for e in ev])),
                    round(mean([len(answer_text(spec, e, preset)) for e in train])), len(ev))


def tokens(chars: float) -> int:
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class Hardware:
    """One GPU as the estimate assumes it: peak dense 16-bit FLOP/s, memory bandwidth, and the
    fraction of both a real workload sustains. Default: an 80 GB A100 (312 TFLOP/s bf16,
    2.0 TB/s) at 40%."""
    tflops: float = 312.0
    tbps: float = 2.0
    efficiency: float = 0.4
    layer_ms: float = 0.35  # CPU time to dispatch one decoder layer's kernels in one pass
    step_ms: float = 10.0  # host time per optimizer step besides the passes (docs/gpus.md)

    @classmethod
    def from_env(cls) -> "Hardware":
        """Overrides: IA2_GPU_TFLOPS, IA2_GPU_TBPS, IA2_GPU_EFFICIENCY, IA2_GPU_LAYER_MS,
        IA2_GPU_STEP_MS (e.g. an H100 SXM: 989 and 3.35)."""
        from .errors import IA2Error

        values = {}
        for field, var in (("tflops", "IA2_GPU_TFLOPS"), ("tbps", "IA2_GPU_TBPS"),
                           ("efficiency", "IA2_GPU_EFFICIENCY"),
                           ("layer_ms", "IA2_GPU_LAYER_MS"), ("step_ms", "IA2_GPU_STEP_MS")):
            if os.environ.get(var):
                try:
                    values[field] = float(os.environ[var])
                except ValueError:
                    raise IA2Error(f"{var} must be a number, not {os.environ[var]!r}") from None
                if not values[field] > 0:
                    raise IA2Error(f"{var} must be positive")
        return cls(**values)

    def describe(self) -> str:
        return (f"1 GPU at {self.tflops:g} TFLOP/s 16-bit peak, {self.tbps:g} TB/s, "
                f"{self.efficiency:.0%} sustained, {self.layer_ms:g} ms a layer to dispatch, "
                f"{self.step_ms:g} ms a training step besides (IA2_GPU_TFLOPS, IA2_GPU_TBPS, "
                "IA2_GPU_EFFICIENCY, IA2_GPU_LAYER_MS, IA2_GPU_STEP_MS)")


class Meter:
    """FLOPs and roofline seconds, by stage, for one model on one GPU."""

    def __init__(self, model: ModelSize, hw: Hardware, dtype_bytes: int = 2,
                 flop_rate_scale: float = 1.0):
        self.m, self.dtype_bytes = model, dtype_bytes
        self.rate = hw.tflops * 1e12 * hw.efficiency * flop_rate_scale
        self.bandwidth = hw.tbps * 1e12 * hw.efficiency
        self.dispatch = hw.layer_ms / 1000 * model.layers  # seconds a pass at the least
        self.step = hw.step_ms / 1000
        self.flops: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def forward_flops(self, new: float, cached: float = 0.0, logits: float = 1.0) -> float:
        m = self.m
        return (2 * m.body * new + 2 * m.layers * m.attn_dim * (new * new + 2 * cached * new)
                + 2 * m.vocab * m.hidden * logits)

    def add(self, stage: str, flops: float, passes: float, kv_tokens: float = 0.0) -> None:
        """`flops` done in `passes` passes, each reading the weights, plus `kv_tokens` tokens
        of KV cache read in all (decoding)."""
        weights = self.m.params * self.dtype_bytes
        memory = (passes * weights + kv_tokens * self.m.kv_bytes(self.dtype_bytes)) / self.bandwidth
        self.flops[stage] = self.flops.get(stage, 0.0) + flops
        seconds = max(flops / self.rate, memory, passes * self.dispatch)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def prompts(self, stage: str, count: int, prompt: float, generate: int, batch: int,
                cached: float = 0.0) -> None:
        """`count` prompts of `prompt` tokens (after `cached` shared ones), `generate` tokens
        each (1: scoring the next token), in batches of `batch`."""
        if count <= 0:
            return
        batches = math.ceil(count / batch)
        self.add(stage, count * self.forward_flops(prompt, cached), batches)
        if generate > 1:
            steps = generate - 1
            context = cached + prompt + generate / 2
            self.add(stage, count * steps * self.forward_flops(1, context),
                     batches * steps, count * steps * context)

    def train(self, examples: int, length: float, steps: int, dev_evals: int, dev: int,
              batch: int, checkpointing: bool) -> None:
        """`steps` optimizer steps over `examples` per epoch-equivalent of work, and `dev_evals`
        evaluations of `dev` examples, sequences of `length` tokens (one loss position read)."""
        factor = 3 if checkpointing else 2
        per_example = self.forward_flops(length, logits=1)
        self.add("training", factor * examples * per_example, factor * steps)
        self.seconds["training"] += steps * self.step
        self.add("training", dev_evals * dev * per_example, dev_evals * math.ceil(dev / batch))

    def hours(self, stage: str | None = None) -> float:
        secs = self.seconds.get(stage, 0.0) if stage else sum(self.seconds.values())
        return secs / 3600


# Rough costs measured on gemma-3-270m with 2 CPU cores (demo config), for the embedded models.
SECONDS_PER_STEP = 1.2  # one optimizer step of batch 4 plus its share of dev evaluations
SECONDS_PER_QUERY = 0.06  # one scored evaluation query (with or without a shared demo prefix)


def _sig(x: float) -> float:
    return round(x, 1) if x >= 10 else round(x, 2) if x >= 0.1 else round(x, 3)


def _metered(config, work):
    """(Meter, counts, teacher episodes, tasks of unknown size, model size) of the groups `work`."""
    from .episodes import DEV_MAX
    from .experiment import Study, units
    from .methods.pipeline import RunConfig, needs_teacher, stages

    study, ev_cfg, tr = Study(config), config.eval, config.train
    model = model_size(config.model)
    fp32 = config.runtime.dtype == "fp32"
    meter = Meter(model or MODELS["google/gemma-3-270m"], Hardware.from_env(), 4 if fp32 else 2,
                  0.5 if fp32 else 1.0)  # fp32 runs at TF32's half rate
    guessed = sorted({t for g in work for t in study.eval_tasks(g.task) if t not in TASKS})
    size = lambda t: TASKS.get(t, DEFAULT_TASK)  # noqa: E731

    def response(task: str) -> int:  # tokens a model answers with: a label, or a solution
        spec = study.spec(task)
        if spec.kind == "classification":
            return 1
        budget = config.teacher.max_new_tokens or spec.max_new_tokens
        return min(budget, tokens(size(task).answer) + 2)  # + the terminator

    def rows(task: str) -> int:
        return min(ev_cfg.size, size(task).eval_rows)

    def demos(task: str, k: int) -> float:
        return k * (tokens(size(task).train_query) + tokens(size(task).answer))

    evals = trains = steps = queries = 0
    episodes, base_asim = set(), set()
    for g in work:
        eval_tasks = study.eval_tasks(g.task)
        if g.kind == "method":
            runs = units(config, g)
            per_epoch = -(-g.n // tr.batch_size)
            trains += len(runs)
            evals += len(eval_tasks) * len(config.seeds)
            queries += len(eval_tasks) * len(config.seeds) * ev_cfg.size
            dev = max(1, min(DEV_MAX, g.n // 2))
            for stage in stages(RunConfig(method=g.method, labels=config.sft_labels)):
                n_steps = tr.epochs * per_epoch
                steps += len(runs) * n_steps
                target = response(g.task) if stage.target == "icl" else (
                    tokens(size(g.task).answer) + 1)
                for _ in runs:
                    meter.train(tr.epochs * g.n, tokens(size(g.task).train_query) + target,
                                n_steps, n_steps // tr.eval_steps, dev, tr.batch_size,
                                config.runtime.gradient_checkpointing)
            for _ in config.seeds:
                for t in eval_tasks:
                    meter.prompts("evaluation", rows(t), tokens(size(t).eval_query), response(t),
                                  ev_cfg.batch_size)
            if needs_teacher(RunConfig(method=g.method, labels=config.sft_labels)):
                episodes |= {(g.task, g.n, s) for s in config.seeds}
            if config.analysis.asim:  # this method's adapter, and the base model once
                k = study.eval_config(g.n).icl_k
                q = min(config.analysis.asim_queries, rows(g.task))
                for _ in range(1 if (g.task, g.n) in base_asim else 2):
                    meter.prompts("analysis", q, demos(g.task, k) + tokens(size(g.task).eval_query),
                                  response(g.task), config.teacher.batch_size)
                    meter.prompts("analysis", q, tokens(size(g.task).eval_query),
                                  response(g.task), config.teacher.batch_size)
                base_asim.add((g.task, g.n))
            continue
        evals += len(eval_tasks)
        ev = study.eval_config(g.n)
        shared = g.kind == "icl" and ev.icl_demos == "shared"
        # per-query ICL reads about k + 1 query lengths per query
        sets = 1 if g.kind == "zero_shot" else ev.icl_sets if shared else ev.icl_k + 1
        queries += len(eval_tasks) * sets * ev_cfg.size
        for t in eval_tasks:
            q, r = tokens(size(t).eval_query), response(t)
            if g.kind == "zero_shot":
                meter.prompts("evaluation", rows(t), q, r, ev_cfg.batch_size)
            elif shared:
                for _ in range(ev.icl_sets):
                    meter.prompts("evaluation", 1, demos(g.task, ev.icl_k), 1, 1)
                    meter.prompts("evaluation", rows(t), q, r, ev_cfg.batch_size,
                                  cached=demos(g.task, ev.icl_k))
            else:
                meter.prompts("evaluation", rows(t), demos(g.task, ev.icl_k) + q, r,
                              ev_cfg.batch_size)
    for task, n, _seed in episodes:
        k = n - 1 if config.max_demos is None else min(n - 1, config.max_demos)
        meter.prompts("teacher", n + max(1, min(DEV_MAX, n // 2)),
                      demos(task, k) + tokens(size(task).train_query), response(task),
                      config.teacher.batch_size)
    counts = {"groups": len(work), "teacher_episodes": len(episodes), "training_runs": trains,
              "evaluations": evals, "max_steps": steps, "eval_queries": queries}
    return meter, counts, episodes, guessed, model


def study_cost(config, work) -> dict:
    """What --dry-run prints for the groups `work` of `config`: counts of the study's work, an
    upper bound on optimizer steps, and GPU hours and FLOPs from the compute model above (and,
    for the embedded models, CPU hours from the measured constants)."""
    meter, out, episodes, guessed, model = _metered(config, work)
    steps, queries = out["max_steps"], out["eval_queries"]
    if config.model in ALIASES and ALIASES[config.model] in ("google/gemma-3-270m",
                                                             "HuggingFaceTB/SmolLM2-135M"):
        hours = (steps * SECONDS_PER_STEP + queries * SECONDS_PER_QUERY) / 3600
        out["max_hours_gemma_cpu"] = round(hours, 1)
    if model is None:
        out["gpu_hours"] = "unknown"
        out["note"] = (f"model {config.model} is not in ia2.estimate.MODELS and has no local "
                       "Llama-style config.json: its size is unknown offline")
        return out
    out["gpu_hours"] = _sig(meter.hours())
    for stage in ("teacher", "training", "evaluation", "analysis"):
        out[f"gpu_hours_{stage}"] = _sig(meter.hours(stage))
    out["pflop"] = _sig(sum(meter.flops.values()) / 1e15)
    from .costs import teacher_cache_bytes

    out["teacher_cache_gib"] = _sig(teacher_cache_bytes(config, model.dims(), episodes) / 2**30)
    if guessed:
        out["note"] = f"no measured lengths for {', '.join(guessed)}: assumed {DEFAULT_TASK}"
    return out


def flops(config, work) -> float:
    """The compute model's FLOPs for the groups `work` of `config`."""
    return sum(_metered(config, work)[0].flops.values())


def dry_run_lines(counts: dict) -> list[str]:
    """The summary lines a dry run prints after its groups."""
    main = {k: v for k, v in counts.items()
            if not k.startswith("gpu_hours_") and k not in ("note", "pace_basis")}
    lines = ["; ".join(f"{k}={v}" for k, v in main.items())]
    if isinstance(counts.get("gpu_hours"), float):
        parts = " + ".join(f"{s} {counts['gpu_hours_' + s]}"
                           for s in ("teacher", "training", "evaluation", "analysis"))
        lines.append(f"gpu_hours = {parts} (training: every run to its epoch limit); "
                     f"{Hardware.from_env().describe()}; docs/gpus.md, the paper's configs")
    if counts.get("pace_basis"):
        lines.append(f"hours_at_recorded_pace: {counts['pace_basis']}")
    if counts.get("note"):
        lines.append(f"note: {counts['note']}")
    return lines
