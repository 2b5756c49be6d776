"""Where and how a model runs: one small setting for every stage (docs/gpus.md).

`Runtime` names the device, the model's dtype, the attention implementation, gradient
checkpointing and a token budget for batching. It is resolved once (`resolve()`: `auto` becomes
what this machine has) and handed to `load_model`, which places the model and stamps it with the
resolved runtime (`model.ia2_runtime`, beside `ia2_fingerprint`). The teacher, the trainer and the
evaluators read it from the model they are given (`runtime_of`), so one object travels with the
weights and every tensor follows the model's device.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, replace

from . import validate
from .errors import IA2Error

DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
DTYPES = ("auto", "bf16", "fp16", "fp32")
ATTENTION = ("auto", "eager", "sdpa", "flash_attention_2")
_CUDA_N = re.compile(r"cuda:(\d+)")


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def dtype_name(dtype) -> str:
    """`torch.bfloat16` or "bf16" -> "bf16" (and fp16, fp32)."""
    if isinstance(dtype, str):
        return dtype
    import torch

    names = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    if dtype not in names:
        raise IA2Error(f"unsupported model dtype {dtype} (choose bf16, fp16 or fp32)")
    return names[dtype]


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | bf16 | fp16 | fp32
    attn_implementation: str = "auto"  # auto (sdpa on a GPU, eager on the CPU) | eager | sdpa | ...
    gradient_checkpointing: bool = False  # training: recompute activations in the backward pass
    token_budget: int | None = None  # teacher/evaluation batches: rows x padded tokens <= this

    def __post_init__(self):
        if self.device not in DEVICES and not _CUDA_N.fullmatch(str(self.device)):
            raise IA2Error(f"unknown runtime.device {self.device!r} (choose from auto, cpu, "
                           "cuda, cuda:N)")
        validate.choice("runtime.dtype", self.dtype, DTYPES)
        validate.choice("runtime.attn_implementation", self.attn_implementation, ATTENTION)
        if not isinstance(self.gradient_checkpointing, bool):
            raise IA2Error("runtime.gradient_checkpointing must be true or false, got "
                           f"{self.gradient_checkpointing!r}")
        validate.integer("runtime.token_budget", self.token_budget, low=1, optional=True)

    @property
    def torch_dtype(self):
        return torch_dtype(self.resolve().dtype)

    @property
    def on_cpu(self) -> bool:
        return self.resolve().device == "cpu"

    def resolve(self) -> "Runtime":
        """Concrete values for this machine; an IA2Error (one line) for what it cannot do.
        Resolving a resolved runtime checks it again and changes nothing."""
        import torch

        cuda = torch.cuda.is_available()
        device = self.device
        if device == "auto":
            device = "cuda" if cuda else "cpu"
        if device.startswith("cuda"):
            if not cuda:
                raise IA2Error(f"runtime.device {self.device}: no CUDA device is available "
                               "(use device: cpu or auto)")
            index = _CUDA_N.fullmatch(device)
            # under torchrun each process takes its own GPU
            n = int(index[1]) if index else int(os.environ.get("LOCAL_RANK",
                                                               torch.cuda.current_device()))
            if n >= torch.cuda.device_count():
                raise IA2Error(f"runtime.device cuda:{n}: only {torch.cuda.device_count()} CUDA "
                               "device(s) here")
            device = f"cuda:{n}"
        gpu = device != "cpu"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
        elif dtype == "bf16" and gpu and not torch.cuda.is_bf16_supported():
            raise IA2Error(f"runtime.dtype bf16: {device} does not support bf16 (use fp16 or fp32)")
        elif dtype == "fp16" and not gpu and not _cpu_fp16():
            raise IA2Error("runtime.dtype fp16: this CPU build of torch cannot run fp16 "
                           "(use bf16 or fp32)")
        attn = self.attn_implementation
        if attn == "auto":
            attn = "sdpa" if gpu else "eager"  # eager: exact on the CPU, Gemma 3's recommendation
        elif attn == "flash_attention_2":
            if importlib.util.find_spec("flash_attn") is None:
                raise IA2Error("runtime.attn_implementation flash_attention_2: the flash-attn "
                               "package is not installed (pip install flash-attn, or use sdpa)")
            if not gpu or dtype == "fp32":
                raise IA2Error("runtime.attn_implementation flash_attention_2 needs a CUDA "
                               "device and dtype bf16 or fp16")
        return replace(self, device=device, dtype=dtype, attn_implementation=attn)

    def describe(self) -> str:
        r = self.resolve()
        extra = " gradient-checkpointing" if r.gradient_checkpointing else ""
        extra += f" token-budget={r.token_budget}" if r.token_budget else ""
        return f"{r.device} {r.dtype} {r.attn_implementation}{extra}"


def _cpu_fp16() -> bool:
    import torch

    try:
        x = torch.ones(2, 2, dtype=torch.float16)
        return bool(torch.isfinite(x @ x).all())
    except RuntimeError:
        return False


def runtime_of(model) -> Runtime:
    """The runtime `load_model` stamped on `model` (through peft wrappers), else one read off
    the model itself: its parameters' device and dtype, its attention implementation."""
    stamped = getattr(model, "ia2_runtime", None)
    if isinstance(stamped, Runtime):
        return stamped
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    weight = inner.get_input_embeddings().weight if hasattr(inner, "get_input_embeddings") \
        else next(inner.parameters())
    device = weight.device
    attn = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    return Runtime(device="cpu" if device.type == "cpu" else f"cuda:{device.index or 0}",
                   dtype=dtype_name(weight.dtype),
                   attn_implementation=attn if attn in ATTENTION else "eager")


def token_batches(order: list[int], lengths: list[int], batch_size: int,
                  token_budget: int | None = None, extra: int = 0) -> list[list[int]]:
    """Consecutive runs of `order` (indices into `lengths`) as batches of at most `batch_size`
    rows whose padded size, rows x (longest length + `extra`), stays within `token_budget`.
    A row longer than the budget on its own gets a batch of one; nothing is dropped."""
    if not token_budget:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        w = max(width, lengths[i] + extra)
        if current and (len(current) >= batch_size or (len(current) + 1) * w > token_budget):
            batches.append(current)
            current, w = [], lengths[i] + extra
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches
