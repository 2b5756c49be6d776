import math

import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate.calibration import brier, ece, nll
from ia2.evaluate.classify import score_classification

LABEL_IDS = [3, 7]


def _logits():
    x = torch.full((3, 10), -2.0)
    x[0, 3], x[0, 7] = 4.0, 1.0  # token 3 tops the vocab: top-1 and label set say label 0
    x[1, 5], x[1, 7], x[1, 3] = 5.0, 2.0, 0.0  # token 5 tops the vocab; label set says label 1
    x[2, 3], x[2, 7] = 1.0, 1.5  # label set says 1, true label 0: wrong both ways
    return x, [0, 1, 0]


def _softmax(row):
    z = [math.exp(v) for v in row]
    return [v / sum(z) for v in z]


def test_predictions_confidences_and_accuracies():
    logits, labels = _logits()
    s = score_classification(logits, LABEL_IDS, labels, uids=["a", "b", "c"])
    assert [r["uid"] for r in s.records] == ["a", "b", "c"]
    assert [r["prediction"] for r in s.records] == [0, 1, 1]
    assert [r["top1_token"] for r in s.records] == [3, 5, 7]
    assert [r["top1_correct"] for r in s.records] == [True, False, False]
    assert [r["label_set_correct"] for r in s.records] == [True, True, False]
    for r, row in zip(s.records, logits.tolist()):
        p = _softmax(row)
        assert r["top1_confidence"] == pytest.approx(max(p))
        pair = [p[3] / (p[3] + p[7]), p[7] / (p[3] + p[7])]
        assert r["label_probs"] == pytest.approx(pair)
        assert r["label_set_confidence"] == pytest.approx(max(pair))
    assert s.metrics["accuracy"] == pytest.approx(1 / 3)
    assert s.metrics["label_set_accuracy"] == pytest.approx(2 / 3)
    assert s.metrics["n"] == 3


def test_aggregates_follow_calibration_definitions():
    logits, labels = _logits()
    s = score_classification(logits, LABEL_IDS, labels, n_bins=2)
    conf = [r["label_set_confidence"] for r in s.records]
    ok = [r["label_set_correct"] for r in s.records]
    probs = [r["label_probs"] for r in s.records]
    assert s.metrics["ece"] == pytest.approx(ece(conf, ok, 2, "equal_mass"))
    assert s.metrics["ece_equal_width"] == pytest.approx(ece(conf, ok, 2, "equal_width"))
    assert s.metrics["brier"] == pytest.approx(brier(probs, labels))
    assert s.metrics["nll"] == pytest.approx(nll(probs, labels))
    assert s.definitions["calibration"]["confidence"] == "label_set"
    assert s.definitions["calibration"]["binning"] == "equal_mass"

    top = score_classification(logits, LABEL_IDS, labels, n_bins=2, confidence="top1")
    conf1 = [r["top1_confidence"] for r in top.records]
    ok1 = [r["top1_correct"] for r in top.records]
    assert top.metrics["ece"] == pytest.approx(ece(conf1, ok1, 2))
    assert top.metrics["ece"] != pytest.approx(s.metrics["ece"])
    assert top.definitions["calibration"]["confidence"] == "top1"


def test_extreme_logits_stay_finite():
    x = torch.zeros(1, 10)
    x[0, 3] = 1e4  # float32 softmax would underflow the other label to exactly 0
    s = score_classification(x, LABEL_IDS, [1])
    assert math.isfinite(s.metrics["nll"]) and s.metrics["nll"] > 20


@pytest.mark.parametrize("label_ids,labels,shape,match", [
    ([3, 3], [0], (1, 10), "distinct"),
    ([3, 12], [0], (1, 10), "inside the vocabulary"),
    ([3, 7], [2], (1, 10), "labels must be"),
    ([3, 7], [0, 1], (1, 10), "labels"),
    ([3, 7], [0], (10,), "shape"),
    ([3, 7], [], (0, 10), "no examples"),
])
def test_bad_inputs(label_ids, labels, shape, match):
    with pytest.raises(IA2Error, match=match):
        score_classification(torch.zeros(shape), label_ids, labels)
    with pytest.raises(IA2Error, match="confidence"):
        score_classification(torch.zeros(1, 10), [3, 7], [0], confidence="max")
