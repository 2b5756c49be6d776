"""Paired comparisons with confidence intervals from a two-way bootstrap over seeds and queries.

Every seed of a method is evaluated on the same queries, so seeds and queries are crossed: a
replicate draws seeds with replacement and, independently, queries with replacement, and
applies the one query draw to every drawn seed of both methods (the pairing). The statistic is
the mean over the drawn seeds of (metric of `a` − metric of `b`), for accuracy and for ECE.
The interval is the basic (reverse-percentile) bootstrap interval, 2θ̂ − q(1−α/2) to
2θ̂ − q(α/2): ECE computed on resampled queries is biased upward (repeated queries fill bins
more unevenly), which shifts the replicates' percentiles but not their spread. Resampling both
seeds and queries counts the query variance in each seed's mean as well: the intervals are on
the conservative (wide) side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluate.calibration import ece_equal_mass_rows

# Verdicts on an interval for a difference a − b: the paper's claim is a direction ("higher",
# "lower") or, for IA2 against ICL, closeness within EQUIVALENCE (accuracy).
EQUIVALENCE = 0.05


@dataclass(frozen=True)
class Outcomes:
    """One evaluation's per-query outcomes (store rows' `per_query`)."""
    correct: np.ndarray  # [Q] bool
    confidence: np.ndarray | None  # [Q] float, None for generation

    @classmethod
    def of(cls, per_query: dict) -> "Outcomes":
        ok = np.frombuffer(per_query["correct"].encode(), dtype=np.uint8) == ord("1")
        conf = per_query.get("confidence")
        return cls(ok, None if conf is None else np.asarray(conf, dtype=np.float64))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def direction(self) -> str:
        """"higher" or "lower" when the interval excludes 0, else "no clear difference"."""
        return "higher" if self.low > 0 else "lower" if self.high < 0 else "no clear difference"


def paired(a: dict[int, Outcomes], b: dict[int, Outcomes], n_boot: int = 2000, seed: int = 0,
           n_bins: int = 15, level: float = 0.95) -> dict[str, Interval] | None:
    """{"acc": Interval, "ece": Interval (when both have confidences)} for a − b over the seeds
    both have, or None when they share none. `a`, `b`: seed -> Outcomes on the same queries."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    q = len(a[seeds[0]].correct)
    if any(len(x[s].correct) != q for x in (a, b) for s in seeds):
        raise ValueError("paired outcomes must cover the same queries")
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))  # [R, S] positions
    idx = np.vstack([np.arange(q), rng.integers(0, q, size=(n_boot, q))])  # row 0: the data

    def acc(o: Outcomes) -> np.ndarray:
        return o.correct[idx].mean(axis=1)

    def cal(o: Outcomes) -> np.ndarray:
        return ece_equal_mass_rows(o.confidence[idx], o.correct[idx], n_bins)

    metrics = {"acc": acc}
    if all(x[s].confidence is not None for x in (a, b) for s in seeds):
        metrics["ece"] = cal
    out, tail = {}, (1 - level) / 2 * 100
    for name, f in metrics.items():
        diff = np.stack([f(a[s]) - f(b[s]) for s in seeds])  # [S, 1 + R]
        reps = diff[seed_draws, 1 + np.arange(n_boot)[:, None]].mean(axis=1)
        est = float(diff[:, 0].mean())
        out[name] = Interval(est, 2 * est - float(np.percentile(reps, 100 - tail)),
                             2 * est - float(np.percentile(reps, tail)))
    return out


def agreement(interval: Interval, claim: str) -> str:
    """Whether an interval for a − b agrees with the paper's `claim` about it: "higher" or
    "lower" (a direction), or "close" (within ±EQUIVALENCE). Returns agrees, disagrees or
    inconclusive."""
    lo, hi = interval.low, interval.high
    if claim == "close":
        if -EQUIVALENCE <= lo and hi <= EQUIVALENCE:
            return "agrees"
        return "disagrees" if hi < -EQUIVALENCE or lo > EQUIVALENCE else "inconclusive"
    if claim not in ("higher", "lower"):
        raise ValueError(f"unknown claim {claim!r}")
    seen = interval.direction()
    if seen == "no clear difference":
        return "inconclusive"
    return "agrees" if seen == claim else "disagrees"
