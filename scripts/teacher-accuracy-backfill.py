"""Add the teacher's accuracy (ia2.teacher.quality) to a record's runs that were recorded before
ia2 kept it:  python scripts/teacher-accuracy-backfill.py configs/repro-cpu.yaml

For each episode whose runs lack it, the teacher is run again from the teacher config the runs
recorded (through the teacher cache, so usually cheaply) and must reproduce the recorded cache
key: the same model, prompts and settings. The count is then written into those runs' teacher
docs, marked "recomputed" with the date, and nothing else in the record changes.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path


def main(config_path: str) -> int:
    from ia2 import record
    from ia2.config import load_experiment
    from ia2.experiment import Study
    from ia2.io import write_json
    from ia2.teacher.collect import TeacherConfig, teach_episode

    config = load_experiment(config_path)
    rec = Path(config.record)
    study = Study(config)
    todo: dict[tuple, list[Path]] = {}
    for f in sorted(rec.glob("runs/*/*.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        if doc.get("teacher") and "accuracy" not in doc["teacher"]:
            c = doc["config"]
            todo.setdefault((c["task"], c["n"], c["seed"], doc["teacher"]["key"]), []).append(f)
    today = datetime.date.today().isoformat()
    model = tok = None
    for (task, n, seed, key), files in sorted(todo.items()):
        doc = json.loads(files[0].read_text(encoding="utf-8"))
        cfg = {k: tuple(v) if isinstance(v, list) else v
               for k, v in doc["teacher"]["config"].items()}
        if model is None:
            model, tok = study.model()
        tset = teach_episode(model, tok, study.spec(task), study.episode(task, n, seed),
                             TeacherConfig(**cfg), progress=False)
        if tset.key != key:
            print(f"error: {task} N={n} seed {seed}: the teacher's inputs changed since it was "
                  f"recorded (cache key {tset.key[:12]}, recorded {key[:12]}); left as it is",
                  file=sys.stderr)
            return 1
        if tset.accuracy is None:
            print(f"{task} N={n} seed {seed}: the teacher's accuracy cannot be counted "
                  "(ia2.teacher.quality); left as it is")
            continue
        acc = {**tset.accuracy, "recomputed": today}
        with record._lock(rec):
            for f in files:
                d = json.loads(f.read_text(encoding="utf-8"))
                d["teacher"]["accuracy"] = acc
                write_json(f, d)
        print(f"{task} N={n} seed {seed}: train {acc['train']['correct']}/{acc['train']['n']}, "
              f"dev {acc['dev']['correct']}/{acc['dev']['n']} ({len(files)} runs)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[0])
    sys.exit(main(sys.argv[1]))
