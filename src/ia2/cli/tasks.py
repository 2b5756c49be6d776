"""`ia2 tasks`: the built-in benchmarks at a glance."""

from __future__ import annotations

from ..tasks import list_tasks


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the built-in tasks")
    p.set_defaults(func=run)


def rows() -> list[tuple[str, ...]]:
    out = [("name", "kind", "labels / parser", "eval-only", "ood", "files")]
    for spec in list_tasks():
        answers = "/".join(spec.label_words()) if spec.kind == "classification" else spec.parser
        out.append((spec.name, spec.kind, answers or "-", "yes" if spec.eval_only else "no",
                    ",".join(spec.ood) or "-",
                    " ".join(f"{split}={path}" for split, path in spec.source.files.items())))
    return out


def run(args) -> int:
    table = rows()
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print("files are relative to the data directory (--data-dir, IA2_DATA_DIR); "
          "see docs/tasks.md")
    return 0
