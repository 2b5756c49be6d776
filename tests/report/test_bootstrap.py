"""The paired two-way bootstrap against a slow reference, its verdicts, and the report section."""

import numpy as np
import pytest

from ia2.evaluate.calibration import ece, ece_equal_mass_rows
from ia2.report import compare
from ia2.report.bootstrap import Interval, Outcomes, agreement, paired


@pytest.mark.parametrize("q", [7, 15, 301])
def test_row_ece_is_ece_of_each_row(q):
    rng = np.random.default_rng(q)
    conf = rng.random((20, q))
    conf[:, : q // 3] = 0.6  # ties: the stable order decides the bins
    ok = rng.random((20, q)) < 0.7
    want = [ece(conf[i], ok[i]) for i in range(20)]
    np.testing.assert_allclose(ece_equal_mass_rows(conf, ok), want, rtol=0, atol=1e-12)


def _outcomes(rng, p, seeds=5, q=120):
    return {s: Outcomes(rng.random(q) < p, rng.random(q) * 0.5 + 0.5) for s in range(seeds)}


def test_paired_matches_a_slow_reference():
    rng = np.random.default_rng(1)
    a, b = _outcomes(rng, 0.8), _outcomes(rng, 0.7)
    got = paired(a, b, n_boot=300, seed=7)
    # the same draws, one replicate at a time with the plain metric functions
    draw = np.random.default_rng(7)
    seed_draws = draw.integers(0, 5, size=(300, 5))
    idx = draw.integers(0, 120, size=(300, 120))
    metrics = {"acc": lambda o, i: o.correct[i].mean(),
               "ece": lambda o, i: ece(o.confidence[i], o.correct[i])}
    for name, f in metrics.items():
        reps = [np.mean([f(a[s], idx[r]) - f(b[s], idx[r]) for s in seed_draws[r]])
                for r in range(300)]
        every = np.arange(120)
        est = np.mean([f(a[s], every) - f(b[s], every) for s in range(5)])
        assert got[name].estimate == pytest.approx(est)
        assert got[name].low == pytest.approx(2 * est - np.percentile(reps, 97.5))
        assert got[name].high == pytest.approx(2 * est - np.percentile(reps, 2.5))


def test_paired_finds_a_real_difference_and_none_between_equals():
    rng = np.random.default_rng(2)
    a = _outcomes(rng, 0.9, q=400)
    worse = {s: Outcomes(o.correct & (rng.random(400) < 0.7), o.confidence) for s, o in a.items()}
    res = paired(a, worse)
    assert res["acc"].direction() == "higher" and res["acc"].low > 0.15
    same = paired(a, a)
    assert (same["acc"].low, same["acc"].high) == (0, 0)
    assert paired(a, {9: a[0]}) is None  # no shared seed
    with pytest.raises(ValueError, match="same queries"):
        paired(a, {0: Outcomes(a[0].correct[:10], a[0].confidence[:10])})
    gen = {s: Outcomes(o.correct, None) for s, o in a.items()}
    assert set(paired(gen, gen)) == {"acc"}  # generation: no confidences, no ECE


def test_outcomes_of_a_store_row():
    o = Outcomes.of({"correct": "0110", "confidence": [0.5, 0.9, 0.8, 0.6], "uids": "x"})
    assert o.correct.tolist() == [False, True, True, False]
    assert Outcomes.of({"correct": "1", "uids": "x"}).confidence is None


@pytest.mark.parametrize("interval, claim, verdict", [
    ((0.05, 0.01, 0.09), "higher", "agrees"), ((0.05, 0.01, 0.09), "lower", "disagrees"),
    ((0.01, -0.02, 0.04), "higher", "inconclusive"), ((0.01, -0.02, 0.04), "close", "agrees"),
    ((-0.1, -0.15, -0.06), "close", "disagrees"), ((-0.05, -0.1, 0.0), "close", "inconclusive")])
def test_agreement_with_the_paper(interval, claim, verdict):
    assert agreement(Interval(*interval), claim) == verdict


def _row(method, setting, seed, correct, uids="u", eval_task="sst2"):
    conf = [0.9] * len(correct)
    return {"task": "sst2", "n": 4, "eval_task": eval_task, "method": method, "seed": seed,
            "setting": setting, "per_query": {"uids": uids, "correct": correct, "confidence": conf}}


def test_report_section_pairs_seeds_on_the_same_queries():
    rows = [_row("ia2->sft", "adapter", s, "1111111110") for s in range(3)]
    rows += [_row("sft", "adapter", s, "1100000000") for s in range(3)]
    rows += [_row("sft", "adapter", 3, "1100000000"), _row("ia2->sft", "adapter", 4, "11", "v")]
    rows += [_row("ia2", "adapter", s, "1111100000") for s in range(3)]
    rows += [_row("icl", "icl", s, "1111100000") for s in range(3)]
    text = "\n".join(compare.section(rows, n_boot=200))
    line = next(x for x in text.splitlines() if x.startswith("| sst2 | sst2 | 4 | 3 | +0.700"))
    assert "IA2→SFT more accurate than SFT" in line and "agrees (acc)" in line
    ia2 = text.split("### IA2 against ICL")[1]
    assert "| sst2 | sst2 | 4 | 3 | +0.000 [+0.000, +0.000]" in ia2 and "| agrees |" in ia2
    assert compare.section([dict(r, per_query=None) for r in rows]) == []


def test_report_section_uses_each_seeds_newest_row_and_needs_three_seeds():
    old = dict(_row("ia2->sft", "adapter", 0, "0000000000"), created="2026-01-01", lr=0.1)
    rows = [dict(_row("ia2->sft", "adapter", s, "1111111110"), created="2026-02-01")
            for s in range(3)] + [old] + [_row("sft", "adapter", s, "1100000000") for s in range(3)]
    text = "\n".join(compare.section(rows, n_boot=200))
    assert "| sst2 | sst2 | 4 | 3 | +0.700 [" in text  # not the stale seed-0 row (+0.467)
    two = [r for r in rows if r["seed"] != 2]
    assert "– (fewer than 3 seeds)" in "\n".join(compare.section(two, n_boot=50))
    gen = [dict(r, per_query={"uids": "u", "correct": r["per_query"]["correct"]}) for r in rows]
    lines = "\n".join(compare.section(gen, n_boot=50)).splitlines()
    line = next(x for x in lines if x.startswith("| sst2 | sst2"))
    assert line.split(" | ")[5] == "–"  # generation: no ECE


def test_intervals_cover_a_zero_difference_most_of_the_time():
    """Two methods with the same accuracy (seed effects and query difficulty shared): the 95%
    interval should contain 0 in (about) 95% of studies; it errs on the wide side."""
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(60):
        hard = rng.random(200) < 0.3  # queries both methods find hard
        study = [{s: Outcomes(np.where(hard, rng.random(200) < 0.3, rng.random(200) < 0.8),
                              rng.random(200) * 0.5 + 0.5) for s in range(5)} for _ in range(2)]
        i = paired(*study, n_boot=300, seed=int(rng.integers(1 << 30)))["acc"]
        covered += i.low <= 0 <= i.high
    assert covered >= 54  # >= 90% of 60
