"""Adapters through peft, from one `AdapterConfig`: LoRA (the paper's), IA3, prompt and prefix
tuning. Saved in PEFT format so `PeftModel.from_pretrained(base, path)` loads them."""

from __future__ import annotations

from dataclasses import dataclass

from .. import validate
from ..errors import IA2Error
from ..teacher.sites import activation_sites, decoder_layers

ADAPTERS = ("lora", "ia3", "prompt", "prefix")

# Attention projections the paper adapts (query, key, output), by the names architectures use.
_QKO = ("q_proj", "k_proj", "o_proj")
_FUSED = ("c_attn", "c_proj")  # GPT-2: fused q/k/v projection and output projection (Conv1D)


@dataclass(frozen=True)
class AdapterConfig:
    kind: str = "lora"
    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: q, k, o projections of self-attention
    num_virtual_tokens: int = 8  # prompt / prefix tuning

    def __post_init__(self):
        if self.kind not in ADAPTERS:
            raise IA2Error(f"unknown adapter {self.kind!r} (choose from {', '.join(ADAPTERS)})")
        validate.integer("adapter.r", self.r, low=1)
        validate.number("adapter.alpha", self.alpha, low=0, low_open=True)
        validate.number("adapter.dropout", self.dropout, 0, 1, high_open=True)
        validate.integer("adapter.num_virtual_tokens", self.num_virtual_tokens, low=1)


def _attention_child_name(model) -> str:
    """The name of the self-attention child inside a decoder block (e.g. `self_attn`, `attn`)."""
    block = decoder_layers(model)[0]
    attn = activation_sites(model, "attn", [0])[0]
    return next(name for name, mod in block.named_children() if mod is attn)


def attention_targets(model) -> list[str]:
    """Module-name suffixes of the attention projections LoRA adapts: `self_attn.q_proj`,
    `self_attn.k_proj`, `self_attn.o_proj` (Llama, Qwen, Gemma, Mistral) or `attn.c_attn`,
    `attn.c_proj` (GPT-2, whose MLP also has a `c_proj` that must stay untouched)."""
    attn_name = _attention_child_name(model)
    children = dict(activation_sites(model, "attn", [0])[0].named_children())
    for names in (_QKO, _FUSED):
        if all(n in children for n in names):
            return [f"{attn_name}.{n}" for n in names]
    raise IA2Error(f"{type(model).__name__}: no q/k/o projections found in its attention "
                   f"(children: {', '.join(children)}); pass target modules explicitly")


def _is_conv1d(model, suffix: str) -> bool:
    return any(name.endswith(suffix) and type(m).__name__ == "Conv1D" for name, m in model.named_modules())


def peft_config(model, config: AdapterConfig):
    import peft

    task = peft.TaskType.CAUSAL_LM
    if config.kind == "lora":
        targets = list(config.target_modules or attention_targets(model))
        return peft.LoraConfig(task_type=task, r=config.r, lora_alpha=config.alpha,
                               lora_dropout=config.dropout, target_modules=targets, bias="none",
                               fan_in_fan_out=_is_conv1d(model, targets[0]))
    if config.kind == "ia3":
        # peft knows each architecture's IA3 targets (attention k/v and the MLP down projection)
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as known

        model_type = getattr(model.config, "model_type", None)
        targets = list(config.target_modules or known.get(model_type, []))
        if not targets:
            raise IA2Error(f"ia3 has no default targets for {model_type}; pass target modules")
        return peft.IA3Config(task_type=task, target_modules=targets,
                              fan_in_fan_out=_is_conv1d(model, targets[0]))
    if config.kind == "prompt":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=config.num_virtual_tokens)
    return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=config.num_virtual_tokens)


def attach(model, config: AdapterConfig = AdapterConfig()):
    """Wrap `model` (frozen) with a fresh trainable adapter; returns the PeftModel."""
    import peft

    if hasattr(model, "peft_config"):  # peft injects layers in place: a second adapter would nest
        raise IA2Error("this model already carries an adapter; attach to a freshly loaded base model")
    spec = peft_config(model, config)
    try:
        wrapped = peft.get_peft_model(model, spec)
    except (ValueError, TypeError, AttributeError, NotImplementedError) as e:
        raise IA2Error(f"cannot attach a {config.kind} adapter to "
                       f"{type(model).__name__}: {str(e).splitlines()[0]}") from None
    return wrapped


def position_offset(model) -> int:
    """How many positions the adapter prepends to every sequence's outputs: prompt tuning's
    virtual tokens shift logits and activations; prefix tuning only extends the KV cache."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is not None and type(cfg).__name__ == "PromptTuningConfig":
        return int(cfg.num_virtual_tokens)
    return 0


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
