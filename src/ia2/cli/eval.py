"""`ia2 eval`: score the base model (zero-shot or ICL) or a trained adapter on a task."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import IA2Error
from .common import add_runtime_options, add_task_options, runtime_from_args, task_spec

DEMO_MODES = ("per_query", "shared")  # ia2.evaluate.runner.DEMO_MODES (not imported: torch)
N_MINUS_1 = -1  # `--icl` without K


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model or adapter, with or without demonstrations")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--adapter", help="a trained adapter directory (PEFT format)")
    p.add_argument("--task", required=True)
    p.add_argument("--icl", type=int, nargs="?", const=N_MINUS_1, default=0, metavar="K",
                   help="K demonstrations from the episode's held-out pool (0: none); --icl "
                        "alone: N-1, what the teacher saw (the paper's ICL baseline)")
    p.add_argument("--icl-demos", choices=DEMO_MODES, default="per_query",
                   help="per_query: each query its own random draw (the paper's); shared: "
                        "--sets sets, each shared by every query, averaged")
    p.add_argument("--sets", type=int, default=3,
                   help="demonstration sets averaged (with --icl-demos shared)")
    p.add_argument("--demo-task", help="task the demonstrations come from (default: --task, or "
                                       "the task it is an OOD target of)")
    p.add_argument("--n", type=int, default=8, help="episode N (fixes the held-out demo pool)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=500, help="evaluation queries (default 500)")
    p.add_argument("--preset", default="natural")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data-dir")
    p.add_argument("--out", default="runs", help="directory of the results store (results.sqlite)")
    p.add_argument("--force", action="store_true", help="recompute even if stored")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_task_options(p)  # settings of --task and of the demonstrations' task
    add_runtime_options(p)
    p.set_defaults(func=run)


def _demo_spec(spec, name, args):
    from ..tasks.registry import list_tasks

    if name:
        return task_spec(name, args)
    if not spec.eval_only:
        return spec
    sources = [t for t in list_tasks() if spec.name in t.ood]
    if not sources:
        raise IA2Error(f"task {spec.name} is evaluation-only: pass --demo-task")
    return task_spec(sources[0].name, args)


def run(args) -> int:
    from ..episodes import eval_set, make_episode
    from ..evaluate.runner import EvalConfig, adapter_identity, evaluate_and_store
    from ..models import load_model
    from ..store import ResultsStore

    spec = task_spec(args.task, args)
    runtime = runtime_from_args(args).resolve()  # before any file is read
    if args.icl < 0 and args.icl != N_MINUS_1:
        raise IA2Error(f"--icl takes K >= 0, not {args.icl}")
    k = args.n - 1 if args.icl == N_MINUS_1 else args.icl
    config = EvalConfig(size=args.limit, icl_demos=args.icl_demos, icl_k=k, icl_sets=args.sets,
                        batch_size=args.batch_size, preset=args.preset)
    queries = eval_set(spec, args.data_dir, args.limit)
    demo_spec, demo_pool = None, ()
    if k:
        demo_spec = _demo_spec(spec, args.demo_task, args)
        demo_pool = make_episode(demo_spec, args.n, args.seed, args.data_dir,
                                 balanced=args.balanced).demo_pool
    if args.adapter:  # its files are checked before the model loads, its base model after
        from ..methods.integrity import load_adapter, verify_adapter

        verify_adapter(args.adapter)
    adapter_id = adapter_identity(args.adapter)
    model, tok = load_model(args.model, runtime)
    if args.adapter:
        model = load_adapter(model, args.adapter)
        setting = "adapter_icl" if k else "adapter"
    else:
        setting = "icl" if k else "zero_shot"
    identity = dict(model=model.ia2_fingerprint, adapter=adapter_id, method=None,
                    task=(demo_spec or spec).name, n=args.n if k else None,
                    seed=args.seed if k else None)
    with ResultsStore(Path(args.out) / "results.sqlite") as store:
        row = evaluate_and_store(store, model, tok, spec, queries, setting, config, identity,
                                 demo_pool, demo_spec, args.seed, force=args.force)
    metrics = {m: v for m, v in row["metrics"].items() if m != "per_set"}
    if args.json:
        demos = dict(icl_k=k, icl_demos=args.icl_demos) if k else {}
        print(json.dumps(dict(metrics, setting=setting, task=spec.name, **demos), indent=2,
                         sort_keys=True))
        return 0
    how = f"  k={k} per query" if args.icl_demos == "per_query" else f"  k={k}×{args.sets} sets"
    print(f"{args.model}  {spec.name}  {setting}" + (how if k else ""))
    for name in ("accuracy", "label_set_accuracy", "ece", "ece_equal_width", "mce", "brier", "nll",
                 "exact_match", "parsed_rate", "n"):
        if name in metrics:
            std = metrics.get(f"{name}_std")
            print(f"  {name:<20} {metrics[name]:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    print(f"stored in {Path(args.out) / 'results.sqlite'}")
    return 0
