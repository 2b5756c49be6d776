"""Adapters: the paper's LoRA targets per architecture, every kind saved in PEFT format and
loaded back by `PeftModel.from_pretrained` with identical outputs."""

import pytest
import torch
from peft import PeftModel

from ia2.errors import IA2Error
from ia2.methods.adapters import AdapterConfig, attach, attention_targets, position_offset
from ia2.testing import ARCHITECTURES, tiny_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_adapts_exactly_the_attention_q_k_o_projections(arch):
    model = attach(tiny_model(arch), AdapterConfig())
    adapted = sorted({n.split(".lora_A")[0].split("base_model.model.")[-1]
                      for n, _ in model.named_parameters() if ".lora_A" in n})
    if arch == "gpt2":
        expected = [f"transformer.h.{i}.attn.{m}" for i in range(2) for m in ("c_attn", "c_proj")]
        assert not any("mlp" in a for a in adapted)
    else:
        expected = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("k_proj", "o_proj", "q_proj")]
    assert adapted == sorted(expected)
    cfg = model.active_peft_config
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 8, 0.0)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())


def test_attention_targets_names():
    assert attention_targets(tiny_model("gpt2")) == ["attn.c_attn", "attn.c_proj"]
    assert attention_targets(tiny_model("qwen2")) == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj"]


@pytest.mark.parametrize("kind", ["lora", "ia3", "prompt", "prefix"])
def test_every_adapter_round_trips_through_peft_format(kind, tmp_path):
    model = attach(tiny_model("llama"), AdapterConfig(kind=kind))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    ids = torch.randint(3, 200, (2, 6))
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
        base = tiny_model("llama")(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path).eval()
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    if kind != "prompt":  # a prompt-tuned model's outputs include its virtual positions
        assert not torch.allclose(got, base, atol=1e-3)
    assert position_offset(loaded) == (8 if kind == "prompt" else 0)


def test_unknown_adapter_is_a_clear_error():
    with pytest.raises(IA2Error, match="unknown adapter"):
        attach(tiny_model("llama"), AdapterConfig(kind="dora"))


def test_a_second_adapter_on_the_same_model_is_refused():
    model = attach(tiny_model("llama"), AdapterConfig())
    with pytest.raises(IA2Error, match="already carries an adapter"):
        attach(model, AdapterConfig())


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("kind", ["lora", "ia3", "prompt", "prefix"])
def test_every_adapter_trains_on_the_combined_objective_on_every_architecture(arch, kind):
    """ia2+sft needs both the captured activations and the logits: gradients must reach the
    adapter, and the loss must be finite, for every pair."""
    from methods_helpers import teacher_data, tiny_spec

    from ia2.methods.data import Collator, build_items
    from ia2.methods.trainer import BoundObjective, Objective
    from ia2.testing import tiny_tokenizer

    tok, spec = tiny_tokenizer(), tiny_spec()
    train, sig, _, _ = teacher_data(tiny_model(arch), tok, spec, n_train=2, n_dev=0, steps=2)
    model = attach(tiny_model(arch), AdapterConfig(kind=kind))
    batch = Collator(0)(build_items(tok, spec, train, sig, "icl", activations=True))
    loss = BoundObjective(model, Objective("ia2+sft"))(model, batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and grads and all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
