"""The results store: one SQLite row per finished evaluation, keyed by the run's identity.

Every write is one transaction, so a killed process leaves either the whole row or none. The
database runs in WAL mode: readers (reports, other workers) never block on a writer. `add` is
idempotent on the key; `merge` unions stores written by separate machines or processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from .errors import IA2Error
from .io import atomic_path

SETTINGS = ("zero_shot", "icl", "adapter", "adapter_icl")
METRIC_COLUMNS = ("accuracy", "label_set_accuracy", "ece", "brier", "nll", "exact_match")
IDENTITY = ("model", "adapter", "method", "task", "eval_task", "n", "seed", "lr", "beta", "setting")
# per_query: each query's correctness and confidence (in the evaluation set's order), what a
# bootstrap over queries resamples; None in rows written before it existed.
COLUMNS = ("key",) + IDENTITY + METRIC_COLUMNS + ("metrics", "definitions", "per_query", "created")
_TYPES = {"n": "INTEGER", "seed": "INTEGER", "lr": "REAL", "beta": "REAL",
          **{m: "REAL" for m in METRIC_COLUMNS}}
_SCHEMA = ("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, "
           + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS[1:]) + ")")
# One row per study group (experiment.Group.key): where the study's time went.
# stages: seconds per pipeline stage (teacher, train, evaluate, analysis) as JSON; fingerprint:
# what the group's results depend on (ia2.record), so a changed config reruns it.
GROUP_COLUMNS = ("key", "executor", "seconds", "trained", "evaluated", "host", "finished",
                 "stages", "fingerprint")
_GROUP_SCHEMA = ("CREATE TABLE IF NOT EXISTS groups (key TEXT PRIMARY KEY, executor TEXT, "
                 "seconds REAL, trained INTEGER, evaluated INTEGER, host TEXT, finished TEXT, "
                 "stages TEXT, fingerprint TEXT)")


def run_key(**identity) -> str:
    """A stable key from identity fields: sorted `name=value` pairs joined by `|` (None skipped)."""
    return "|".join(f"{k}={identity[k]}" for k in sorted(identity) if identity[k] is not None)


def _row_values(row: dict) -> tuple:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise IA2Error(f"results row: unknown fields {', '.join(sorted(unknown))}")
    if not row.get("key"):
        raise IA2Error("results row: needs a non-empty 'key'")
    if row.get("setting") not in SETTINGS:
        raise IA2Error(f"results row {row['key']}: setting must be one of {', '.join(SETTINGS)}, "
                       f"got {row.get('setting')!r}")
    metrics = row.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise IA2Error(f"results row {row['key']}: metrics must be a dict")
    full = dict(row)
    for m in METRIC_COLUMNS:  # headline columns come from the metrics unless given explicitly
        full.setdefault(m, metrics.get(m))
    full["metrics"] = json.dumps(metrics, sort_keys=True)
    full["definitions"] = json.dumps(row.get("definitions") or {}, sort_keys=True)
    if full.get("per_query") is not None and not isinstance(full["per_query"], str):
        full["per_query"] = json.dumps(full["per_query"], sort_keys=True)
    full.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if full.get("adapter") is not None:
        full["adapter"] = str(full["adapter"])
    return tuple(full.get(c) for c in COLUMNS)


def _decode(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["metrics"] = json.loads(d["metrics"] or "{}")
    d["definitions"] = json.loads(d["definitions"] or "{}")
    d["per_query"] = json.loads(d["per_query"]) if d.get("per_query") else None
    return d


class ResultsStore:
    """`with ResultsStore(path) as store: store.add({...})`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.db:
                self.db.execute(_SCHEMA)
                self.db.execute(_GROUP_SCHEMA)
                for table, cols in (("results", COLUMNS), ("groups", GROUP_COLUMNS)):
                    have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                    for c in cols:  # a store written by an earlier version gains new columns
                        if c not in have:
                            kind = _TYPES.get(c, "TEXT") if table == "results" else "TEXT"
                            try:
                                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {c} {kind}")
                            except sqlite3.OperationalError as e:  # another process added it
                                if "duplicate column" not in str(e):
                                    raise
        except sqlite3.DatabaseError as e:
            raise IA2Error(f"{self.path}: not a usable results database ({e})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> dict | None:
        r = self.db.execute("SELECT * FROM results WHERE key = ?", (key,)).fetchone()
        return None if r is None else _decode(r)

    def add(self, row: dict, overwrite: bool = False) -> bool:
        """Insert a row; an existing key is kept unless `overwrite`. Returns whether it wrote."""
        values = _row_values(row)
        verb = "INSERT OR REPLACE" if overwrite else "INSERT OR IGNORE"
        with self.db:  # one transaction: committed whole or rolled back
            cur = self.db.execute(f"{verb} INTO results ({', '.join(COLUMNS)}) "
                                  f"VALUES ({', '.join('?' * len(COLUMNS))})", values)
        return cur.rowcount > 0

    def rows(self, **filters) -> list[dict]:
        """Rows whose columns equal the given values (a list/tuple value means any of them)."""
        bad = set(filters) - set(COLUMNS)
        if bad:
            raise IA2Error(f"results: cannot filter on {', '.join(sorted(bad))}")
        where, args = [], []
        for col, val in filters.items():
            if isinstance(val, (list, tuple, set)):
                val = list(val)
                where.append(f"{col} IN ({', '.join('?' * len(val))})")
                args += val
            elif val is None:
                where.append(f"{col} IS NULL")
            else:
                where.append(f"{col} = ?")
                args.append(str(val) if col == "adapter" else val)
        sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        return [_decode(r) for r in self.db.execute(sql + " ORDER BY key", args)]

    def add_group(self, record: dict) -> None:
        """Record (or replace) a group's wall time and what it computed."""
        record = dict(record)
        record.setdefault("finished", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if isinstance(record.get("stages"), dict):
            record["stages"] = json.dumps(record["stages"], sort_keys=True)
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO groups ({', '.join(GROUP_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(GROUP_COLUMNS))})",
                            tuple(record.get(c) for c in GROUP_COLUMNS))

    def groups(self) -> list[dict]:
        out = [dict(r) for r in self.db.execute("SELECT * FROM groups ORDER BY key")]
        for g in out:
            g["stages"] = json.loads(g["stages"]) if g.get("stages") else None
        return out

    def export_jsonl(self, path: str | os.PathLike) -> int:
        """Write every row as one JSON line (sorted by key), atomically. Returns the row count."""
        rows = self.rows()
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, sort_keys=True) + "\n")
        return len(rows)

    def merge(self, other_paths) -> int:
        """Add every row of the other stores whose key is not here yet (one transaction).
        Returns how many rows were added."""
        return self._insert_new(read_stores(other_paths))

    def _insert_new(self, incoming: list[dict], table: str = "results") -> int:
        """Add raw rows (as `read_stores` returns them) whose key is not here yet."""
        cols = COLUMNS if table == "results" else GROUP_COLUMNS
        before = self.db.total_changes
        with self.db:
            self.db.executemany(
                f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})",
                [tuple(r.get(c) for c in cols) for r in incoming])
        return self.db.total_changes - before


def read_stores(paths, table: str = "results") -> list[dict]:
    """Every row of the stores at `paths`, read-only; a missing or unreadable one is an error.
    `groups` is optional: stores written before it have none."""
    incoming = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise IA2Error(f"{p}: no such results database")
        try:
            other = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            other.row_factory = sqlite3.Row
            try:
                if table == "groups" and not other.execute(
                        "SELECT 1 FROM sqlite_master WHERE name = 'groups'").fetchone():
                    continue
                incoming += [dict(r) for r in other.execute(f"SELECT * FROM {table}")]
            finally:
                other.close()
        except sqlite3.DatabaseError as e:
            raise IA2Error(f"{p}: not a results database ({e})") from None
    return incoming


def merge_stores(target, sources) -> tuple[int, int]:
    """Merge `sources` into the store at `target`: (rows added, rows now in it). Every source is
    read before the target is opened, so a bad source leaves no empty target behind. Group
    records (wall times) are joined too."""
    incoming, groups = read_stores(sources), read_stores(sources, "groups")
    with ResultsStore(target) as store:
        store._insert_new(groups, "groups")
        return store._insert_new(incoming), len(store.rows())
