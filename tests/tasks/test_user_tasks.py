"""A user's own task: a YAML spec plus JSONL or CSV files; and each kind of bad input."""

from __future__ import annotations

import textwrap

import pytest

from ia2.episodes import make_episode
from ia2.errors import DataError, IA2Error
from ia2.tasks import get_task, load_split, load_task_file
from ia2.tasks.prompts import render_query
from task_files import write_jsonl

SPEC = """\
name: reviews
kind: classification
template:
  query: "Review: {text}\\nVerdict:"
labels: [bad, good]
label_words: [awful, great]
label_field: stars
files: {train: train.jsonl, eval: test.jsonl}
"""


def _reviews(n, start=0):
    return [{"text": f"review number {i}", "stars": "good" if i % 2 else "bad"}
            for i in range(start, start + n)]


def _task(tmp_path, spec=SPEC, train=None, test=None):
    (tmp_path / "task.yaml").write_text(spec, encoding="utf-8")
    write_jsonl(tmp_path / "train.jsonl", _reviews(20) if train is None else train)
    write_jsonl(tmp_path / "test.jsonl", _reviews(6, 100) if test is None else test)
    return tmp_path / "task.yaml"


def test_jsonl_task_loads_and_makes_episodes(tmp_path):
    spec = load_task_file(_task(tmp_path))
    assert (spec.name, spec.kind, spec.labels, spec.eval_only) == ("reviews", "classification",
                                                                   ("bad", "good"), False)
    assert spec.label_words() == ("awful", "great")
    train = load_split(spec, "train")  # files sit next to the YAML; no data directory needed
    assert [ex.label for ex in train[:4]] == [0, 1, 0, 1]
    assert train[3].uid == "train.jsonl:4" and train[3].inputs == {"text": "review number 3"}
    assert render_query(spec, train[0]) == "Review: review number 0\nVerdict:"
    ep = make_episode(spec, 4, seed=0, balanced=True)
    assert sorted(ex.label for ex in ep.train) == [0, 0, 1, 1]
    assert get_task(str(tmp_path / "task.yaml")).name == "reviews"  # a path works as a name


def test_csv_task_with_index_labels_and_choices(tmp_path):
    (tmp_path / "mc.yaml").write_text(textwrap.dedent("""\
        name: mc
        kind: classification
        template: "Q: {question}\\n{choices}\\nA:"
        labels: [A, B, C]
        label_field: answer
        choices_field: options
        files: {eval: test.csv}
        """), encoding="utf-8")
    (tmp_path / "test.csv").write_text('question,options,answer\n'
                                       '"Which, exactly?","x\ny\nz",2\n'
                                       'Two?,"p\nq\nr",A\n', encoding="utf-8")
    spec = load_task_file(tmp_path / "mc.yaml")
    assert spec.eval_only  # no train file
    ev = load_split(spec, "eval")
    assert [ex.label for ex in ev] == [2, 0]
    assert ev[0].inputs == {"question": "Which, exactly?", "choices": "x\ny\nz"}
    assert ev[1].uid == "test.csv:5"  # the first record spans lines 2-4
    assert render_query(spec, ev[0]) == "Q: Which, exactly?\nA. x\nB. y\nC. z\nA:"
    with pytest.raises(IA2Error, match="evaluation-only"):
        load_split(spec, "train")


def test_generation_task(tmp_path):
    spec_text = textwrap.dedent("""\
        name: arith
        kind: generation
        template: {query: "Q: {question}\\nA:"}
        label_field: final
        solution_field: work
        parser: gsm8k
        max_new_tokens: 50
        files: {train: train.jsonl, eval: test.jsonl}
        """)
    rows = [{"question": f"{i}+1?", "final": i + 1, "work": f"{i}+1={i + 1}\n#### {i + 1}"}
            for i in range(8)]
    spec = load_task_file(_task(tmp_path, spec_text, rows, rows[:3]))
    ex = load_split(spec, "train")[2]
    assert (ex.label, ex.solution, spec.max_new_tokens) == ("3", "2+1=3\n#### 3", 50)


@pytest.mark.parametrize("train_text, row, message", [
    ('{"text": "a", "stars": "good"}\n{"text": "b", "stars": \n', 2, "malformed JSON"),
    ('{"text": "a", "stars": "good"}\n{"text": "b", "stars": "meh"}\n', 2, "label 'meh'"),
    ('{"text": "a", "stars": "good"}\n\n{"stars": "bad"}\n', 3, "missing field 'text'"),
    ('["not", "an", "object"]\n', 1, "expected a JSON object"),
    ('{"text": "a", "stars": 7}\n', 1, "label '7'"),
])
def test_bad_jsonl_rows_name_file_and_row(tmp_path, train_text, row, message):
    spec = load_task_file(_task(tmp_path))
    (tmp_path / "train.jsonl").write_text(train_text, encoding="utf-8")
    with pytest.raises(DataError, match=f"train.jsonl, row {row}: {message}") as e:
        load_split(spec, "train")
    assert e.value.row == row and e.value.path.name == "train.jsonl"


def test_empty_file(tmp_path):
    spec = load_task_file(_task(tmp_path))
    (tmp_path / "test.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="test.jsonl: empty file"):
        load_split(spec, "eval")


def test_csv_missing_column(tmp_path):
    (tmp_path / "task.yaml").write_text(SPEC.replace("train.jsonl", "train.csv"), encoding="utf-8")
    (tmp_path / "train.csv").write_text("text,stars\nfine film,good\nshort row\n", encoding="utf-8")
    spec = load_task_file(tmp_path / "task.yaml")
    with pytest.raises(DataError, match=r"train.csv, row 3: expected 2 columns"):
        load_split(spec, "train")
    (tmp_path / "train.csv").write_text("text,rating\nfine film,good\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv, row 2: missing field 'stars'"):
        load_split(spec, "train")


@pytest.mark.parametrize("spec_text, message", [
    ("name: x\nkind: classification\n", "missing key 'files'"),
    (SPEC + "colour: red\n", "unknown keys colour"),
    (SPEC.replace("kind: classification", "kind: regression"), "kind must be"),
    (SPEC.replace("labels: [bad, good]", "labels: [bad]"), "at least two labels"),
    (SPEC.replace("[awful, great]", "[awful]"), "one word per label"),
    ("name: [unclosed\n", "malformed YAML"),
    ("- a list\n", "expected a YAML mapping"),
    (SPEC + "max_new_tokens: lots\n", "bad setting"),
    (SPEC.replace("train: train.jsonl", "train: test.jsonl"), "same file: set carve_eval"),
    (SPEC + "templates: 3\n", "templates must map preset names"),
    (SPEC.replace("template:", "templatе:"), "unknown keys templatе"),  # a Cyrillic e
])
def test_bad_task_file(tmp_path, spec_text, message):
    (tmp_path / "task.yaml").write_text(spec_text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        load_task_file(tmp_path / "task.yaml")
    assert "task.yaml" in str(e.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(IA2Error, match="nope.yaml not found"):
        load_task_file(tmp_path / "nope.yaml")


def test_one_file_carved(tmp_path):
    spec = load_task_file(_task(tmp_path, SPEC.replace("train: train.jsonl", "train: test.jsonl")
                                + "carve_eval: 2\n"))
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    assert (len(train), len(ev)) == (4, 2)
    assert sorted(e.uid for e in train + ev) == sorted(f"test.jsonl:{i}" for i in range(1, 7))
