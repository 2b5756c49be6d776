"""Data parallel training: 2 CPU processes under torchrun (gloo) with per-device batch 2 end with
identical adapters on both ranks, equal to one process with batch 4."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def _run(cmd, cwd):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(SCRIPT), str(one)], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(two)], tmp_path)
    single = load_file(one / "rank0.safetensors")
    r0, r1 = load_file(two / "rank0.safetensors"), load_file(two / "rank1.safetensors")
    assert single.keys() == r0.keys() == r1.keys() and single
    for k in single:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the ranks in lockstep
        assert torch.allclose(r0[k], single[k], atol=1e-5, rtol=1e-4), (k, (r0[k] - single[k]).abs().max())
    assert not torch.allclose(single[next(k for k in single if "lora_B" in k)], torch.zeros(1))
    assert (two / "run" / "run.json").is_file() and (two / "run" / "adapter").is_dir()


@pytest.mark.slow
def test_ia2_alone_with_ia3_trains_under_ddp(tmp_path):
    """IA2 alone leaves IA3's last MLP scale out of the loss: DDP must be told about unused
    parameters, or the gradient reduction would fail."""
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(tmp_path), "ia2", "ia3"], tmp_path)
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(not torch.equal(v, torch.ones_like(v)) for v in r0.values())  # IA3 starts at ones
