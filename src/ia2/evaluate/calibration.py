"""Calibration metrics, each defined here once.

Inputs, per evaluated example i of N:
- `confidence[i]` in [0, 1]: the probability the model gives its own prediction. Which probability
  (top-1 over the whole vocabulary, or the maximum after renormalising over the label tokens) is
  the caller's choice and is recorded as `confidence_kind` in `Definitions`.
- `correct[i]`: whether that prediction is the true label.
- `probs[i]` (for Brier and NLL): a distribution over the K labels (rows sum to 1), and
  `labels[i]` the index of the true label.

Binning (for ECE, MCE and the reliability diagram):
- "equal_mass" (the paper's): sort examples by confidence (stable sort, ties keep input order) and
  split them into `n_bins` consecutive groups whose sizes differ by at most one
  (`numpy.array_split`). Bins are never empty unless N < n_bins; empty bins are dropped.
  A bin's edges are the smallest and largest confidence inside it.
- "equal_width": [0, 1] cut at `linspace(0, 1, n_bins + 1)`; bin b holds edges[b] <= c < edges[b+1]
  and confidence 1.0 falls in the last bin. (torchmetrics agrees except that it gives c == 1.0 a
  bin of its own.)

Per bin b with n_b examples: conf_b = mean confidence, acc_b = fraction correct.
- ECE = sum_b (n_b / N) * |acc_b - conf_b|
- MCE = max_b |acc_b - conf_b| over non-empty bins
- Brier = (1/N) sum_i sum_k (probs[i, k] - [k == labels[i]])^2  (multi-class, range [0, 2])
- NLL = -(1/N) sum_i log max(probs[i, labels[i]], 1e-12)  (natural log, nats)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from ..errors import IA2Error

Binning = Literal["equal_mass", "equal_width"]
BINNINGS = ("equal_mass", "equal_width")
PROB_FLOOR = 1e-12  # keeps NLL finite when a label gets probability 0


@dataclass(frozen=True)
class Definitions:
    """How the headline calibration numbers were computed (stored beside every result)."""

    binning: str = "equal_mass"
    n_bins: int = 15
    confidence: str = "label_set"  # "label_set" (renormalised over labels) or "top1" (full vocab)
    brier: str = "multiclass over the label set"
    nll: str = "natural log of the true label's label-set probability, floor 1e-12"


@dataclass(frozen=True)
class Bin:
    """One reliability-diagram bar."""

    lower: float  # edge (equal_width) or smallest confidence inside (equal_mass)
    upper: float
    confidence: float  # mean confidence, nan when empty
    accuracy: float  # fraction correct, nan when empty
    count: int


@dataclass
class CalibrationReport:
    ece: float  # with `definitions.binning`
    ece_equal_width: float
    ece_equal_mass: float
    mce: float  # with `definitions.binning`
    brier: float | None
    nll: float | None
    bins: list[Bin] = field(default_factory=list)  # reliability diagram, `definitions.binning`
    definitions: Definitions = field(default_factory=Definitions)

    def to_dict(self) -> dict:
        return asdict(self)


def _check(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != ok.shape:
        raise IA2Error(f"calibration: {conf.size} confidences but {ok.size} correctness flags")
    if conf.size == 0:
        raise IA2Error("calibration: no examples")
    if np.any(~np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise IA2Error("calibration: confidences must be finite and in [0, 1]")
    return conf, ok


def reliability(confidence, correct, n_bins: int = 15, binning: Binning = "equal_mass") -> list[Bin]:
    """Reliability-diagram data: one `Bin` per bin (equal_width keeps empty bins, with nan means)."""
    conf, ok = _check(confidence, correct)
    if n_bins < 1:
        raise IA2Error(f"calibration: n_bins must be >= 1, got {n_bins}")
    if binning == "equal_mass":
        order = np.argsort(conf, kind="stable")
        groups = [g for g in np.array_split(order, n_bins) if g.size]
        return [Bin(float(conf[g].min()), float(conf[g].max()), float(conf[g].mean()),
                    float(ok[g].mean()), int(g.size)) for g in groups]
    if binning == "equal_width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
        bins = []
        for b in range(n_bins):
            m = idx == b
            n = int(m.sum())
            bins.append(Bin(float(edges[b]), float(edges[b + 1]),
                            float(conf[m].mean()) if n else float("nan"),
                            float(ok[m].mean()) if n else float("nan"), n))
        return bins
    raise IA2Error(f"calibration: unknown binning {binning!r} (choose from {', '.join(BINNINGS)})")


def _gaps(bins: list[Bin]) -> tuple[np.ndarray, np.ndarray]:
    full = [b for b in bins if b.count]
    gaps = np.array([abs(b.accuracy - b.confidence) for b in full])
    counts = np.array([b.count for b in full], dtype=np.float64)
    return gaps, counts


def ece(confidence, correct, n_bins: int = 15, binning: Binning = "equal_mass") -> float:
    """Expected calibration error (see the module docstring)."""
    gaps, counts = _gaps(reliability(confidence, correct, n_bins, binning))
    return float(np.sum(gaps * counts) / counts.sum())


def ece_equal_mass_rows(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Equal-mass ECE of each row of [R, Q] arrays at once (what `ece` gives row by row; for
    bootstrap replicates): a bin's |B| * |mean conf - mean acc| is |sum conf - sum correct|."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    order = np.argsort(conf, axis=1, kind="stable")
    conf, ok = np.take_along_axis(conf, order, 1), np.take_along_axis(ok, order, 1)
    starts = np.cumsum([0] + [g.size for g in np.array_split(np.arange(conf.shape[1]), n_bins)])
    starts = np.unique(starts[:-1][starts[:-1] < conf.shape[1]])
    gaps = np.abs(np.add.reduceat(conf, starts, axis=1) - np.add.reduceat(ok, starts, axis=1))
    return gaps.sum(axis=1) / conf.shape[1]


def mce(confidence, correct, n_bins: int = 15, binning: Binning = "equal_mass") -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
    gaps, _ = _gaps(reliability(confidence, correct, n_bins, binning))
    return float(gaps.max())


def _check_probs(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[0] == 0:
        raise IA2Error(f"calibration: probs must be [N, K] with N = {y.size} labels, got {p.shape}")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= p.shape[1]:
        raise IA2Error(f"calibration: labels must be integers in [0, {p.shape[1]})")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise IA2Error("calibration: each probability row must sum to 1")
    return p, y


def brier(probs, labels) -> float:
    """Multi-class Brier score: mean squared distance between the distribution and the one-hot label."""
    p, y = _check_probs(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the true label (nats)."""
    p, y = _check_probs(probs, labels)
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], PROB_FLOOR))))


def calibration_report(confidence, correct, probs=None, labels=None, n_bins: int = 15,
                       binning: Binning = "equal_mass", confidence_kind: str = "label_set"
                       ) -> CalibrationReport:
    """All calibration metrics at once; Brier and NLL only when `probs` and `labels` are given."""
    bins = reliability(confidence, correct, n_bins, binning)
    by = {b: ece(confidence, correct, n_bins, b) for b in BINNINGS}
    return CalibrationReport(
        ece=by[binning],
        ece_equal_width=by["equal_width"],
        ece_equal_mass=by["equal_mass"],
        mce=mce(confidence, correct, n_bins, binning),
        brier=None if probs is None else brier(probs, labels),
        nll=None if probs is None else nll(probs, labels),
        bins=bins,
        definitions=Definitions(binning=binning, n_bins=n_bins, confidence=confidence_kind),
    )
