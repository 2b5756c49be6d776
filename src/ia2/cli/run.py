"""`ia2 run CONFIG.yaml`: a whole study, resumable and shardable."""

from __future__ import annotations

from dataclasses import replace

from ..errors import IA2Error
from .common import add_runtime_options, runtime_from_args


def register(sub) -> None:
    p = sub.add_parser("run", help="run a study from a YAML config (resumable)")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and its size, run nothing")
    p.add_argument("--shard", metavar="I/N", help="run a deterministic 1/N of the grid (0-based I)")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the groups whose key matches GLOB (repeatable), e.g. "
                        "'icl/sst2/8/*'; --dry-run lists the groups left")
    p.add_argument("--out", help="override the config's output directory")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--record", metavar="DIR",
                   help="keep the study's committable record in DIR (default: the config's record:)")
    p.add_argument("--max-groups", type=int, metavar="K",
                   help="run at most K of the groups not finished yet, then stop (resumable)")
    p.add_argument("--executor", metavar="NAME",
                   help="sequential (default) or ray: groups as Ray tasks (docs/clusters.md)")
    p.add_argument("--address", metavar="ADDR",
                   help="ray: the cluster to join (auto, host:port, ray://...); default: a local one")
    add_runtime_options(p, training=True)  # override the study's runtime:
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_experiment
    from ..experiment import run_study

    config = load_experiment(args.config)
    if args.out:
        config.out = args.out
    if args.record:
        config.record = args.record
    if args.max_groups is not None and args.max_groups < 1:
        raise IA2Error(f"--max-groups must be >= 1, got {args.max_groups}")
    config.runtime = runtime_from_args(args, config.runtime)
    if args.executor or args.address:  # validated by ExecutorConfig, like the YAML's executor:
        name = args.executor or config.executor.name
        address = args.address or (config.executor.address if name == "ray" else None)
        config.executor = replace(config.executor, name=name, address=address)
    # a runtime this machine cannot give fails before anything is written (on a remote Ray
    # cluster the workers' machines decide)
    if not args.dry_run and config.executor.address is None:
        config.runtime.resolve()
    only = tuple(args.only)
    out = run_study(config, args.shard, args.dry_run, max_groups=args.max_groups, only=only)
    if args.max_groups is not None and not args.dry_run:  # what scripts/continue-study.sh reads
        from ..experiment import owned_groups
        from ..record import pending

        left = pending(config, owned_groups(config, args.shard, only))
        print(f"groups left: {len(left) if config.record else 'unknown (no record)'}")
    if args.dry_run or args.no_report:
        return 0
    from ..report import write_report

    report = write_report(out)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report}")
    return 0
