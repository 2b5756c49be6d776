"""Training items and the collator: token layout, aligned positions, padding and bad input."""

import pytest
import torch
from methods_helpers import examples, tiny_spec

from ia2.errors import IA2Error
from ia2.methods.data import Collator, build_items
from ia2.tasks.prompts import encode, encode_answer, render_query
from ia2.teacher.signals import TeacherSignals
from ia2.testing import tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()


def _signals(lengths, layers=2, hidden=4, k=3):
    return [TeacherSignals(torch.arange(10, 10 + n), torch.randn(layers, n, hidden),
                           torch.randint(0, 50, (n, k)), torch.randn(n, k)) for n in lengths]


def test_icl_item_is_query_plus_response_with_aligned_start():
    ex = examples(1)
    sig = _signals([3])
    (item,) = build_items(TOK, SPEC, ex, sig, "icl", activations=True, topk=True)
    query = [1] + encode(TOK, render_query(SPEC, ex[0]))  # <bos> + query text
    assert item.input_ids == query + [10, 11]  # the last response token is never an input
    assert item.start == len(query) - 1  # the last query token predicts the first response token
    assert item.target_ids == [10, 11, 12]
    assert torch.equal(item.activations, sig[0].activations)


def test_ground_truth_item_uses_encode_answer_and_needs_no_signals():
    ex = examples(2)
    items = build_items(TOK, SPEC, ex, None, "ground_truth")
    for it, e in zip(items, ex):
        assert it.target_ids == encode_answer(TOK, SPEC, e)
        assert it.input_ids[it.start + 1:] == it.target_ids[:-1]


def test_collator_pads_and_masks():
    ex = examples(2)
    sig = _signals([3, 1])
    sig[1].topk_ids, sig[1].topk_logprobs = sig[1].topk_ids[:, :2], sig[1].topk_logprobs[:, :2]
    items = build_items(TOK, SPEC, ex, sig, "icl", activations=True, topk=True)
    b = Collator(pad_id=0)(items)
    assert "labels" not in b
    n0, n1 = len(items[0].input_ids), len(items[1].input_ids)
    assert b["input_ids"].shape == (2, max(n0, n1))
    assert b["attention_mask"].sum(1).tolist() == [n0, n1]
    assert b["target_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["positions"][0].tolist() == [items[0].start + i for i in range(3)]
    for i, it in enumerate(items):  # each aligned position's next input token is its target
        for t in range(len(it.target_ids) - 1):
            assert b["input_ids"][i, b["positions"][i, t] + 1] == it.target_ids[t]
    assert b["teacher_activations"].shape == (2, 2, 3, 4)
    assert torch.equal(b["teacher_activations"][1, :, 1:], torch.zeros(2, 2, 4))
    assert torch.isinf(b["topk_logprobs"][1, 0, 2])  # a shorter top-k pads with zero mass
    assert torch.equal(b["topk_logprobs"][1, 0, :2], sig[1].topk_logprobs[0])


def test_collator_carries_the_full_distribution_in_its_stored_dtype():
    ex = examples(2)
    sig = _signals([3, 1])
    for s in sig:
        s.logprobs = torch.log_softmax(torch.randn(s.length, 50), -1).half()
    items = build_items(TOK, SPEC, ex, sig, "icl", full=True)
    assert items[0].topk_ids is None and torch.equal(items[1].logprobs, sig[1].logprobs)
    b = Collator(pad_id=0)(items)
    assert "topk_ids" not in b and b["teacher_logprobs"].shape == (2, 3, 50)
    assert b["teacher_logprobs"].dtype == torch.float16
    assert torch.equal(b["teacher_logprobs"][0], sig[0].logprobs)
    assert torch.equal(b["teacher_logprobs"][1, :1], sig[1].logprobs)
    assert torch.equal(b["teacher_logprobs"][1, 1:], torch.zeros(2, 50, dtype=torch.float16))
    sig[1].logprobs = sig[1].logprobs[:, :40]
    with pytest.raises(IA2Error, match="vocabulary size"):
        build_items(TOK, SPEC, ex, sig, "icl", full=True)


@pytest.mark.parametrize("case,message", [
    ("count", "2 examples but 1 teacher signals"),
    ("length", "expected 2 aligned positions"),
    ("empty", "empty icl target"),
    ("no_topk", "no top-k"),
    ("no_full", "no full distribution; kd=full needs the teacher collected with full_distribution"),
    ("layers", "disagree"),
])
def test_bad_signals_fail_with_one_clear_error(case, message):
    ex = examples(2)
    sig = _signals([2, 2])
    kw = {"activations": True}
    if case == "count":
        sig = sig[:1]
    elif case == "length":
        sig[1].activations = sig[1].activations[:, :1]
    elif case == "empty":
        sig[0] = TeacherSignals(torch.tensor([], dtype=torch.long), torch.zeros(2, 0, 4))
    elif case == "no_topk":
        sig[0].topk_ids = None
        kw = {"topk": True}
    elif case == "no_full":
        kw = {"full": True}
    elif case == "layers":
        sig[1].activations = torch.randn(3, 2, 4)
    with pytest.raises(IA2Error, match=message) as err:
        build_items(TOK, SPEC, ex, sig, "icl", **kw)
    assert "\n" not in str(err.value)
    with pytest.raises(IA2Error, match="unknown target"):
        build_items(TOK, SPEC, ex, sig, "gold")
