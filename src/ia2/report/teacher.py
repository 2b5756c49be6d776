"""The report's table of how often the teacher (ICL on the other training examples) answers
the queries a run trains on correctly: IA2 and KD learn its responses, so a seed whose teacher
was wrong is a seed whose adapter learned wrong answers (ia2.teacher.quality)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _docs(run_dir: Path):
    """(config, teacher doc) of every run of a study directory (runs/<task>/<run>/) or of a
    record (runs/<task>/<run>.json)."""
    for f in sorted(run_dir.glob("runs/*/*.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        if doc.get("teacher"):
            yield doc["config"], doc["teacher"]
    for f in sorted(run_dir.glob("runs/*/*/teacher.json")):
        config = yaml.safe_load((f.parent / "config.yaml").read_text(encoding="utf-8"))
        yield config, json.loads(f.read_text(encoding="utf-8"))


def _cell(counts: list[dict]) -> str:
    right, n = sum(c["correct"] for c in counts), sum(c["n"] for c in counts)
    return f"{right}/{n} = {right / n:.2f}" if n else "–"


def rows(run_dir: Path) -> list[list[str]]:
    """One row per (task, N): each seed's train responses right, in seed order, and the totals
    over seeds for the train and dev queries. Every method of an episode shares its teacher's
    responses, so the first run found with an accuracy stands for the episode."""
    episodes: dict[tuple, dict] = {}
    for config, teacher in _docs(Path(run_dir)):
        if teacher.get("accuracy"):
            episodes.setdefault((config["task"], config["n"], config["seed"]), teacher["accuracy"])
    by_setting: dict[tuple, dict] = {}
    for (task, n, seed), acc in episodes.items():
        by_setting.setdefault((task, n), {})[seed] = acc
    out = []
    for (task, n), seeds in sorted(by_setting.items()):
        ordered = [seeds[s] for s in sorted(seeds)]
        per_seed = ", ".join(f"{a['train']['correct']}/{a['train']['n']}" for a in ordered)
        out.append([task, str(n), ", ".join(map(str, sorted(seeds))), per_seed,
                    _cell([a["train"] for a in ordered]), _cell([a["dev"] for a in ordered])])
    return out


HEADER = ["task", "N", "seeds", "train queries right, per seed", "train, all seeds",
          "dev, all seeds"]


def section(run_dir: Path) -> list[str]:
    from .tables import markdown

    body = rows(run_dir)
    if not body:
        return []
    return ["## The teacher's accuracy on the training queries", "",
            "How often the teacher (the base model with the episode's training examples as "
            "demonstrations, up to the other N − 1 for a training query) gives the gold answer "
            "on the queries it teaches: IA2 and KD learn its responses, not the gold labels. "
            "Settings whose runs learn from no teacher have no row; runs recorded before ia2 "
            "counted the teacher's answers get the count from "
            "scripts/teacher-accuracy-backfill.py.",
            "", markdown(HEADER, body), ""]
