"""The report's teacher-accuracy table, from a study directory's runs and from a record's."""

import json

import yaml

from ia2.report import teacher


def _acc(right, n, dev_right, dev_n=2):
    return {"train": {"correct": right, "n": n, "accuracy": right / n},
            "dev": {"correct": dev_right, "n": dev_n, "accuracy": dev_right / dev_n}}


def _record_run(root, task, method, n, seed, accuracy):
    doc = {"config": {"task": task, "method": method, "n": n, "seed": seed},
           "run": {"finished": True}}
    if accuracy is not False:
        doc["teacher"] = {"key": f"k{n}{seed}", "accuracy": accuracy}
    path = root / "runs" / task / f"{method}-n{n}-s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_one_row_per_setting_with_seeds_in_order_and_totals(tmp_path):
    _record_run(tmp_path, "sst2", "ia2", 8, 1, _acc(4, 8, 1))
    _record_run(tmp_path, "sst2", "kd", 8, 1, _acc(4, 8, 1))  # the same episode: counted once
    _record_run(tmp_path, "sst2", "ia2", 8, 0, _acc(7, 8, 2))
    _record_run(tmp_path, "sst2", "ia2", 4, 0, None)  # recorded before the count existed
    _record_run(tmp_path, "sst2", "sft", 4, 0, False)  # no teacher at all
    assert teacher.rows(tmp_path) == [
        ["sst2", "8", "0, 1", "7/8, 4/8", "11/16 = 0.69", "3/4 = 0.75"]]
    md = "\n".join(teacher.section(tmp_path))
    assert "| sst2 | 8 | 0, 1 | 7/8, 4/8 | 11/16 = 0.69 | 3/4 = 0.75 |" in md


def test_a_study_directory_reads_each_runs_teacher_file(tmp_path):
    run = tmp_path / "runs" / "agnews" / "ia2-n4-s2-lr0.001"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "agnews", "n": 4, "seed": 2}))
    (run / "teacher.json").write_text(json.dumps({"key": "k", "accuracy": _acc(3, 4, 0)}))
    assert teacher.rows(tmp_path) == [["agnews", "4", "2", "3/4", "3/4 = 0.75", "0/2 = 0.00"]]


def test_no_counts_no_section(tmp_path):
    _record_run(tmp_path, "sst2", "ia2", 8, 0, None)
    assert teacher.section(tmp_path) == []
