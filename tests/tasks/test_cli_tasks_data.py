"""`ia2 tasks` and `ia2 data show`, and how their errors reach the user."""

from __future__ import annotations

import pytest

from ia2.cli import main
from ia2.episodes import make_episode
from ia2.tasks import get_task
from ia2.tasks.prompts import render_demo, render_query
from task_files import sciq_rows, write_jsonl


def test_tasks_lists_twelve(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out[1:13]]
    assert names[0] == "sst2" and len(set(names)) == 12 and out[0].split()[0] == "name"
    rows = {line.split()[0]: line for line in out[1:13]}
    assert "finphrasebank,poem_sentiment" in rows["sst2"] and "sst2/train.tsv" in rows["sst2"]
    assert " yes " in rows["bbcnews"] and "World/Sports/Business/Technology" in rows["bbcnews"]
    assert " gsm8k " in rows["gsm_symbolic"]


def _prompt_block(out):
    lines = out.split("\n")
    rules = [i for i, line in enumerate(lines) if line == "-" * 40]
    return "\n".join(lines[rules[0] + 1: rules[1]])


@pytest.mark.parametrize("preset", ["natural", "paper"])
def test_data_show_prints_the_exact_prompt(offline_only, capsys, preset):
    argv = ["data", "show", "sciq", "--n", "4", "--seed", "2", "--data-dir", str(offline_only),
            "--preset", preset, "--max-demos", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    spec = get_task("sciq")
    ep = make_episode(spec, 4, 2, data_dir=offline_only, max_demos=2)
    expected = "".join(render_demo(spec, ep.train[i], preset) for i in ep.demos_for_train[0])
    expected += render_query(spec, ep.train[0], preset)
    assert _prompt_block(out) == expected  # print() adds one newline after the block
    assert f"N=4, seed 2, preset {preset}" in out
    assert f"demos {list(ep.demos_for_train[1])}" in out
    assert out.count("sciq/test.jsonl:") == 5  # the first five eval queries


def test_data_show_truncates_listings_not_prompt(tmp_path, capsys):
    long = "word " * 100
    write_jsonl(tmp_path / "gsm_symbolic" / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl",
                [{"question": f"{long}{i}", "answer": f"{long}\n#### {i}"} for i in range(6)])
    assert main(["data", "show", "gsm8k", "--n", "2", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    listing = out.split("ICL prompt")[0]
    assert max(len(line) for line in listing.splitlines()) < 150
    assert long.strip() in _prompt_block(out)


@pytest.mark.parametrize("argv, message", [
    (["data", "show", "sst3"], "unknown task 'sst3'"),
    (["data", "show", "poem_sentiment", "--data-dir", "{tmp}"], "evaluation-only"),
    (["data", "show", "sciq", "--data-dir", "{tmp}/missing"], "missing is not a readable directory"),
    (["data", "show", "sciq", "--data-dir", "{tmp}"], "sciq/train.jsonl .*not found"),
    (["data", "show", "sciq", "--n", "60", "--data-dir", "{data}"], "pool has 40"),
    (["data", "show", "sciq", "--data-dir", "{bad}"], r"sciq/train.jsonl, row 2: malformed JSON"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, offline_only, capsys, argv, message):
    import re

    bad = tmp_path / "bad"
    (bad / "sciq").mkdir(parents=True)
    write_jsonl(bad / "sciq" / "train.jsonl", sciq_rows(1))
    with open(bad / "sciq" / "train.jsonl", "a", encoding="utf-8") as f:
        f.write('{"question": oops}\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(tmp=empty, data=offline_only, bad=bad) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ia2: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize("csv_text, message", [
    ("text,stars\ngood film,good\nbad film\n", r"train.csv, row 3: expected 2 columns"),
    ("text,stars\ngood film,good\nbad film,meh\n", r"train.csv, row 3: label 'meh'"),
])
def test_user_task_errors_through_cli(tmp_path, capsys, csv_text, message):
    import re

    (tmp_path / "t.yaml").write_text(
        'name: t\nkind: classification\ntemplate: "R: {text}\\nV:"\nlabels: [bad, good]\n'
        "label_field: stars\nfiles: {train: train.csv, eval: train.csv}\ncarve_eval: 1\n",
        encoding="utf-8")
    (tmp_path / "train.csv").write_text(csv_text, encoding="utf-8")
    assert main(["data", "show", str(tmp_path / "t.yaml"), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"ia2: error: \S+" + message, err), err
