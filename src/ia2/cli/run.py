"""`ia2 run CONFIG.yaml`: a whole study, resumable and shardable."""

from __future__ import annotations

from .common import add_runtime_options, runtime_from_args


def register(sub) -> None:
    p = sub.add_parser("run", help="run a study from a YAML config (resumable)")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and its size, run nothing")
    p.add_argument("--shard", metavar="I/N", help="run a deterministic 1/N of the grid (0-based I)")
    p.add_argument("--out", help="override the config's output directory")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    add_runtime_options(p, training=True)  # override the study's runtime:
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_experiment
    from ..experiment import run_study

    config = load_experiment(args.config)
    if args.out:
        config.out = args.out
    config.runtime = runtime_from_args(args, config.runtime)
    if not args.dry_run:  # a runtime this machine cannot give fails before anything is written
        config.runtime.resolve()
    out = run_study(config, args.shard, args.dry_run)
    if args.dry_run or args.no_report:
        return 0
    from ..report import write_report

    report = write_report(out)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report}")
    return 0
