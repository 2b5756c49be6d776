"""The runtime setting (ia2.runtime): resolution on this machine and on a simulated GPU, token
batching, placement by load_model, the CLI flags and YAML section, and the keys it changes."""

import dataclasses
import random

import pytest
import torch
import yaml

from ia2 import runtime as rt
from ia2.cli import build_parser
from ia2.cli.common import runtime_from_args
from ia2.config import load_experiment
from ia2.errors import IA2Error
from ia2.models import load_model
from ia2.runtime import Runtime, runtime_of, token_batches
from ia2.testing import tiny_model, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA devices, as far as resolution can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.mark.parametrize("field,value,message", [
    ("device", "gpu", "unknown runtime.device 'gpu'"),
    ("device", "cuda:x", "unknown runtime.device"),
    ("dtype", "float16", "unknown runtime.dtype 'float16'"),
    ("attn_implementation", "fast", "unknown runtime.attn_implementation 'fast'"),
    ("token_budget", 0, "runtime.token_budget must be an integer >= 1"),
    ("gradient_checkpointing", "yes", "runtime.gradient_checkpointing must be true or false"),
])
def test_bad_settings_fail_where_built_in_one_line(field, value, message):
    with pytest.raises(IA2Error, match=message) as e:
        Runtime(**{field: value})
    assert "\n" not in str(e.value)


def test_auto_on_a_cpu_machine_is_the_exact_cpu_setting(no_gpu):
    r = Runtime().resolve()
    assert (r.device, r.dtype, r.attn_implementation) == ("cpu", "fp32", "eager")
    assert r.resolve() == r  # resolving again changes nothing
    assert Runtime(dtype="bf16").resolve().dtype == "bf16"  # the CPU has bf16 kernels
    assert Runtime(dtype="fp16", attn_implementation="sdpa").resolve().attn_implementation == "sdpa"


@pytest.mark.parametrize("asked,message", [
    (dict(device="cuda"), "no CUDA device is available"),
    (dict(device="cuda:1"), "no CUDA device is available"),
    (dict(attn_implementation="flash_attention_2"), "flash"),
])
def test_what_the_machine_cannot_give_is_one_line(no_gpu, asked, message):
    with pytest.raises(IA2Error, match=message) as e:
        Runtime(**asked).resolve()
    assert "\n" not in str(e.value)


def test_fp16_on_a_cpu_without_fp16_kernels_is_refused(no_gpu, monkeypatch):
    monkeypatch.setattr(rt, "_cpu_fp16", lambda: False)
    with pytest.raises(IA2Error, match="cannot run fp16"):
        Runtime(dtype="fp16").resolve()


def test_auto_on_a_gpu_machine(two_gpus, monkeypatch):
    r = Runtime().resolve()
    assert (r.device, r.dtype, r.attn_implementation) == ("cuda:0", "bf16", "sdpa")
    assert Runtime(device="cpu").resolve() == Runtime(device="cpu", dtype="fp32",
                                                      attn_implementation="eager")
    assert Runtime(device="cuda:1").resolve().device == "cuda:1"
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun each process takes its own GPU
    assert Runtime().resolve().device == "cuda:1"
    with pytest.raises(IA2Error, match="only 2 CUDA device"):
        Runtime(device="cuda:2").resolve()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert Runtime(device="cuda:0").resolve().dtype == "fp32"  # auto without bf16: exact
    with pytest.raises(IA2Error, match="does not support bf16"):
        Runtime(dtype="bf16").resolve()


