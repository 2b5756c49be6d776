"""A study's durable record: everything it decided and measured, small enough to commit.

The directory named by the experiment's `record:` (e.g. results/repro-cpu/) holds

    experiment.yaml         the study's config
    evaluations.jsonl       every results-store row (metrics, per-query outcomes), by key
    groups.jsonl            every finished group: wall time, seconds per stage, fingerprint
    runs/<task>/<run>.json  each training run's config, dev curves, best dev loss, adapter sha256
    selection/, analysis/   the learning-rate choices and the analyses, as the study wrote them

and no adapter weights, checkpoints or teacher signals. It is brought up to date after every
finished group (each file atomically). `ia2 run` restores it into the study's store first: a
group recorded with the same fingerprint is not run again, even on a machine without `runs/`.
`ia2 report <record>` reads it as it reads a study directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from statistics import median

import yaml

from .errors import IA2Error
from .io import exclusive_lock, write_json, write_text

log = logging.getLogger(__name__)

EVALUATIONS, GROUPS = "evaluations.jsonl", "groups.jsonl"
COPIED = ("selection", "analysis")  # study subdirectories copied as they are
# Config keys a group's results do not depend on (or that say which groups exist).
_NOT_RESULTS = ("name", "out", "record", "executor", "runtime", "methods", "baselines", "n",
                "tasks", "seeds", "lr", "beta")
_NOT_NUMBERS = (("eval", "batch_size"), ("teacher", "batch_size"), ("train", "progress"),
                ("train", "report_to"), ("train", "save_total_limit"))


def fingerprint(config, group) -> str:
    """A hash of what `group`'s results depend on: the config less what names other groups
    (a seed or method added later leaves finished groups alone) and less where it runs."""
    doc = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RESULTS}
    for section, key in _NOT_NUMBERS:
        doc[section].pop(key, None)
    entry = next(e for e in config.tasks if e.task == group.task)
    doc.update(group=group.key, dtype=_dtype(config.runtime), task_options=entry.options,
               ood=entry.ood)
    if group.kind == "method":
        doc.update(seeds=config.seeds, lr=config.lr,
                   beta=config.beta if group.method == "ia2+sft" else None)
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dtype(runtime) -> str:
    """The dtype the model runs in here ("auto" resolved: fp32 on a CPU, bf16 on most GPUs)."""
    try:
        return runtime.resolve().dtype
    except IA2Error:  # a device this machine lacks (a dry run, a remote cluster's driver)
        return runtime.dtype


def is_record(path) -> bool:
    return (Path(path) / GROUPS).is_file()


def _jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError) as e:
        raise IA2Error(f"{path}: not a readable study record ({e})") from None


def read(path) -> tuple[list[dict], list[dict]]:
    """(evaluation rows, group records) of the record at `path`."""
    path = Path(path)
    rows = _jsonl(path / EVALUATIONS) if (path / EVALUATIONS).is_file() else []
    return rows, _jsonl(path / GROUPS) if (path / GROUPS).is_file() else []


def _lines(docs: list[dict]) -> str:
    return "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def _run_doc(run_dir: Path) -> dict:
    doc = {"config": yaml.safe_load((run_dir / "config.yaml").read_text()),
           "run": json.loads((run_dir / "run.json").read_text())}
    if (run_dir / "teacher.json").is_file():
        doc["teacher"] = json.loads((run_dir / "teacher.json").read_text())
    return doc


def _with_teacher_accuracy(doc: dict, recorded: dict | None) -> dict:
    """`doc`, keeping the teacher accuracy the record holds for the same teacher where the run
    directory, written before ia2 counted it, has none (scripts/teacher-accuracy-backfill.py)."""
    mine, theirs = doc.get("teacher"), (recorded or {}).get("teacher")
    if (mine and theirs and "accuracy" not in mine and "accuracy" in theirs
            and mine.get("key") == theirs.get("key")):
        return {**doc, "teacher": {**mine, "accuracy": theirs["accuracy"]}}
    return doc


def _rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows by key: a newer copy replaces an older one, except that a row with per-query
    outcomes is never replaced by one without (a store written before they existed)."""
    out = {r["key"]: r for r in old}
    for r in new:
        have = out.get(r["key"])
        if have is None or not (have.get("per_query") and not r.get("per_query")):
            out[r["key"]] = r
    return [out[k] for k in sorted(out)]


def _groups(old: list[dict], new: list[dict]) -> list[dict]:
    """Group records by key, the one finished last winning (a tie goes to `new`)."""
    out = {g["key"]: g for g in old}
    for g in new:
        have = out.get(g["key"])
        if have is None or (g.get("finished") or "") >= (have.get("finished") or ""):
            out[g["key"]] = g
    return [out[k] for k in sorted(out)]


