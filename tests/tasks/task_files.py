"""Small benchmark-shaped files for the task-data tests."""

from __future__ import annotations

import json


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sciq_rows(n):
    return [{"question": f"What is thing {i}?", "distractor1": f"wrong a{i}",
             "distractor2": f"wrong b{i}", "distractor3": f"wrong c{i}",
             "correct_answer": f"right {i}", "support": f"Thing {i} is right {i}." if i % 2 else ""}
            for i in range(n)]


def qasc_rows(n):
    letters = list("ABCDEFGH")
    return [{"question": f"Which one is {i}?", "answerKey": letters[i % 8],
             "choices": {"text": [f"option {c}{i}" for c in letters], "label": letters}}
            for i in range(n)]
