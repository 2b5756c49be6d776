"""`ia2 report RUN_DIR`: tables and plots from a study's results store."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write the markdown report (tables, plots) of a study")
    p.add_argument("run_dir", nargs="+", help="the study's output directory (holds "
                   "results.sqlite) or its record (ia2.record, e.g. results/repro-cpu); several: "
                   "one page, a section each")
    p.add_argument("--out", help="markdown file to write (one study: default "
                   "RUN_DIR/report/REPORT.md; several: required)")
    p.add_argument("--figures", help="directory for the PNGs and tables/ (CSV, LaTeX); default: "
                   "figures/ beside --out (several studies: each record's figures/)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os
    import shlex

    from ..report import write_report

    command = " ".join(["ia2 report", *(shlex.quote(os.path.normpath(d)) for d in args.run_dir)]
                       + [f"--{k} {shlex.quote(v)}" for k, v in (("out", args.out),
                                                               ("figures", args.figures)) if v])
    path = write_report(args.run_dir, args.out, args.figures, command)
    print(f"report: {path}")
    return 0
