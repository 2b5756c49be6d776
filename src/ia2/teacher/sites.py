"""Activation sites: where in a decoder the teacher's activations are read and the student's aligned.

- `attn`: the self-attention module's output (after o_proj / c_proj, before the residual add; the
  first element when the module returns a tuple). The paper's IA2 site. Note Gemma 3 normalises
  this output (`post_attention_layernorm`) before adding it to the residual stream.
- `residual`: the decoder layer's output (the residual stream after the layer).
- `mlp`: the MLP module's output (before the residual add; Gemma 3 normalises it afterwards too).

The modules are found structurally, never by guessing: the decoder layers are the one ModuleList
whose length equals the config's number of layers and whose items each hold exactly one
self-attention and one MLP child. Anything ambiguous is an IA2Error, since a wrong site would
silently train on the wrong signal.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from ..errors import IA2Error

SITES = ("attn", "residual", "mlp")

# Child names used by the architectures we know; class names are the fallback.
_ATTN_NAMES = ("self_attn", "attn", "self_attention", "attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")


def _config(model):
    config = getattr(model, "config", None)
    if config is None:
        raise IA2Error(f"{type(model).__name__} has no config: cannot find its decoder layers")
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_layers(model) -> int:
    config = _config(model)
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(config, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    raise IA2Error(f"{type(model).__name__}: its config does not give the number of layers")


def _child(block: torch.nn.Module, names: tuple[str, ...], cls_word: str) -> torch.nn.Module | None:
    """The block's unique child that is named like, or whose class is named like, the part."""
    found = {}
    for name, mod in block.named_children():
        if name in names or type(mod).__name__.lower().endswith(cls_word):
            if not name.startswith("cross"):  # encoder-decoder cross-attention is not the site
                found[name] = mod
    if len(found) == 1:
        return next(iter(found.values()))
    return None


def _is_block(mod: torch.nn.Module) -> bool:
    return (_child(mod, _ATTN_NAMES, "attention") is not None
            and _child(mod, _MLP_NAMES, "mlp") is not None)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks, also through peft's PeftModel / LoraModel wrappers (which wrap only the
    linear layers, so the blocks and the ModuleList are the base model's own objects)."""
    n = num_layers(model)
    candidates: dict[int, tuple[str, torch.nn.ModuleList]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n and all(_is_block(b) for b in mod):
            candidates.setdefault(id(mod), (name, mod))
    if len(candidates) != 1:
        where = ", ".join(name for name, _ in candidates.values()) or "none"
        raise IA2Error(f"{type(model).__name__}: cannot find its {n} decoder layers unambiguously "
                       f"(candidates: {where})")
    return next(iter(candidates.values()))[1]


def activation_sites(model, site: str = "attn",
                     layers: Sequence[int] | None = None) -> list[torch.nn.Module]:
    """The module whose output is the site, one per requested layer (all layers by default)."""
    if site not in SITES:
        raise IA2Error(f"unknown activation site {site!r} (choose from {', '.join(SITES)})")
    blocks = decoder_layers(model)
    layers = resolve_layers(model, layers)
    if site == "residual":
        return [blocks[i] for i in layers]
    names, word = (_ATTN_NAMES, "attention") if site == "attn" else (_MLP_NAMES, "mlp")
    return [_child(blocks[i], names, word) for i in layers]


def resolve_layers(model, layers: Sequence[int] | None) -> list[int]:
    """The explicit layer list (all layers when None), validated like `activation_sites`."""
    n = len(decoder_layers(model))
    try:
        chosen = list(range(n)) if layers is None else [operator.index(i) for i in layers]
    except TypeError:
        raise IA2Error(f"layers {layers!r} must be integers") from None
    if not chosen or len(set(chosen)) != len(chosen) or any(not 0 <= i < n for i in chosen):
        raise IA2Error(f"layers {chosen} are not distinct indices in 0..{n - 1}")
    return chosen
