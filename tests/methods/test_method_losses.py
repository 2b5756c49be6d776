"""Each loss against a hand computation: plain Python loops over tiny tensors, and per-example
unpadded forwards of a tiny model compared with the batched, padded objective."""

import math

import pytest
import torch
import torch.nn.functional as F
from methods_helpers import examples, reference_teacher, tiny_spec

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


def test_kd_full_matches_kl_div_and_ignores_padding():
    logits = torch.randn(2, 3, 6)
    teacher = torch.log_softmax(torch.randn(2, 3, 6), -1)
    teacher[0, 1, 4] = float("-inf")  # a token the teacher rules out: no mass, no NaN
    teacher[0, 1] = torch.log_softmax(teacher[0, 1], -1)
    teacher[1, 1] = float("nan")  # garbage at padding
    teacher[1, 2] = float("inf")
    lengths = [3, 1]
    expected = []
    for b, n in enumerate(lengths):
        per = []
        for t in range(n):
            q_log = torch.log_softmax(logits[b, t].double(), -1)
            p = teacher[b, t].double().exp()
            per.append(sum(p[v].item() * (math.log(p[v].item()) - q_log[v].item())
                           for v in range(6) if p[v] > 0))
        expected.append(sum(per) / n)
    got = losses.kd_full(logits, teacher, _mask(lengths, 3))
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    # the same KL as torch's kl_div (batchmean per example: every position real)
    ref = F.kl_div(torch.log_softmax(logits[:1], -1), teacher[:1].exp(), reduction="none").sum(-1)
    full = losses.kd_full(logits[:1], teacher[:1], torch.ones(1, 3, dtype=torch.bool))
    assert full.item() == pytest.approx(torch.nan_to_num(ref).mean().item(), rel=1e-5)
    # gradients flow to the student only at real positions, and stay finite
    x = logits.clone().requires_grad_()
    losses.kd_full(x, teacher, _mask(lengths, 3)).backward()
    assert torch.isfinite(x.grad).all() and torch.count_nonzero(x.grad[1, 1:]) == 0


def test_kd_full_is_zero_at_the_teacher_and_renormalises_rounded_storage():
    teacher_logits = torch.randn(2, 2, 50) * 3
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        stored = torch.log_softmax(teacher_logits, -1).to(dtype)  # rounding: mass != 1 exactly
        got = losses.kd_full(stored.float(), stored, torch.ones(2, 2, dtype=torch.bool))
        assert got.item() == pytest.approx(0.0, abs=1e-6), dtype
    student = torch.randn(2, 2, 50)
    ids = torch.arange(50).expand(2, 2, 50)
    t_logp = torch.log_softmax(teacher_logits, -1)
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert losses.kd_full(student, t_logp, mask).item() == pytest.approx(
        losses.kd_topk(student, ids, t_logp, mask).item(), rel=1e-5)  # top-k with K = V
    with pytest.raises(ValueError, match="vocabulary"):
        losses.kd_full(student[..., :49], t_logp, mask)


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


def full_teacher(model, tok, spec, exs, steps, topk=4):
    """The reference teacher with its whole distribution: top-k over all V, scattered back."""
    out = []
    for ex in exs:
        s = reference_teacher(model, tok, spec, ex, examples(3, start=200), steps, topk=len(tok))
        s.logprobs = torch.empty_like(s.topk_logprobs).scatter_(-1, s.topk_ids, s.topk_logprobs)
        s.topk_ids, s.topk_logprobs = s.topk_ids[:, :topk], s.topk_logprobs[:, :topk]
        out.append(s)
    return out


@pytest.fixture(scope="module")
def setup():
    tok, spec = tiny_tokenizer(), tiny_spec()
    model = tiny_model("llama")
    assert len(tok) == model.config.vocab_size
    train = examples(3)
    sig = full_teacher(model, tok, spec, train, steps=3)
    # different lengths so the batch has padding
    s = sig[1]
    s.response_ids, s.activations = s.response_ids[:1], s.activations[:, :1]
    s.topk_ids, s.topk_logprobs, s.logprobs = s.topk_ids[:1], s.topk_logprobs[:1], s.logprobs[:1]
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
    items = build_items(tok, spec, train, sig, "icl", activations=True, topk=True, full=True)
    batch = Collator(0)(items)
    hand = {"ia2": [], "sft": [], "kd": [], "kd_full": []}
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
        full = [sum(math.exp(lp) * (lp - logp[k, v].item()) for v, lp in enumerate(it.logprobs[k].tolist()))
                for k in range(len(it.target_ids))]
        hand["kd_full"].append(sum(full) / len(full))
    expected = {k: sum(v) / len(v) for k, v in hand.items()}
    expected["ia2+sft"] = 0.7 * expected["ia2"] + 0.3 * expected["sft"]
    assert expected["ia2"] > 0 and expected["kd_full"] > 0 and expected["kd"] > 0
    assert abs(expected["kd_full"] - expected["kd"]) > 1e-3  # so each branch is told apart
    for loss, kd, key in (("ia2", "full", "ia2"), ("sft", "full", "sft"), ("kd", "topk", "kd"),
                          ("kd", "full", "kd_full"), ("ia2+sft", "full", "ia2+sft")):
        with torch.no_grad():
            got = BoundObjective(model, Objective(loss, beta=0.3, kd=kd))(model, batch)
        assert got.item() == pytest.approx(expected[key], rel=1e-4), key


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
