"""`ia2 teach`: collect (or find cached) teacher signals for one task episode."""

from __future__ import annotations

from ..errors import IA2Error
from ..teacher.sites import SITES
from .common import add_runtime_options, add_task_options, runtime_from_args, task_spec


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise IA2Error(f"--layers wants comma-separated integers, not {text!r}") from None


def register(sub) -> None:
    from ..models import DEFAULT_MODEL

    p = sub.add_parser("teach", help="run the ICL teacher on an episode and cache its signals")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")
    p.add_argument("--task", required=True, help="task name (see `ia2 tasks`)")
    p.add_argument("--n", type=int, default=8, help="training examples N (default 8)")
    p.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    p.add_argument("--site", choices=SITES, default="attn", help="activation site (default attn)")
    p.add_argument("--layers", default=None, help="comma-separated layer indices (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="response budget G (default: the task's)")
    p.add_argument("--storage-dtype", choices=("fp16", "bf16", "fp32"), default="fp16",
                   help="dtype the activations and full log-probs are cached in (default fp16; "
                        "--dtype is the model's)")
    p.add_argument("--topk", type=int, default=20, help="teacher top-k log-probs kept (default 20)")
    p.add_argument("--full-distribution", action="store_true",
                   help="also keep the full next-token log-probs (V per aligned position, in "
                        "--dtype; needed by `ia2 train --method kd --kd full`)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward (default 8)")
    p.add_argument("--preset", default="natural", help="prompt template preset (default natural)")
    p.add_argument("--constrain-to-labels", action="store_true",
                   help="classification: restrict the answer's first token to the label tokens")
    p.add_argument("--max-demos", type=int, default=None, help="cap on demonstrations per prompt")
    p.add_argument("--out", default=None, help="cache root (default: <cache>/teacher)")
    p.add_argument("--data-dir", default=None, help="benchmark data directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def run(args) -> int:
    from ..episodes import make_episode
    from ..models import load_model
    from ..teacher.collect import TeacherConfig, teach_episode

    config = TeacherConfig(
        site=args.site, layers=_layers(args.layers) if args.layers else None,
        max_new_tokens=args.max_new_tokens, topk=args.topk, batch_size=args.batch_size,
        dtype=args.storage_dtype, constrain_to_labels=args.constrain_to_labels, preset=args.preset,
        full_distribution=args.full_distribution)
    spec = task_spec(args.task, args)
    episode = make_episode(spec, args.n, args.seed, data_dir=args.data_dir,
                           max_demos=args.max_demos, balanced=args.balanced)
    model, tokenizer = load_model(args.model, runtime_from_args(args))
    tset = teach_episode(model, tokenizer, spec, episode, config, cache_root=args.out,
                         progress=not args.no_progress)
    status = "cached" if tset.computed == 0 else f"computed {tset.computed} examples"
    n = len(tset.train) + len(tset.dev)
    print(f"teacher signals for {n} examples ({len(tset.train)} train, {len(tset.dev)} dev): {status}")
    print(f"cache: {tset.path} ({_size(tset.nbytes)})")
    for split, acc in (tset.accuracy or {}).items():
        print(f"teacher accuracy on {split}: {acc['correct']}/{acc['n']} responses are the gold "
              "answer")
    return 0
