import math

import numpy as np
import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate import calibration as cal

torchmetrics = pytest.importorskip("torchmetrics.classification")


def _random_probs(n, k, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), rng.integers(0, k, size=n)


@pytest.mark.parametrize("seed,n_bins", [(0, 15), (1, 10), (2, 5)])
def test_equal_width_matches_torchmetrics_multiclass(seed, n_bins):
    probs, y = _random_probs(500, 4, seed)
    conf, correct = probs.max(1), probs.argmax(1) == y
    for norm, ours in (("l1", cal.ece), ("max", cal.mce)):
        ref = torchmetrics.MulticlassCalibrationError(num_classes=4, n_bins=n_bins, norm=norm)
        expected = ref(torch.tensor(probs), torch.tensor(y)).item()
        # torchmetrics computes in float32 here; a misplaced example would move ECE by ~1e-3
        assert ours(conf, correct, n_bins, "equal_width") == pytest.approx(expected, abs=1e-6)


def test_equal_width_matches_torchmetrics_binary():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p ** 2).astype(int)  # miscalibrated on purpose
    ref = torchmetrics.BinaryCalibrationError(n_bins=15, norm="l1")
    expected = ref(torch.tensor(p), torch.tensor(y)).item()
    assert expected > 0.05
    assert cal.ece(p, y == 1, 15, "equal_width") == pytest.approx(expected, abs=1e-9)


def test_equal_mass_hand_computed():
    # sorted: (.1,F) (.2,F) | (.3,T) (.4,T) | (.6,T) (.9,T); given shuffled
    conf = [0.9, 0.3, 0.1, 0.6, 0.2, 0.4]
    correct = [True, True, False, True, False, True]
    # gaps .15, .65, .25, each bin holds 2 of 6
    assert cal.ece(conf, correct, 3, "equal_mass") == pytest.approx((0.15 + 0.65 + 0.25) / 3)
    assert cal.mce(conf, correct, 3, "equal_mass") == pytest.approx(0.65)
    bins = cal.reliability(conf, correct, 3, "equal_mass")
    assert [(b.lower, b.upper, b.count) for b in bins] == [(0.1, 0.2, 2), (0.3, 0.4, 2), (0.6, 0.9, 2)]
    assert [b.accuracy for b in bins] == [0.0, 1.0, 1.0]
    assert [b.confidence for b in bins] == pytest.approx([0.15, 0.35, 0.75])


def test_equal_mass_uneven_and_fewer_examples_than_bins():
    conf = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    correct = [False, True, True, False, True, True, True]
    bins = cal.reliability(conf, correct, 3, "equal_mass")
    assert [b.count for b in bins] == [3, 2, 2]
    # bins: {.5,.6,.7} acc 2/3 conf .6 ; {.8,.9} acc .5 conf .85 ; {.95,.99} acc 1 conf .97
    expected = (3 * abs(2 / 3 - 0.6) + 2 * abs(0.5 - 0.85) + 2 * abs(1 - 0.97)) / 7
    assert cal.ece(conf, correct, 3) == pytest.approx(expected)
    # one example per bin when N < n_bins: ECE is the mean |correct - confidence|
    few = cal.reliability([0.2, 0.7], [True, False], 15, "equal_mass")
    assert len(few) == 2
    assert cal.ece([0.2, 0.7], [True, False], 15) == pytest.approx((0.8 + 0.7) / 2)


def test_equal_mass_against_loop_reference():
    probs, y = _random_probs(203, 3, 7)
    conf, correct = probs.max(1), probs.argmax(1) == y
    order = sorted(range(len(conf)), key=lambda i: conf[i])
    size, extra = divmod(len(conf), 15)
    total, start = 0.0, 0
    for b in range(15):
        members = order[start : start + size + (b < extra)]
        start += len(members)
        acc = sum(correct[i] for i in members) / len(members)
        mean = sum(conf[i] for i in members) / len(members)
        total += len(members) * abs(acc - mean)
    assert cal.ece(conf, correct) == pytest.approx(total / len(conf), abs=1e-12)


def test_perfect_calibration_has_zero_ece():
    conf = [1.0] * 5
    assert cal.ece(conf, [True] * 5) == 0.0
    assert cal.ece(conf, [True] * 5, binning="equal_width") == 0.0


def test_brier_and_nll_hand_computed():
    probs = [[0.7, 0.3], [0.2, 0.8]]
    labels = [0, 0]
    assert cal.brier(probs, labels) == pytest.approx(((0.3**2 * 2) + (0.8**2 * 2)) / 2)
    assert cal.nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.2)) / 2)
    assert cal.nll([[1.0, 0.0]], [1]) == pytest.approx(-math.log(cal.PROB_FLOOR))
    assert cal.brier([[0.0, 1.0, 0.0]], [1]) == 0.0


def test_report_records_definitions():
    probs, y = _random_probs(100, 2, 0)
    conf, correct = probs.max(1), probs.argmax(1) == y
    rep = cal.calibration_report(conf, correct, probs, y, n_bins=10, confidence_kind="top1")
    assert rep.definitions.binning == "equal_mass" and rep.definitions.n_bins == 10
    assert rep.definitions.confidence == "top1"
    assert rep.ece == rep.ece_equal_mass == pytest.approx(cal.ece(conf, correct, 10))
    assert rep.ece_equal_width == pytest.approx(cal.ece(conf, correct, 10, "equal_width"))
    assert sum(b.count for b in rep.bins) == 100
    d = rep.to_dict()
    assert d["definitions"]["binning"] == "equal_mass" and len(d["bins"]) == 10
    assert cal.calibration_report(conf, correct).brier is None


@pytest.mark.parametrize("args", [
    ([0.5, 0.6], [True]),
    ([1.5], [True]),
    ([float("nan")], [True]),
    ([], []),
])
def test_bad_inputs_raise(args):
    with pytest.raises(IA2Error):
        cal.ece(*args)


def test_bad_binning_and_probs_raise():
    with pytest.raises(IA2Error, match="binning"):
        cal.ece([0.5], [True], binning="log")
    with pytest.raises(IA2Error, match="sum to 1"):
        cal.brier([[0.5, 0.6]], [0])
    with pytest.raises(IA2Error, match="labels"):
        cal.nll([[0.5, 0.5]], [2])
