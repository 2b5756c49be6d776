"""Each loss against a hand computation: plain Python loops over tiny tensors, and per-example
unpadded forwards of a tiny model compared with the batched, padded objective."""

import math

import pytest
import torch
import torch.nn.functional as F
from methods_helpers import examples, reference_teacher, teacher_data, tiny_spec

from ia2.methods import losses
from ia2.methods.adapters import AdapterConfig, attach
from ia2.methods.data import Collator, build_items
from ia2.methods.trainer import BoundObjective, Objective
from ia2.teacher.sites import activation_sites
from ia2.testing import tiny_model, tiny_tokenizer

torch.manual_seed(0)


def _mask(lengths, t):
    return torch.tensor([[i < n for i in range(t)] for n in lengths])


def test_gather_positions_picks_rows():
    x = torch.arange(2 * 5 * 3).view(2, 5, 3)
    pos = torch.tensor([[1, 4], [0, 2]])
    got = losses.gather_positions(x, pos)
    assert torch.equal(got[0, 1], x[0, 4]) and torch.equal(got[1, 0], x[1, 0])
    assert got.shape == (2, 2, 3)


def test_cross_entropy_matches_hand_computation():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 4, 0], [2, 2, 3]])
    lengths = [3, 1]
    expected = []
    for b, n in enumerate(lengths):
        nll = []
        for t in range(n):
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            nll.append(log_z - row[targets[b, t]])
        expected.append(sum(nll) / n)
    got = losses.cross_entropy(logits, targets, _mask(lengths, 3))
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_kd_topk_matches_hand_computation_and_ignores_padding():
    logits = torch.randn(2, 2, 6)
    ids = torch.tensor([[[0, 3], [5, 1]], [[2, 4], [0, 0]]])
    tlogp = torch.tensor([[[-0.5, -1.5], [-0.2, -2.0]], [[-1.0, -1.0], [0.0, float("-inf")]]])
    lengths = [2, 1]
    expected = []
    for b, n in enumerate(lengths):
        per = []
        for t in range(n):
            z = sum(math.exp(v) for v in tlogp[b, t].tolist())
            p = [math.exp(v) / z for v in tlogp[b, t].tolist()]
            row = logits[b, t].tolist()
            log_zq = math.log(sum(math.exp(v) for v in row))
            per.append(sum(pk * (math.log(pk) - (row[i] - log_zq))
                           for pk, i in zip(p, ids[b, t].tolist()) if pk > 0))
        expected.append(sum(per) / n)
    got = losses.kd_topk(logits, ids, tlogp, _mask(lengths, 2))
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_kd_with_full_vocabulary_is_the_exact_kl():
    student, teacher = torch.randn(3, 4, 7), torch.randn(3, 4, 7)
    t_logp = torch.log_softmax(teacher, -1)
    ids = torch.arange(7).expand(3, 4, 7)
    mask = torch.ones(3, 4, dtype=torch.bool)
    exact = F.kl_div(torch.log_softmax(student, -1), t_logp, log_target=True, reduction="none").sum(-1).mean()
    assert losses.kd_topk(student, ids, t_logp, mask).item() == pytest.approx(exact.item(), rel=1e-5)
    assert losses.kd_topk(teacher, ids, t_logp, mask).item() == pytest.approx(0.0, abs=1e-6)


def _hand_alignment(s, t, lengths, per_vector):
    total = 0.0
    for b, n in enumerate(lengths):
        total += sum(sum(per_vector(s[layer, b, k].tolist(), t[layer, b, k].tolist()) for k in range(n)) / n
                     for layer in range(s.shape[0]))
    return total / len(lengths)


