"""How much two LoRA adapters write into the same directions (the paper's subspace overlap).

For each adapted module with LoRA factors A [r, d_in] and B [d_out, r] in both adapters:
U_i = the top-`rank` left singular vectors of B_i (or of the update B_i @ A_i, `of="update"`),
overlap = ||U_1^T U_2||_F^2 / rank, in [0, 1]: 1 for the same subspace, 0 for orthogonal ones.
Beside it, the random-subspace baseline: two independent uniformly random rank-r subspaces of
R^d have E[overlap] = r / d ("expected"), and an empirical mean over seeded random orthonormal
bases ("empirical").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import IA2Error

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
ADAPTER_FILE = "adapter_model.safetensors"


def lora_factors(adapter) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (A, B) from a peft state dict (saved or in-memory, with or without the
    adapter name) or from a directory / file holding `adapter_model.safetensors` (a directory
    is verified first, see `ia2.methods.integrity`)."""
    if isinstance(adapter, (str, os.PathLike)):
        path = Path(adapter)
        weights = path / ADAPTER_FILE if path.is_dir() else path
        if not weights.is_file():
            raise IA2Error(f"{weights}: no LoRA adapter weights here")
        if path.is_dir():
            from ..methods.integrity import verify_adapter

            verify_adapter(path)
        path = weights
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise IA2Error(f"adapter file {path} is damaged ({str(e).splitlines()[0]})") from None
    else:
        state = adapter
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m:
            found.setdefault(m["module"], {})[m["which"]] = value
    pairs = {k: (v["A"], v["B"]) for k, v in found.items() if len(v) == 2}
    if not pairs:
        raise IA2Error(f"{adapter if not isinstance(adapter, dict) else 'state dict'}: "
                       "no LoRA A/B weight pairs found")
    return pairs


def top_left_singular(matrix, rank: int) -> np.ndarray:
    """[d, rank] orthonormal basis of the top-`rank` left singular directions."""
    m = np.asarray(matrix, dtype=np.float64)
    if rank < 1 or rank > min(m.shape):
        raise IA2Error(f"rank {rank} out of range for a {m.shape[0]}x{m.shape[1]} matrix")
    u, _, _ = np.linalg.svd(m, full_matrices=False)
    return u[:, :rank]


def overlap(u1: np.ndarray, u2: np.ndarray) -> float:
    """||U1^T U2||_F^2 / r for two [d, r] orthonormal bases."""
    if u1.shape != u2.shape:
        raise IA2Error(f"bases of different shapes {u1.shape} and {u2.shape}")
    return float(np.sum((u1.T @ u2) ** 2) / u1.shape[1])


def random_overlap(d: int, rank: int, trials: int = 100, seed: int = 0) -> float:
    """Mean overlap of pairs of random rank-`rank` subspaces of R^d (QR of Gaussian matrices)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(trials):
        q1, _ = np.linalg.qr(rng.standard_normal((d, rank)))
        q2, _ = np.linalg.qr(rng.standard_normal((d, rank)))
        vals.append(overlap(q1, q2))
    return float(np.mean(vals))


def subspace_overlap(adapter_1, adapter_2, rank: int | None = None, of: str = "B",
                     trials: int = 100, seed: int = 0) -> dict[str, dict]:
    """Per shared module: {"overlap", "random_expected", "random_empirical", "rank", "dim"}.

    `rank` defaults to the smaller LoRA rank of the two; `of` is "B" or "update" (B @ A).
    """
    if of not in ("B", "update"):
        raise IA2Error(f"subspace of {of!r}: choose 'B' or 'update'")
    if all(isinstance(a, (str, os.PathLike)) for a in (adapter_1, adapter_2)):
        from ..methods.integrity import recorded_base

        bases = [recorded_base(a) for a in (adapter_1, adapter_2) if Path(a).is_dir()]
        if len(bases) == 2 and None not in bases and bases[0] != bases[1]:
            raise IA2Error(f"adapters {adapter_1} and {adapter_2} were trained on different "
                           f"base models ({bases[0]}, {bases[1]}): their subspaces do not compare")
    f1, f2 = lora_factors(adapter_1), lora_factors(adapter_2)
    shared = sorted(set(f1) & set(f2))
    if not shared:
        raise IA2Error("the two adapters share no LoRA modules")
    out = {}
    baselines: dict[tuple[int, int], float] = {}
    for name in shared:
        mats = []
        for a, b in (f1[name], f2[name]):
            b = b.detach().double().cpu().numpy()
            mats.append(b if of == "B" else b @ a.detach().double().cpu().numpy())
        if mats[0].shape[0] != mats[1].shape[0]:
            raise IA2Error(f"module {name}: output sizes differ ({mats[0].shape[0]} vs "
                           f"{mats[1].shape[0]})")
        d = mats[0].shape[0]
        r = rank or min(f1[name][1].shape[1], f2[name][1].shape[1])
        u1, u2 = top_left_singular(mats[0], r), top_left_singular(mats[1], r)
        if (d, r) not in baselines:
            baselines[(d, r)] = random_overlap(d, r, trials, seed)
        out[name] = {"overlap": overlap(u1, u2), "random_expected": r / d,
                     "random_empirical": baselines[(d, r)], "rank": r, "dim": d}
    return out
