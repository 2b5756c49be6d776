"""On a CUDA device (marked `gpu`; skipped where there is none, see tests/conftest.py): the teacher
against the naive per-token teacher, a bf16 training step, evaluation with prefix reuse, and a
two-process run when two GPUs exist. References run on the CPU in fp32."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ia2.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parent / "teacher"))
sys.path.insert(0, str(Path(__file__).parent / "methods"))

pytestmark = pytest.mark.gpu

TEXTS = ["The movie was a delight from start to finish, honestly.", "Dull.",
         "An ambitious, sprawling, occasionally brilliant mess of a film about nothing much."]


def _on_gpu(model, dtype="fp32", attn="eager"):
    """A copy of `model` placed as load_model would place it."""
    runtime = Runtime(device="cuda", dtype=dtype, attn_implementation=attn).resolve()
    gpu = copy.deepcopy(model).to(device=runtime.device, dtype=runtime.torch_dtype)
    gpu.config._attn_implementation = runtime.attn_implementation
    gpu.ia2_runtime = runtime
    return gpu


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_teacher_on_cuda_matches_the_naive_cpu_teacher(arch, attn):
    from teacher_naive import naive_teacher

    from ia2.teacher.collect import TeacherConfig, teach
    from ia2.testing import tiny_model, tiny_tokenizer

    cpu, tok = tiny_model(arch, layers=6 if arch == "gemma3_text" else 2), tiny_tokenizer()
    gpu = _on_gpu(cpu, attn=attn)
    prompts = [tok(t)["input_ids"] for t in TEXTS]
    cfg = TeacherConfig(max_new_tokens=8, stop=(), topk=5, dtype="fp32", batch_size=3)
    for p, sig in zip(prompts, teach(gpu, tok, prompts, cfg, eos=[])):
        ids, acts, top_ids, top_lp = naive_teacher(cpu, tok, p, 8)
        assert sig.activations.device.type == "cpu"  # signals come back for the cache
        assert sig.response_ids.tolist() == ids.tolist()
        assert (sig.activations - acts).abs().max() <= 1e-4 * acts.abs().max()
        torch.testing.assert_close(sig.topk_logprobs, top_lp, rtol=0, atol=1e-4)


def test_bf16_training_step_on_cuda(tmp_path):
    from methods_helpers import teacher_data, tiny_spec
    from transformers import set_seed

    from ia2.methods.adapters import AdapterConfig, attach
    from ia2.methods.data import Collator, ItemDataset, build_items
    from ia2.methods.trainer import Objective, TrainConfig, train_stage
    from ia2.testing import tiny_model, tiny_tokenizer

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    tok, spec = tiny_tokenizer(), tiny_spec()
    train, st, dev, sd = teacher_data(tiny_model("llama"), tok, spec, n_train=8, n_dev=4, steps=2)
    mk = lambda ex, sig: ItemDataset(build_items(tok, spec, ex, sig, "icl", activations=True))  # noqa: E731
    curves = {}
    for name, place in (("cpu", lambda m: m), ("cuda", lambda m: _on_gpu(m, "bf16", "sdpa"))):
        set_seed(0)
        model = attach(place(tiny_model("llama")), AdapterConfig())
        result = train_stage(model, Objective("ia2+sft"), mk(train, st), mk(dev, sd), Collator(0),
                             TrainConfig(lr=1e-2, epochs=1, eval_steps=1, progress=False),
                             tmp_path / name)
        curves[name] = result.train_curve + result.dev_curve
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert {p.dtype for p in trainable} == {torch.float32}
        assert {p.device.type for p in trainable} == {name}  # trained where it was placed
    for (_, a), (_, b) in zip(curves["cpu"], curves["cuda"]):
        assert b == b and abs(a - b) <= 0.03 * abs(a)


@pytest.mark.parametrize("dtype,tolerance", [("fp32", 1e-4), ("bf16", 0.02)])
def test_evaluation_with_prefix_reuse_on_cuda(dtype, tolerance):
    import random

    from ia2.evaluate.icl import full_prompt_logits, next_token_logits
    from ia2.testing import tiny_model

    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cpu = tiny_model("gemma3_text")
    gpu = _on_gpu(cpu, dtype)
    rng = random.Random(0)
    prefix = [1] + [rng.randrange(3, 259) for _ in range(40)]
    queries = [[rng.randrange(3, 259) for _ in range(n)] for n in (1, 9, 25, 3, 17)]
    with torch.no_grad():
        ref = torch.stack([cpu(input_ids=torch.tensor([prefix + q])).logits[0, -1]
                           for q in queries])
    got = next_token_logits(gpu, prefix, queries, batch_size=2)
    whole = full_prompt_logits(gpu, [prefix + q for q in queries], batch_size=3)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    for out in (got, whole):
        diff = (torch.softmax(out, -1) - torch.softmax(ref, -1)).abs().max()
        assert diff <= tolerance, diff


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_processes_on_two_gpus_match_one(tmp_path):
    from safetensors.torch import load_file

    script = Path(__file__).with_name("gpu_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd, out in (([sys.executable, str(script)], tmp_path / "one"),
                     ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", "2", str(script)], tmp_path / "two")):
        done = subprocess.run([*cmd, str(out)], capture_output=True, text=True, timeout=900,
                              env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    single = load_file(tmp_path / "one" / "rank0.safetensors")
    r0 = load_file(tmp_path / "two" / "rank0.safetensors")
    r1 = load_file(tmp_path / "two" / "rank1.safetensors")
    assert single.keys() == r0.keys() == r1.keys() and single
    for k in single:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.allclose(r0[k], single[k], atol=1e-4, rtol=1e-3), k
