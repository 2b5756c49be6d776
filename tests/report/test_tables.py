import pytest
from scipy import stats

from ia2.report import tables


def _row(method, acc, ece, seed, n=4, eval_task="sst2"):
    return {"task": "sst2", "eval_task": eval_task, "method": method, "n": n, "seed": seed,
            "metrics": {"label_set_accuracy": acc, "ece": ece}}


ROWS = [_row("zero_shot", 0.6, 0.2, None, n=None),
        _row("sft", 0.70, 0.20, 0), _row("sft", 0.72, 0.25, 1), _row("sft", 0.60, 0.22, 2),
        _row("ia2->sft", 0.80, 0.05, 0), _row("ia2->sft", 0.78, 0.10, 1), _row("ia2->sft", 0.75, 0.07, 2)]


def test_paired_test_matches_scipy_and_pairs_by_seed():
    data = tables.collect(list(reversed(ROWS)))  # order must not matter: pairing is by seed
    (t,) = tables.paired(data)
    assert t["seeds"] == 3
    assert t["d_acc"] == pytest.approx((0.10 + 0.06 + 0.15) / 3)
    assert t["p_acc"] == pytest.approx(stats.ttest_rel([0.80, 0.78, 0.75], [0.70, 0.72, 0.60]).pvalue)
    assert t["d_ece"] == pytest.approx((-0.15 - 0.15 - 0.15) / 3)
    assert t["p_ece"] is None  # a constant difference has no t statistic
    (line,) = tables.verdicts([t])
    assert "accuracy higher than SFT by 0.103" in line and "ECE lower (better) by 0.150" in line


def test_comparison_shows_zero_shot_under_each_n_and_mean_std():
    data = tables.collect(ROWS + [_row("sft", 0.9, 0.1, 0, n=8)])
    assert set(data) == {("sst2", 4), ("sst2", 8)}
    header, body = tables.comparison(data, "sst2", 4)
    assert header == ["method", "sst2→sst2 acc", "sst2→sst2 ECE"]
    assert [r[0] for r in body] == ["zero-shot", "SFT", "IA2→SFT"]
    assert body[1][1] == "0.673 ± 0.064"  # sample std over the 3 seeds
    assert [r[0] for r in tables.comparison(data, "sst2", 8)[1]] == ["zero-shot", "SFT"]
