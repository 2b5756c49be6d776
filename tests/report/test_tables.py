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


def _stored(method, acc, seed, created, lr=1e-3, adapter="sha256:a", eval_task="sst2"):
    return dict(_row(method, acc, 0.1, seed, eval_task=eval_task), lr=lr, beta=None,
                model="m", setting="adapter", adapter=adapter, created=created,
                key=f"{method}|{seed}|{lr}|{adapter}|{eval_task}")


def test_a_run_stored_twice_counts_once_the_newest_and_says_so():
    rows = [_stored("sft", 0.2, 0, "2026-01-01T00:00:00", adapter="sha256:old"),
            _stored("sft", 1.0, 0, "2026-01-02T00:00:00", adapter="sha256:new")]
    notes = []
    data = tables.collect(rows, notes)
    cell = data[("sst2", 4)]["sst2"]["sft"]
    assert cell["acc"] == [1.0] and cell["seeds"] == [0]
    assert tables.comparison(data, "sst2", 4)[1][0][1] == "1.000"  # not "0.600 ± 0.566"
    assert len(notes) == 1 and "2 evaluations stored" in notes[0] and "seed 0" in notes[0]
    assert "2026-01-02" in notes[0]


def test_a_spread_is_only_over_distinct_seeds():
    rows = [_stored("sft", 0.2, 0, "2026-01-01T00:00:00", lr=1e-3),
            _stored("sft", 0.4, 0, "2026-01-03T00:00:00", lr=1e-2),  # reselected lr, same seed
            _stored("sft", 0.6, 1, "2026-01-02T00:00:00", lr=1e-3)]
    notes = []
    data = tables.collect(rows, notes)
    cell = data[("sst2", 4)]["sst2"]["sft"]
    assert sorted(zip(cell["seeds"], cell["acc"])) == [(0, 0.4), (1, 0.6)]
    assert tables.comparison(data, "sst2", 4)[1][0][1] == "0.500 ± 0.141"
    assert len(notes) == 1 and "lr 0.001" in notes[0] and "a newer row of the same seed" in notes[0]


def test_the_report_shows_one_value_per_run_and_lists_what_it_left_out(tmp_path):
    from ia2.report import write_report
    from ia2.store import ResultsStore

    with ResultsStore(tmp_path / "results.sqlite") as store:
        for r in (_stored("sft", 0.2, 0, "2026-01-01T00:00:00", adapter="sha256:old"),
                  _stored("sft", 1.0, 0, "2026-01-02T00:00:00", adapter="sha256:new")):
            store.add(r)
    text = write_report(tmp_path).read_text()
    assert "| SFT | 1.000 | 0.100 |" in text and "±" not in text.split("## sst2")[1]
    assert "Rows left out" in text and "2 evaluations stored" in text
