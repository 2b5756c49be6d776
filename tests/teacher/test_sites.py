"""Site finding and capture: the captured `attn` output is exactly the attention block's addend to
the residual stream, on every supported architecture and through a peft LoRA wrapper."""

import math
import types

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ia2.errors import IA2Error
from ia2.teacher.capture import Capture
from ia2.teacher.sites import SITES, activation_sites, decoder_layers, num_layers
from ia2.testing import ARCHITECTURES, tiny_model

LORA_TARGETS = {"gpt2": ["c_attn", "c_proj"], None: ["q_proj", "v_proj", "o_proj"]}


def _lora(model, arch):
    cfg = LoraConfig(r=4, target_modules=LORA_TARGETS.get(arch, LORA_TARGETS[None]),
                     init_lora_weights=False)  # non-zero B: the adapter really changes outputs
    return get_peft_model(model, cfg)


def _ln2(block):
    """The norm feeding the MLP (applied to the residual stream after the attention add)."""
    for name in ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2"):
        if name in dict(block.named_children()):
            return getattr(block, name)
    raise AssertionError


def _check_decomposition(model, blocks, ids):
    attn = activation_sites(model, "attn")
    mlp = activation_sites(model, "mlp")
    res = activation_sites(model, "residual")
    with Capture(attn) as ca, Capture(mlp) as cm, Capture(res) as cr, torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    gemma = hasattr(blocks[0], "post_feedforward_layernorm")
    for l, block in enumerate(blocks):
        x_in, a, m, out = hidden[l], ca.outputs[l], cm.outputs[l], cr.outputs[l]
        # what the block adds to the residual stream: Gemma 3 normalises each branch first
        a_add = block.post_attention_layernorm(a) if gemma else a
        m_add = block.post_feedforward_layernorm(m) if gemma else m
        mid = x_in + a_add
        torch.testing.assert_close(block.mlp(_ln2(block)(mid)), m, rtol=0, atol=1e-5)
        torch.testing.assert_close(mid + m_add, out, rtol=0, atol=1e-5)
        if l + 1 < len(blocks):  # the last hidden state has the final norm applied
            torch.testing.assert_close(out, hidden[l + 1], rtol=0, atol=0)
        assert a.abs().max() > 1e-3  # not a trivially zero addend


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("wrapped", [False, True])
def test_attn_is_the_residual_addend(arch, wrapped):
    model = tiny_model(arch, layers=3)
    if wrapped:
        model = _lora(model, arch)
    blocks = decoder_layers(model)
    assert len(blocks) == num_layers(model) == 3
    ids = torch.randint(3, 259, (2, 20), generator=torch.Generator().manual_seed(0))
    _check_decomposition(model, blocks, ids)


def _gpt2_attention_by_hand(block, x):
    """GPT-2 attention from its weights: causal softmax(QK^T / sqrt(d)) V, heads merged, c_proj."""
    attn = block.attn
    h = block.ln_1(x)
    q, k, v = (h @ attn.c_attn.weight + attn.c_attn.bias).split(x.shape[-1], dim=-1)
    heads = attn.num_heads
    split = lambda t: t.view(*t.shape[:2], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = x.shape[1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(s, s).triu(1).bool(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    return y @ attn.c_proj.weight + attn.c_proj.bias


def test_gpt2_attn_matches_hand_computation():
    model = tiny_model("gpt2", layers=2)
    ids = torch.randint(3, 259, (1, 12), generator=torch.Generator().manual_seed(1))
    with Capture(activation_sites(model, "attn")) as c, torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        for l, block in enumerate(decoder_layers(model)):
            ref = _gpt2_attention_by_hand(block, hidden[l])
            torch.testing.assert_close(c.outputs[l], ref, rtol=0, atol=1e-5)


def test_positions_and_gradients():
    model = _lora(tiny_model("llama"), "llama")
    ids = torch.randint(3, 259, (2, 9), generator=torch.Generator().manual_seed(2))
    pos = torch.tensor([[8, 3], [0, 5]])
    with Capture(activation_sites(model, "attn")) as full:
        model(input_ids=ids)
    with Capture(activation_sites(model, "attn"), positions=pos) as sel:
        model(input_ids=ids)
    with Capture(activation_sites(model, "attn"), positions=-1, detach=True) as last:
        model(input_ids=ids)
    for f, s, t in zip(full.outputs, sel.outputs, last.outputs):
        assert s.shape == (2, 2, 32) and t.shape == (2, 1, 32)
        torch.testing.assert_close(s[0, 0], f[0, 8]); torch.testing.assert_close(s[1, 1], f[1, 5])
        torch.testing.assert_close(t[:, 0], f[:, -1])
        assert s.requires_grad and not t.requires_grad
    # gradients reach the adapter through the captured tensor
    sum(o.pow(2).sum() for o in sel.outputs).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_hooks_removed_and_history():
    model = tiny_model("qwen2")
    sites = activation_sites(model, "residual", layers=[1])
    ids = torch.randint(3, 259, (1, 5))
    with Capture(sites, accumulate=True, detach=True) as c:
        model(input_ids=ids)
        model(input_ids=ids[:, :3])
    assert [h.shape[1] for h in c.history[0]] == [5, 3]
    assert c.outputs[0].shape[1] == 3
    model(input_ids=ids)
    assert len(c.history[0]) == 2  # no hook left behind


def test_layer_selection_and_errors():
    model = tiny_model("llama", layers=3)
    blocks = decoder_layers(model)
    assert activation_sites(model, "mlp", layers=[2, 0]) == [blocks[2].mlp, blocks[0].mlp]
    assert set(SITES) == {"attn", "residual", "mlp"}
    for bad in ([3], [-1], [0, 0], [], ["a"]):
        with pytest.raises(IA2Error):
            activation_sites(model, "attn", layers=bad)
    with pytest.raises(IA2Error, match="site"):
        activation_sites(model, "ffn")


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.mlp = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)


def test_ambiguous_or_missing_layers_are_errors():
    twice = torch.nn.Module()
    twice.config = types.SimpleNamespace(num_hidden_layers=2)
    twice.a = torch.nn.ModuleList([_Block(), _Block()])
    twice.b = torch.nn.ModuleList([_Block(), _Block()])
    with pytest.raises(IA2Error, match="unambiguously"):
        decoder_layers(twice)
    wrong_count = torch.nn.Module()
    wrong_count.config = types.SimpleNamespace(num_hidden_layers=3)
    wrong_count.a = torch.nn.ModuleList([_Block(), _Block()])
    with pytest.raises(IA2Error, match="candidates: none"):
        decoder_layers(wrong_count)
    block = _Block()
    block.attention = torch.nn.Linear(2, 2)  # two attention children: which one is the site?
    two_attn = torch.nn.Module()
    two_attn.config = types.SimpleNamespace(num_hidden_layers=1)
    two_attn.layers = torch.nn.ModuleList([block])
    with pytest.raises(IA2Error):
        decoder_layers(two_attn)
    with pytest.raises(IA2Error, match="no config"):
        decoder_layers(torch.nn.Linear(2, 2))
