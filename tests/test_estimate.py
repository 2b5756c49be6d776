"""The dry run's cost model (ia2.estimate) against what it models: published parameter counts,
a real model's numel, FLOPs counted by torch, and the paper's configs read offline."""

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ia2.cli import main
from ia2.estimate import MODELS, Hardware, Meter, model_size, size_from_config
from ia2.errors import IA2Error
from ia2.testing import tiny_model

PAPER = sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml"))

# config.json fields of the hub models (Qwen/Qwen3-4B-Base, meta-llama/Llama-3.2-1B)
QWEN3_4B = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, intermediate_size=9728, vocab_size=151936,
                tie_word_embeddings=True)
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                tie_word_embeddings=True)


@pytest.mark.parametrize("name,cfg", [("Qwen/Qwen3-4B-Base", QWEN3_4B),
                                      ("meta-llama/Llama-3.2-1B", LLAMA_1B)])
def test_size_from_config_recomputes_the_published_count(name, cfg):
    size = size_from_config(cfg)
    published = MODELS[name]
    # the formula leaves out the norms: 2 per layer + 1 final (+ q/k norms in Qwen3), each `hidden`
    norms = (2 * cfg["num_hidden_layers"] + 1) * cfg["hidden_size"]
    if name.startswith("Qwen"):
        norms += 2 * cfg["num_hidden_layers"] * cfg["head_dim"]
    assert published.params - size.params == norms
    assert (size.layers, size.hidden, size.vocab) == (published.layers, published.hidden,
                                                       published.vocab)


@pytest.mark.parametrize("tied", [True, False])
def test_size_from_config_matches_a_model_numel(tied):
    from transformers import AutoModelForCausalLM

    from ia2.testing import tiny_config

    config = tiny_config("llama", hidden=32, layers=3)
    config.tie_word_embeddings = tied
    model = AutoModelForCausalLM.from_config(config)
    cfg = config.to_dict()
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    numel = sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once
    assert size_from_config(cfg).params == numel - norms


def test_forward_flops_matches_torch_flop_counter():
    torch.manual_seed(0)
    model = tiny_model("llama", hidden=32, layers=2)
    size = size_from_config(model.config.to_dict())
    meter = Meter(size, Hardware())
    T = 24
    ids = torch.randint(3, 300, (1, T))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, logits_to_keep=1)
    counted = counter.get_total_flops()
    # eager attention multiplies the full T x T scores; causal attention needs half of them
    full_attention = 2 * size.layers * size.attn_dim * T * T
    expected = meter.forward_flops(T, logits=1) + full_attention
    assert counted == pytest.approx(expected, rel=0.02)


def test_cached_decoding_flops_match_torch_flop_counter():
    """One new token after c cached ones, counted by torch on a real KV-cache step."""
    torch.manual_seed(0)
    model = tiny_model("llama", hidden=32, layers=2)
    size = size_from_config(model.config.to_dict())
    meter = Meter(size, Hardware())
    c = 40
    with torch.no_grad():
        cache = model(torch.randint(3, 300, (1, c)), use_cache=True).past_key_values
        with FlopCounterMode(display=False) as counter:
            model(torch.randint(3, 300, (1, 1)), past_key_values=cache, logits_to_keep=1)
    # the formula's T² term halves the new token's score with itself (causal); eager counts it whole
    expected = meter.forward_flops(1, c) + 2 * size.layers * size.attn_dim
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.02)


def test_model_size_reads_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, '
        '"num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, '
        '"vocab_size": 128256}')
    assert model_size(str(tmp_path)) == size_from_config(LLAMA_1B)
    assert model_size("someone/not-in-the-table") is None
    (tmp_path / "config.json").write_text('{"n_embd": 64}')  # GPT-2 names: unknown, not a crash
    assert model_size(str(tmp_path)) is None
    assert model_size("meta-llama/Llama-3.2-1B-Instruct") == MODELS["meta-llama/Llama-3.2-1B"]


def test_hardware_overrides_from_env(monkeypatch):
    monkeypatch.setenv("IA2_GPU_TFLOPS", "989")
    assert Hardware.from_env().tflops == 989
    monkeypatch.setenv("IA2_GPU_TBPS", "fast")
    with pytest.raises(IA2Error, match="IA2_GPU_TBPS must be a number"):
        Hardware.from_env()


def test_faster_hardware_gives_fewer_hours(monkeypatch, capsys):
    def hours():
        assert main(["run", str(PAPER[0]), "--dry-run"]) == 0
        line = next(l for l in capsys.readouterr().out.splitlines() if "gpu_hours=" in l)
        return float(line.split("gpu_hours=")[1].split(";")[0])

    slow = hours()
    monkeypatch.setenv("IA2_GPU_TFLOPS", "989")
    monkeypatch.setenv("IA2_GPU_TBPS", "3.35")
    assert 0 < hours() < slow


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_configs_dry_run_offline_with_gpu_hours(path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    summary = next(l for l in out.splitlines() if "gpu_hours=" in l)
    fields = dict(kv.split("=") for kv in summary.split("; "))
    assert float(fields["gpu_hours"]) > 0
    assert float(fields["teacher_cache_gib"]) > 0
    assert int(fields["training_runs"]) > 0
    assert "gpu_hours = teacher" in out