def _lock(rec: Path):
    """Shards of one study may share a record (on a shared file system): one writes at a time.
    The lock file sits beside the record, not in it (it is not committed)."""
    return exclusive_lock(rec.parent / f".{rec.name}.lock")


def save(study, store) -> Path:
    """Bring the record of `study` (experiment.Study) up to date with its store and files,
    keeping what other processes (shards) recorded there."""
    from .config import dump

    rec = Path(study.config.record)
    with _lock(rec):
        old_rows, old_groups = read(rec) if is_record(rec) else ([], [])
        _write_if_changed(rec / "experiment.yaml", dump(study.config))
        _write_if_changed(rec / EVALUATIONS, _lines(_rows(old_rows, store.rows())))
        for run_json in sorted(study.out.glob("runs/*/*/run.json")):
            run_dir = run_json.parent
            target = rec / "runs" / run_dir.parent.name / f"{run_dir.name}.json"
            have = json.loads(target.read_text()) if target.is_file() else None
            doc = _with_teacher_accuracy(_run_doc(run_dir), have)
            if have != doc:
                write_json(target, doc)
        for sub in COPIED:
            for src in sorted((study.out / sub).rglob("*.json")):
                _write_if_changed(rec / src.relative_to(study.out),
                                  src.read_text(encoding="utf-8"))
        # last: a group is in the record only once everything it made is
        _write_if_changed(rec / GROUPS, _lines(_groups(old_groups, store.groups())))
    return rec


def restore(study, store) -> int:
    """Load the record of `study` into its store and output directory: its rows and groups
    where the store lacks them or has older ones, its selection and analysis files where they
    differ (the record is what every machine shares). Returns how many groups it holds."""
    rec = study.config.record and Path(study.config.record)
    if not rec or not is_record(rec):
        return 0
    with _lock(rec):
        rows, groups = read(rec)
        for row in rows:
            have = store.get(row["key"])
            if have is None or (row.get("per_query") and not have.get("per_query")):
                store.add(row, overwrite=True)
        local = {g["key"]: g for g in store.groups()}
        for g in _groups(list(local.values()), groups):
            if local.get(g["key"]) != g:
                store.add_group(g)
        for sub in COPIED:
            for src in sorted((rec / sub).rglob("*.json")):
                _write_if_changed(study.out / src.relative_to(rec),
                                  src.read_text(encoding="utf-8"))
    return len(groups)


def finished(config) -> list[dict]:
    """The finished groups that the study's record and its store hold (none without a record)."""
    from .store import read_stores

    if not config.record:
        return []
    done = read(config.record)[1] if is_record(config.record) else []
    db = config.out_dir / "results.sqlite"
    if db.is_file():
        done += read_stores([db], "groups")
    return done


def pending(config, work: list, done: list[dict] | None = None) -> list:
    """The groups of `work` that `done` (default: `finished(config)`) does not hold with their
    current fingerprint (only a study with a record skips groups this way)."""
    if not config.record:
        return list(work)
    done = finished(config) if done is None else done
    prints = {(g["key"], g.get("fingerprint")) for g in done}
    return [g for g in work if (g.key, fingerprint(config, g)) not in prints]


def pace(config, work, done) -> tuple[float, str] | None:
    """Hours the groups `work` take at the pace the finished groups `done` kept (those with
    the current fingerprint): each group's FLOPs (the compute model's, counted for the group
    alone: a teacher shared by a cell's groups is charged to each) times the median seconds per
    FLOP of the finished groups of its kind (zero-shot, ICL, method; of all kinds for a kind
    none finished), and how. The median, because a group that shared the cores with other jobs
    can run several times slower (docs/reproduction.md)."""
    from .estimate import flops
    from .experiment import groups

    grid = {g.key: g for g in groups(config)}
    newest = {d["key"]: d for d in sorted(done, key=lambda d: d.get("finished") or "")
              if d["key"] in grid and d.get("seconds")
              and d.get("fingerprint") == fingerprint(config, grid[d["key"]])}
    per_flop: dict[str, list[float]] = {}
    for key, d in newest.items():
        if work_done := flops(config, [grid[key]]):
            per_flop.setdefault(grid[key].kind, []).append(d["seconds"] / work_done)
    if not per_flop:
        return None
    rate = {k: median(v) for k, v in per_flop.items()}
    overall = median([r for v in per_flop.values() for r in v])
    hours = sum(flops(config, [g]) * rate.get(g.kind, overall) for g in work) / 3600
    hosts = ", ".join(sorted({str(d.get("host")) for d in newest.values()}))
    kinds = ", ".join(f"{k} {rate[k] * 1e12:.2f}" for k in sorted(rate))
    return hours, (f"the FLOPs left at the median seconds per TFLOP of the {len(newest)} recorded "
                   f"groups by kind ({kinds}; on {hosts})")
