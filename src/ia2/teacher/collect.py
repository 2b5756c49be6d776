"""The teacher pass: greedy ICL responses and the site activations that produced them.

The activations are captured during `model.generate` itself: with left padding, the prefill's
last position is the last prompt token and each decode step's single position is the next
response token, which are exactly the aligned positions. No extra forward pass is needed.
Prompts are given as token id lists and padded here (on the left, with an explicit attention
mask), so the tokenizer's padding side and pad id never matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria

from .. import validate
from ..distributed import load_or_build
from ..errors import IA2Error
from ..runtime import runtime_of, token_batches
from .capture import Capture
from .signals import TeacherSignals
from .sites import SITES, activation_sites, resolve_layers

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class TeacherConfig:
    site: str = "attn"
    layers: tuple[int, ...] | None = None  # None: every layer
    max_new_tokens: int | None = None  # G; None: the task's
    stop: tuple[str, ...] | None = None  # stop strings; None: the task's
    topk: int = 20  # teacher next-token distribution kept as top-k log-probs (0: none)
    full_distribution: bool = False  # also keep all V log-probs per aligned position (exact KD)
    batch_size: int = 8
    dtype: str = "fp16"  # storage dtype of the activations and full log-probs: fp16, bf16 or fp32
    constrain_to_labels: bool = False  # classification: first token restricted to label tokens
    preset: str = "natural"
    max_length: int | None = None  # context window cap; None: the model's

    def __post_init__(self):
        if self.site not in SITES:
            raise IA2Error(f"unknown activation site {self.site!r} (choose from {', '.join(SITES)})")
        if self.dtype not in DTYPES:
            raise IA2Error(f"unknown storage dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        validate.integer("teacher.max_new_tokens", self.max_new_tokens, low=1, optional=True)
        validate.integer("teacher.topk", self.topk, low=0)
        validate.integer("teacher.batch_size", self.batch_size, low=1)
        validate.integer("teacher.max_length", self.max_length, low=1, optional=True)
        validate.each(validate.integer, "teacher.layers", self.layers or (), low=0)

    def for_task(self, spec) -> "TeacherConfig":
        """This config with the task's response budget and stop strings filled in."""
        return replace(self, max_new_tokens=self.max_new_tokens or spec.max_new_tokens,
                       stop=tuple(spec.stop) if self.stop is None else tuple(self.stop))


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation EOS list."""
    ids = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return sorted(ids)


def response_length(ids: list[int], tokenizer, eos: list[int], stop: tuple[str, ...]) -> int:
    """Tokens up to and including the first that is an EOS or completes a stop string."""
    for t, tok in enumerate(ids, 1):
        if tok in eos:
            return t
        if stop and any(s in tokenizer.decode(ids[:t]) for s in stop):
            return t
    return len(ids)


class _StopWhenDone(StoppingCriteria):
    """A row is done at an EOS or once its response text contains a stop string: the same rule
    as `response_length`, so generation never stops before or runs needlessly past the cut."""

    def __init__(self, tokenizer, prompt_len: int, eos: list[int], stop: tuple[str, ...]):
        self.tokenizer, self.prompt_len, self.stop = tokenizer, prompt_len, stop
        self.eos = torch.tensor(eos, dtype=torch.long)
        self.finished: torch.Tensor | None = None  # [B] on CPU: rows done at any step so far

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.isin(input_ids[:, -1], self.eos.to(input_ids.device))
        if self.stop:
            texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:])
            done |= torch.tensor([any(s in t for s in self.stop) for t in texts], device=done.device)
        self.finished = done.cpu() if self.finished is None else self.finished | done.cpu()
        return done


class _FirstTokenIn(LogitsProcessor):
    """Restrict the first generated token to `allowed` (the label tokens)."""

    def __init__(self, prompt_len: int, allowed: list[int]):
        self.prompt_len, self.allowed = prompt_len, torch.tensor(allowed, dtype=torch.long)

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] != self.prompt_len:
            return scores
        keep = torch.full_like(scores, float("-inf"))
        idx = self.allowed.to(scores.device)
        return keep.index_copy(1, idx, scores.index_select(1, idx))


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _neutral_generation(max_new_tokens: int, pad_id: int) -> GenerationConfig:
    # Explicit neutral values: `generate` fills unset fields from the model's own generation
    # config, which may carry penalties that would make the "greedy" answer not the argmax.
    return GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
        repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_repetition_penalty=1.0,
        eos_token_id=[], pad_token_id=pad_id, return_dict_in_generate=True, use_cache=True,
    )


@torch.no_grad()
def _teach_batch(model, tokenizer, prompts, sites, config, eos, allowed) -> list[TeacherSignals]:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):  # left padding: every row's last prompt token is at -1
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    dtype = DTYPES[config.dtype]
    steps_topk: list[tuple[torch.Tensor, torch.Tensor]] = []
    full_rows: list[list[torch.Tensor]] = [[] for _ in prompts]  # per row: [V] per step
    stopper = _StopWhenDone(tokenizer, width, eos, config.stop)

    def record_distribution(module, args, output):
        if not (config.topk or config.full_distribution):
            return
        logp = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        if config.topk:
            steps_topk.append(logp.topk(min(config.topk, logp.shape[-1]), dim=-1))
        if config.full_distribution:
            # [B, V] per step adds up fast (Gemma 3: 512 KiB per row at fp16): keep only rows
            # still generating, in the storage dtype, off the device at once
            for b in range(len(prompts)):
                if stopper.finished is None or not stopper.finished[b]:
                    full_rows[b].append(logp[b].to(device="cpu", dtype=dtype, copy=True))

    processors = LogitsProcessorList([_FirstTokenIn(width, allowed)] if allowed else [])
    stopping = [stopper]
    handle = _causal_lm(model).register_forward_hook(record_distribution)
    try:
        with Capture(sites, positions=-1, detach=True, accumulate=True) as cap:
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                generation_config=_neutral_generation(config.max_new_tokens, pad),
                logits_processor=processors, stopping_criteria=stopping,
            )
    finally:
        handle.remove()
    gen = out.sequences[:, width:].cpu()
    steps = gen.shape[1]
    if any(len(h) != steps for h in cap.history) or (config.topk and len(steps_topk) != steps):
        raise IA2Error(f"teacher: {steps} tokens generated but {len(cap.history[0])} forward "
                       "passes captured; this model's generate() is not supported")
    acts = torch.stack([torch.cat(h, dim=1) for h in cap.history], dim=1)  # [B, L, steps, H]
    if dtype == torch.float16 and acts.abs().amax() > torch.finfo(torch.float16).max:
        raise IA2Error(f"teacher: {config.site} activations reach {float(acts.abs().amax()):.3g}, "
                       "beyond fp16's range; store them as bf16 or fp32 (teacher.dtype)")
    acts = acts.to(dtype).cpu()  # rounded on the device: half the bytes to move
    if config.topk:
        top_lp = torch.stack([v for v, _ in steps_topk], dim=1).cpu()  # [B, steps, K]
        top_ids = torch.stack([i for _, i in steps_topk], dim=1).cpu()
    signals = []
    for b in range(len(prompts)):
        row = gen[b].tolist()
        t = response_length(row, tokenizer, eos, config.stop)
        sig = TeacherSignals(response_ids=gen[b, :t].clone(), activations=acts[b, :, :t].clone())
        if config.topk:
            sig.topk_ids, sig.topk_logprobs = top_ids[b, :t].clone(), top_lp[b, :t].clone()
        if config.full_distribution:
            if len(full_rows[b]) < t:
                raise IA2Error(f"teacher: {t} tokens generated but {len(full_rows[b])} "
                               "distributions captured; this model's generate() is not supported")
            full = torch.stack(full_rows[b])  # [T, V]: rows stop being kept once done
            sig.logprobs = full if len(full) == t else full[:t].clone()
            full_rows[b] = []
        if config.topk or config.full_distribution:
            _check_greedy(sig, first_free=not allowed)
        signals.append(sig)
    return signals


def _check_greedy(sig: TeacherSignals, first_free: bool) -> None:
    """Each chosen token must be the teacher's argmax: otherwise something other than the model
    (a processor from its generation config) shaped the response, and KD targets would lie."""
    for t in range(0 if first_free else 1, sig.length):
        tok = int(sig.response_ids[t])
        if sig.topk_ids is not None:
            hit = (sig.topk_ids[t] == tok).nonzero()
            ok = len(hit) and sig.topk_logprobs[t, hit[0, 0]] >= sig.topk_logprobs[t, 0]
        else:  # rounding to the storage dtype is monotonic: the argmax stays a maximum
            ok = sig.logprobs[t, tok] >= sig.logprobs[t].max()
        if not ok:
            raise IA2Error(f"teacher: generated token {tok} at step {t} is not the model's argmax")


def teach(model, tokenizer, prompts: list[list[int]], config: TeacherConfig,
          label_ids: list[int] | None = None, eos: list[int] | None = None,
          progress=None, token_budget: int | None = None) -> list[TeacherSignals]:
    """Teacher signals for each prompt (token ids), in order. `config.max_new_tokens` and
    `config.stop` must be set (see `TeacherConfig.for_task`). `eos` overrides the EOS ids
    (`[]`: never stop at EOS). `progress`: a tqdm bar to advance, or None. Batches hold at
    most `config.batch_size` prompts and, with a token budget (default: the model's runtime's),
    at most that many padded tokens (prompt + response budget) each."""
    if config.max_new_tokens is None or config.stop is None:
        raise IA2Error("teacher: max_new_tokens and stop must be set (TeacherConfig.for_task)")
    if any(len(p) == 0 for p in prompts):
        raise IA2Error("teacher: empty prompt")
    if config.constrain_to_labels and not label_ids:
        raise IA2Error("teacher: constrain_to_labels needs the label token ids")
    sites = activation_sites(model, config.site, config.layers)
    eos = eos_ids(model, tokenizer) if eos is None else list(eos)
    allowed = list(label_ids) if config.constrain_to_labels else None
    # Similar lengths share a batch (less padding); results do not depend on the grouping.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    if token_budget is None:
        token_budget = runtime_of(model).token_budget
    batches = token_batches(order, [len(p) for p in prompts], config.batch_size, token_budget,
                            extra=config.max_new_tokens)
    out: list[TeacherSignals | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for chunk in batches:
            for i, sig in zip(chunk, _teach_batch(model, tokenizer, [prompts[i] for i in chunk],
                                                  sites, config, eos, allowed)):
                out[i] = sig
            if progress is not None:
                progress.update(len(chunk))
    finally:
        model.train(was_training)
    return out


@dataclass
class TeacherSet:
    """Teacher signals for an episode: `train[i]` for train example i (with its demonstrations
    `demos_for_train[i]`), `dev[j]` for dev example j. `computed` counts examples that were not
    in the cache; `path` is the cache entry's directory; `accuracy` how often the responses are
    the gold answer (ia2.teacher.quality)."""

    train: list[TeacherSignals]
    dev: list[TeacherSignals]
    key: str
    path: Path | None
    config: TeacherConfig
    items: list[dict] = field(default_factory=list)
    computed: int = 0
    accuracy: dict | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the cache entry on disk (shards and manifest)."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()) if self.path else 0


def episode_prompts(model, tokenizer, spec, episode, config: TeacherConfig) -> list[dict]:
    """One item per teacher prompt, train then dev: split, index, uid, ids, n_demos."""
    from ..tasks.prompts import encode_prompt

    max_length = config.max_length or getattr(_causal_lm(model).config.get_text_config(),
                                              "max_position_embeddings", None)
    items = []
    for split, queries, demos in (("train", episode.train, episode.demos_for_train),
                                  ("dev", episode.dev, episode.demos_for_dev)):
        for i, (ex, d) in enumerate(zip(queries, demos)):
            p = encode_prompt(tokenizer, spec, ex, [episode.train[k] for k in d], config.preset,
                              max_length=max_length, reserve=config.max_new_tokens or 0)
            items.append(dict(split=split, index=i, uid=ex.uid, ids=p.ids, n_demos=p.n_demos))
    return items


def teach_episode(model, tokenizer, spec, episode, config: TeacherConfig | None = None,
                  cache_root: str | Path | None = None, progress: bool = True) -> TeacherSet:
    """Teacher signals for every train and dev example of `episode`, through the cache."""
    from ..tasks.prompts import label_token_ids
    from .cache import TeacherCache, cache_fields
    from .quality import teacher_accuracy

    config = (config or TeacherConfig()).for_task(spec)
    config = replace(config, layers=tuple(resolve_layers(model, config.layers)))
    label_ids = None
    if config.constrain_to_labels:
        if spec.kind != "classification":
            raise IA2Error(f"task {spec.name}: constrain_to_labels needs a classification task")
        label_ids = label_token_ids(tokenizer, spec, config.preset)
    items = episode_prompts(model, tokenizer, spec, episode, config)
    fields = cache_fields(model, tokenizer, spec, episode, config, items,
                          eos_ids(model, tokenizer), label_ids)
    cache = TeacherCache(fields, [{k: v for k, v in it.items() if k != "ids"} for it in items],
                         root=cache_root)

    def build(idx: list[int], bar) -> list[TeacherSignals]:
        return teach(model, tokenizer, [items[i]["ids"] for i in idx], config, label_ids,
                     progress=bar)

    with tqdm(total=len(items), desc=f"teacher {spec.name}", unit="ex", disable=not progress) as bar:
        # under torchrun each process builds a slice; rank 0 writes the cache (ia2.distributed)
        signals, computed = load_or_build(cache, build, bar)
    train, dev = signals[:len(episode.train)], signals[len(episode.train):]
    return TeacherSet(train, dev, cache.key, cache.path, config, cache.items, computed,
                      teacher_accuracy(tokenizer, spec, episode, train, dev, config.preset,
                                       label_ids, config.stop))
