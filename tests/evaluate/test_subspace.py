import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ia2.errors import IA2Error
from ia2.evaluate.subspace import (lora_factors, overlap, random_overlap, subspace_overlap,
                                   top_left_singular)

D_OUT, D_IN, R = 12, 10, 2
MOD = "base_model.model.model.layers.0.self_attn.q_proj"


def _basis(*vectors):
    return torch.tensor(np.stack(vectors, axis=1), dtype=torch.float32)


def _e(i, d=D_OUT):
    v = np.zeros(d)
    v[i] = 1.0
    return v


def _adapter(b, a=None, named=False):
    a = torch.randn(b.shape[1], D_IN, generator=torch.Generator().manual_seed(5)) if a is None else a
    mid = ".default" if named else ""
    return {f"{MOD}.lora_A{mid}.weight": a, f"{MOD}.lora_B{mid}.weight": b}


def _mix(b, seed):
    """Same column space, different basis: B @ (random invertible r x r)."""
    g = torch.Generator().manual_seed(seed)
    return b @ (torch.randn(b.shape[1], b.shape[1], generator=g) + 3 * torch.eye(b.shape[1]))


def test_identical_span_gives_one():
    b = _basis(_e(0), _e(3))
    res = subspace_overlap(_adapter(_mix(b, 1)), _adapter(_mix(b, 2), named=True))
    assert res[MOD]["overlap"] == pytest.approx(1.0)
    assert res[MOD]["rank"] == R and res[MOD]["dim"] == D_OUT


def test_orthogonal_gives_zero_and_partial_overlaps():
    one = _adapter(_basis(_e(0), _e(1)))
    assert subspace_overlap(one, _adapter(_basis(_e(2), _e(3))))[MOD]["overlap"] == pytest.approx(0, abs=1e-12)
    # share one of two directions -> 1/2
    assert subspace_overlap(one, _adapter(_basis(_e(0), _e(5))))[MOD]["overlap"] == pytest.approx(0.5)
    # rank 1, rotated by theta -> cos^2 theta
    theta = 0.3
    b1 = _basis(_e(0))
    b2 = _basis(math.cos(theta) * _e(0) + math.sin(theta) * _e(1))
    got = subspace_overlap(_adapter(b1), _adapter(b2))[MOD]["overlap"]
    assert got == pytest.approx(math.cos(theta) ** 2)


def test_update_option_and_rank_choice():
    # B spans e0 (scale 10) and e1 (scale 1); with rank 1 only the stronger direction counts
    b1 = _basis(10 * _e(0), _e(1))
    b2 = _basis(_e(1), 10 * _e(0))
    a = torch.eye(R, D_IN)
    assert subspace_overlap(_adapter(b1, a), _adapter(b2, a), rank=1)[MOD]["overlap"] == pytest.approx(1.0)
    b3 = _basis(_e(0), 10 * _e(1))
    assert subspace_overlap(_adapter(b1, a), _adapter(b3, a), rank=1)[MOD]["overlap"] == pytest.approx(0, abs=1e-12)
    # the update B @ A: A scaling its second row flips which direction dominates
    a_flip = torch.diag(torch.tensor([1.0, 100.0])) @ a
    got = subspace_overlap(_adapter(b1, a), _adapter(b1, a_flip), rank=1, of="update")
    assert got[MOD]["overlap"] == pytest.approx(0, abs=1e-12)
    assert subspace_overlap(_adapter(b1, a), _adapter(b1, a_flip), rank=1)[MOD]["overlap"] == pytest.approx(1)


def test_random_baseline():
    res = subspace_overlap(_adapter(_basis(_e(0), _e(1))), _adapter(_basis(_e(2), _e(3))),
                           trials=200, seed=0)[MOD]
    assert res["random_expected"] == pytest.approx(R / D_OUT)
    assert res["random_empirical"] == pytest.approx(R / D_OUT, abs=0.03)
    assert random_overlap(64, 4, 300, seed=1) == pytest.approx(4 / 64, abs=0.01)
    assert random_overlap(64, 4, 10, seed=1) == random_overlap(64, 4, 10, seed=1)


def test_directory_and_file_loading(tmp_path):
    b = _basis(_e(0), _e(1))
    d = tmp_path / "adapter"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in _adapter(b).items()}, str(d / "adapter_model.safetensors"))
    pairs = lora_factors(d)
    assert list(pairs) == [MOD] and pairs[MOD][1].shape == (D_OUT, R)
    assert subspace_overlap(d, d / "adapter_model.safetensors")[MOD]["overlap"] == pytest.approx(1)


def test_helpers_and_errors(tmp_path):
    u = top_left_singular(np.diag([3.0, 2.0, 1.0]), 2)
    assert overlap(u, u) == pytest.approx(1.0)
    with pytest.raises(IA2Error, match="rank"):
        top_left_singular(np.eye(3), 4)
    with pytest.raises(IA2Error, match="no LoRA"):
        lora_factors({"model.embed.weight": torch.zeros(2, 2)})
    with pytest.raises(IA2Error, match="no LoRA adapter"):
        lora_factors(tmp_path)
    other = {"x.lora_A.weight": torch.zeros(R, D_IN), "x.lora_B.weight": torch.zeros(D_OUT, R)}
    with pytest.raises(IA2Error, match="share no"):
        subspace_overlap(_adapter(_basis(_e(0), _e(1))), other)
    with pytest.raises(IA2Error, match="update"):
        subspace_overlap(other, other, of="A")