def _mse(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _ln_mse(a, b):
    def norm(v):
        m = sum(v) / len(v)
        var = sum((x - m) ** 2 for x in v) / len(v)
        return [(x - m) / math.sqrt(var + 1e-5) for x in v]
    return _mse(norm(a), norm(b))


@pytest.mark.parametrize("kind,per_vector", [("mse", _mse), ("cosine", _cos), ("layernorm_mse", _ln_mse)])
def test_alignment_matches_hand_computation(kind, per_vector):
    s, t = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    lengths = [4, 2]
    got = losses.alignment(s, t, _mask(lengths, 4), kind)
    assert got.item() == pytest.approx(_hand_alignment(s, t, lengths, per_vector), rel=1e-5)


def test_alignment_masks_padding_exactly():
    s, t = torch.randn(2, 2, 3, 4, requires_grad=True), torch.randn(2, 2, 3, 4)
    mask = _mask([3, 1], 3)
    base = losses.alignment(s, t, mask)
    base.backward()
    assert torch.count_nonzero(s.grad[:, 1, 1:]) == 0  # padded positions get no gradient
    s2 = s.detach().clone()
    s2[:, 1, 1:] = 1e6  # garbage at padding changes nothing
    assert losses.alignment(s2, t, mask).item() == base.item()
    with pytest.raises(ValueError):
        losses.alignment(s, t, mask, "l1")


def test_ia2_sft_mixes_with_beta():
    a, c = torch.tensor(2.0), torch.tensor(10.0)
    assert losses.ia2_sft(a, c, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 10)


# --- on a tiny model: the batched, padded objective equals unpadded per-example forwards ---


@pytest.fixture(scope="module")
def setup():
    tok, spec = tiny_tokenizer(), tiny_spec()
    model = tiny_model("llama")
    train, sig, _, _ = teacher_data(model, tok, spec, n_train=3, n_dev=1, steps=3)
    # different lengths so the batch has padding
    sig[1].response_ids, sig[1].activations = sig[1].response_ids[:1], sig[1].activations[:, :1]
    sig[1].topk_ids, sig[1].topk_logprobs = sig[1].topk_ids[:1], sig[1].topk_logprobs[:1]
    return tok, spec, model, train, sig


def _per_example(model, item, offset=0):
    """One unpadded forward: site outputs and logits at the item's aligned positions."""
    sites = activation_sites(model, "attn")
    outs = []
    hs = [m.register_forward_hook(lambda mod, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
          for m in sites]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([item.input_ids])).logits[0]
    for h in hs:
        h.remove()
    pos = list(range(item.start + offset, item.start + offset + len(item.target_ids)))
    return torch.stack([o[0, pos] for o in outs]), logits[pos]


@pytest.mark.parametrize("adapter", ["lora", "prompt"])
def test_objectives_on_tiny_model_equal_hand_computation(setup, adapter):
    tok, spec, base, train, sig = setup
    model = attach(tiny_model("llama"), AdapterConfig(kind=adapter))
    offset = 8 if adapter == "prompt" else 0
    with torch.no_grad():  # a non-trivial adapter (LoRA's B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    items = build_items(tok, spec, train, sig, "icl", activations=True, topk=True)
    batch = Collator(0)(items)
    hand = {"ia2": [], "sft": [], "kd": []}
    for it in items:
        acts, logits = _per_example(model, it, offset)
        hand["ia2"].append(sum(sum(_mse(acts[layer, k].tolist(), it.activations[layer, k].tolist())
                                   for k in range(len(it.target_ids))) / len(it.target_ids)
                               for layer in range(acts.shape[0])))
        logp = torch.log_softmax(logits, -1)
        hand["sft"].append(-sum(logp[k, tgt].item() for k, tgt in enumerate(it.target_ids)) / len(it.target_ids))
        kd = []
        for k in range(len(it.target_ids)):
            p = torch.softmax(it.topk_logprobs[k], -1).tolist()
            kd.append(sum(pk * (math.log(pk) - logp[k, i].item()) for pk, i in zip(p, it.topk_ids[k].tolist())))
        hand["kd"].append(sum(kd) / len(kd))
    expected = {k: sum(v) / len(v) for k, v in hand.items()}
    expected["ia2+sft"] = 0.7 * expected["ia2"] + 0.3 * expected["sft"]
    assert expected["ia2"] > 0
    for loss in ("ia2", "sft", "kd", "ia2+sft"):
        with torch.no_grad():
            got = BoundObjective(model, Objective(loss, beta=0.3))(model, batch)
        assert got.item() == pytest.approx(expected[loss], rel=1e-4), loss


def test_ia2_loss_is_zero_when_student_sees_the_demonstrations(setup):
    """Sanity of the alignment: teacher signals from the same model WITHOUT demonstrations are
    exactly the student's activations, so the loss at LoRA's zero init is zero."""
    tok, spec, base, train, _ = setup
    sig = [reference_teacher(base, tok, spec, ex, [], steps=2) for ex in train]
    items = build_items(tok, spec, train, sig, "icl", activations=True)
    model = attach(tiny_model("llama"), AdapterConfig())
    with torch.no_grad():
        got = BoundObjective(model, Objective("ia2"))(model, Collator(0)(items))
    assert got.item() == pytest.approx(0.0, abs=1e-10)
    with_demos = build_items(tok, spec, train, [reference_teacher(base, tok, spec, ex, examples(3, 50))
                                                for ex in train], "icl", activations=True)
    with torch.no_grad():
        assert BoundObjective(model, Objective("ia2"))(model, Collator(0)(with_demos)).item() > 1e-6
