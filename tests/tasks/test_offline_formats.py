"""The documented local layouts of the benchmarks that are not in the shared folder (SciQ, QASC,
GSM-Symbolic), plus MATH answer extraction, on small files written here."""

from __future__ import annotations

import pytest

from task_files import qasc_rows, sciq_rows, write_jsonl
from ia2.episodes import eval_set
from ia2.errors import DataError
from ia2.tasks import get_task, load_split


def test_sciq_options_shuffled_per_example(offline_only):
    spec = get_task("sciq")
    train = load_split(spec, "train", data_dir=offline_only)
    assert len(train) == 40 and train[0].uid == "sciq/train.jsonl:1"
    for ex, raw in zip(train, sciq_rows(40)):
        options = ex.inputs["choices"].split("\n")
        assert sorted(options) == sorted([raw["correct_answer"], raw["distractor1"],
                                          raw["distractor2"], raw["distractor3"]])
        assert options[ex.label] == raw["correct_answer"]
        assert ex.inputs["question"] == raw["question"]
    letters = {ex.label for ex in train}
    assert len(letters) >= 3  # the correct letter varies (40 rows: all in one slot is ~1e-23)
    from ia2.tasks import registry

    registry._CACHE.clear()
    assert load_split(spec, "train", data_dir=offline_only) == train  # fixed per-example order


def test_sciq_gen_solution_is_support_then_answer(offline_only):
    ev = load_split(get_task("sciq_gen"), "eval", data_dir=offline_only)
    assert ev[0].solution == "#### right 0" and ev[0].label == "right 0"  # no support
    assert ev[1].solution == "Thing 1 is right 1.\n#### right 1"
    assert get_task("sciq_gen").parser == "sciq"


def test_qasc_eight_way(offline_only):
    spec = get_task("qasc")
    ev = load_split(spec, "eval", data_dir=offline_only)
    assert len(ev) == 16 and len(spec.labels) == 8
    for i, ex in enumerate(ev):
        assert ex.label == i % 8
        assert ex.inputs["choices"].split("\n")[ex.label] == f"option {'ABCDEFGH'[i % 8]}{i}"


def test_qasc_bad_answer_key(tmp_path):
    rows = qasc_rows(3)
    rows[2]["answerKey"] = "Z"
    write_jsonl(tmp_path / "qasc" / "validation.jsonl", rows)
    with pytest.raises(DataError, match=r"validation.jsonl, row 3: label 'Z'") as e:
        load_split(get_task("qasc"), "eval", data_dir=tmp_path)
    assert e.value.row == 3


def test_gsm_symbolic_eval_only(offline_only):
    spec = get_task("gsm_symbolic")
    assert spec.eval_only and spec.parser == "gsm8k"
    ev = eval_set(spec, data_dir=offline_only, eval_size=4)
    assert len(ev) == 4
    assert all(ex.solution.endswith(f"#### {ex.label}") for ex in ev)


def test_math_nested_and_missing_box(tmp_path):
    rows = [{"problem": "p1", "solution": "so \\boxed{1} or rather $\\boxed{\\frac{1}{\\sqrt{2}}}$."},
            {"problem": "p2", "solution": "answer $\\boxed 9$."}]
    write_jsonl(tmp_path / "math_algebra" / "train.jsonl", rows)
    write_jsonl(tmp_path / "math_algebra" / "test.jsonl", rows + [{"problem": "p3", "solution": "none"}])
    train = load_split(get_task("math_algebra"), "train", data_dir=tmp_path)
    assert [ex.label for ex in train] == ["\\frac{1}{\\sqrt{2}}", "9"]
    with pytest.raises(DataError, match=r"test.jsonl, row 3: .*boxed"):
        load_split(get_task("math_algebra"), "eval", data_dir=tmp_path)


def test_gsm8k_without_hashes(tmp_path):
    write_jsonl(tmp_path / "gsm_symbolic" / "test.jsonl",
                [{"question": "q", "answer": "1\n#### 1"}, {"question": "q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"test.jsonl, row 2: .*####"):
        load_split(get_task("gsm_symbolic"), "eval", data_dir=tmp_path)