def test_flash_attention_needs_the_package_a_gpu_and_half_precision(two_gpus, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # "installed"
    assert Runtime(attn_implementation="flash_attention_2").resolve().dtype == "bf16"
    with pytest.raises(IA2Error, match="needs a CUDA device and dtype bf16 or fp16"):
        Runtime(attn_implementation="flash_attention_2", dtype="fp32").resolve()
    with pytest.raises(IA2Error, match="needs a CUDA device"):
        Runtime(attn_implementation="flash_attention_2", device="cpu", dtype="bf16").resolve()


def _check_batches(order, lengths, cap, budget, extra, batches):
    """Every constraint, and greediness, checked from the definition."""
    assert [i for b in batches for i in b] == order  # consecutive, nothing lost or repeated
    for k, b in enumerate(batches):
        size = len(b) * max(lengths[i] + extra for i in b)
        assert len(b) <= cap and (size <= budget or len(b) == 1)
        if k + 1 < len(batches):  # the next row would have broken a limit
            nxt = b + [batches[k + 1][0]]
            assert len(nxt) > cap or len(nxt) * max(lengths[i] + extra for i in nxt) > budget


def test_token_batches_respect_cap_and_budget_and_are_greedy():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(0, 30)
        lengths = [rng.randint(1, 60) for _ in range(n)]
        order = sorted(range(n), key=lambda i: (lengths[i], i), reverse=trial % 2 == 0)
        cap, budget, extra = rng.randint(1, 9), rng.randint(1, 200), rng.randint(0, 10)
        _check_batches(order, lengths, cap, budget, extra,
                       token_batches(order, lengths, cap, budget, extra))
    # no budget: fixed-size batches as before
    assert token_batches([2, 0, 1], [5, 5, 5], 2) == [[2, 0], [1]]
    # a row over the budget alone is still scored, in a batch of its own
    assert token_batches([0, 1, 2], [50, 3, 3], 8, token_budget=10) == [[0], [1, 2]]


def _saved_tiny(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return str(tmp_path)


def test_load_model_places_the_model_and_stamps_the_resolved_runtime(tmp_path, no_gpu):
    path = _saved_tiny(tmp_path)
    ref, _ = load_model(path)
    assert ref.ia2_runtime == Runtime(device="cpu", dtype="fp32", attn_implementation="eager")
    asked = Runtime(dtype="bf16", attn_implementation="sdpa", token_budget=64)
    model, tok = load_model(path, asked)
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "sdpa"
    assert model.ia2_runtime == dataclasses.replace(asked, device="cpu")
    assert runtime_of(model) is model.ia2_runtime
    assert load_model(path, dtype=torch.float16)[0].ia2_runtime.dtype == "fp16"  # override
    # the same weights, rounded: bf16 logits near the fp32 ones
    ids = torch.tensor([tok("a fine film").input_ids])
    with torch.no_grad():
        p32 = torch.softmax(ref(ids).logits.float(), -1)
        p16 = torch.softmax(model(ids).logits.float(), -1)
    assert (p32 - p16).abs().max() < 0.02
    with pytest.raises(IA2Error, match="no CUDA device"):
        load_model(path, Runtime(device="cuda"))


def test_runtime_of_an_unstamped_model_reads_it_off_the_model():
    from ia2.methods.adapters import attach

    model = tiny_model("gemma3_text").to(torch.bfloat16)
    assert runtime_of(model) == Runtime(device="cpu", dtype="bf16", attn_implementation="eager")
    wrapped = attach(model)  # peft keeps the adapter in fp32; the base's dtype is the model's
    assert runtime_of(wrapped).dtype == "bf16"
    assert {p.dtype for p in wrapped.parameters() if p.requires_grad} == {torch.float32}


def test_yaml_runtime_section_and_cli_flags(tmp_path):
    doc = {"name": "x", "tasks": ["sst2"],
           "runtime": {"device": "cuda:1", "dtype": "bf16", "gradient_checkpointing": True,
                       "token_budget": 4096}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    config = load_experiment(tmp_path / "s.yaml")
    assert config.runtime == Runtime("cuda:1", "bf16", "auto", True, 4096)
    args = build_parser("run").parse_args(["run", "s.yaml", "--dtype", "fp16",
                                           "--attn-implementation", "sdpa"])
    merged = runtime_from_args(args, config.runtime)  # flags override the YAML, the rest stays
    assert merged == Runtime("cuda:1", "fp16", "sdpa", True, 4096)
    args = build_parser("teach").parse_args(["teach", "--task", "sst2", "--device", "cpu",
                                             "--storage-dtype", "bf16", "--token-budget", "512"])
    assert runtime_from_args(args) == Runtime(device="cpu", token_budget=512)
    assert args.storage_dtype == "bf16"
    for cmd in (["eval", "--task", "sst2"], ["train", "--task", "sst2", "--method", "sft"]):
        args = build_parser(cmd[0]).parse_args([*cmd, "--dtype", "bf16"])
        assert runtime_from_args(args) == Runtime(dtype="bf16")
    doc["runtime"] = {"dtype": "half"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(IA2Error, match="unknown runtime.dtype 'half'"):
        load_experiment(tmp_path / "s.yaml")
    doc["runtime"] = {"precision": "bf16"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(IA2Error, match="unknown key 'precision'"):
        load_experiment(tmp_path / "s.yaml")


def test_cli_refuses_an_impossible_runtime_before_writing(tmp_path, capsys, no_gpu):
    from ia2.cli import main

    doc = {"name": "x", "tasks": ["sst2"], "out": str(tmp_path / "out")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "s.yaml"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
