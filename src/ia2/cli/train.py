"""`ia2 train`: one method on one task episode; writes a run directory (adapter, config, curves).

Runs the same under `torchrun --nproc_per_node K` (data parallel; the global batch is split)."""

from __future__ import annotations

from ..methods.adapters import ADAPTERS, AdapterConfig
from ..methods.losses import ALIGNMENTS, KD_MODES
from ..methods.pipeline import METHODS, RunConfig, run_episode
from ..methods.trainer import TrainConfig
from ..models import DEFAULT_MODEL
from .common import (add_runtime_options, add_task_options, parse_task_options,
                     runtime_from_args)


def register(sub) -> None:
    p = sub.add_parser("train", help="train an adapter with one of the paper's methods")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")
    p.add_argument("--task", required=True, help="task name (see `ia2 tasks`)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--n", type=int, default=8, help="training examples N (default 8)")
    p.add_argument("--seed", type=int, default=0, help="episode and training seed")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--sft-lr", type=float, default=None,
                   help="learning rate of the sft stage of ia2->sft / sft->ia2 (default: --lr)")
    p.add_argument("--beta", type=float, default=0.5, help="CE weight of ia2+sft (default 0.5)")
    p.add_argument("--labels", choices=("ground_truth", "icl"), default="ground_truth",
                   help="sft's targets: gold answers or the teacher's ICL responses")
    p.add_argument("--alignment", choices=ALIGNMENTS, default="mse", help="IA2 distance")
    p.add_argument("--kd", choices=KD_MODES, default="full",
                   help="kd's teacher distribution: full vocabulary (exact KL; the teacher is "
                        "collected with it) or the cached top-k (default full)")
    p.add_argument("--adapter", choices=ADAPTERS, default="lora")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha follows it)")
    p.add_argument("--epochs", type=int, default=50, help="epoch limit (default 50)")
    p.add_argument("--batch-size", type=int, default=4, help="global batch size (default 4)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in evaluations")
    p.add_argument("--max-demos", type=int, default=None, help="cap on demonstrations per prompt")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>/<task>/<method>-...)")
    p.add_argument("--data-dir", default=None, help="benchmark data directory")
    p.add_argument("--overwrite", action="store_true", help="retrain even if the run is finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_options(p)
    add_runtime_options(p, training=True)
    p.set_defaults(func=run)


def config_from_args(args) -> RunConfig:
    return RunConfig(
        method=args.method, labels=args.labels, beta=args.beta, alignment=args.alignment,
        sft_lr=args.sft_lr, kd=args.kd,
        adapter=AdapterConfig(kind=args.adapter, r=args.rank, alpha=args.rank),
        train=TrainConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                          patience=args.patience, seed=args.seed, progress=not args.no_progress),
    )


def run(args) -> int:
    from accelerate import PartialState

    from ..models import check_name
    from ..tasks.registry import get_task

    # every input is checked before run_episode may find a finished run or write anything
    config = config_from_args(args)
    options = parse_task_options(args.task_options)
    get_task(args.task, **options)
    check_name(args.model)
    runtime = runtime_from_args(args).resolve()
    result = run_episode(args.model, args.task, config, args.n, args.seed, out_dir=args.out,
                         data_dir=args.data_dir, overwrite=args.overwrite,
                         max_demos=args.max_demos, task_options=options, balanced=args.balanced,
                         runtime=runtime)
    if PartialState().is_main_process:
        verb = "trained" if result.trained else "already finished (pass --overwrite to retrain)"
        for name, stage in result.stages.items():
            print(f"{name}: best dev loss {stage['best_dev_loss']:.6g} at step {stage['best_step']} "
                  f"of {stage['steps']}")
        print(f"{args.method} {verb}: {result.out_dir}")
    return 0
