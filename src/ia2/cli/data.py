"""`ia2 data show`: one episode, and the ICL prompt exactly as the model sees it."""

from __future__ import annotations

from ..episodes import episode_fingerprint, make_episode
from ..tasks.prompts import answer_text, render_demo, render_query
from ..tasks.spec import PRESETS
from .common import add_task_options, task_spec

WIDTH = 90  # listings are cut to this many characters; the prompt never is


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect task data")
    actions = p.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print one episode and train example 0's ICL prompt")
    show.add_argument("task", help="a built-in task name (see `ia2 tasks`) or a task .yaml file")
    show.add_argument("--n", type=int, default=8, help="training examples N (default 8)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--data-dir", help="benchmark data directory (default: IA2_DATA_DIR)")
    show.add_argument("--preset", choices=PRESETS, default="natural", help="prompt format")
    show.add_argument("--max-demos", type=int, help="cap on demonstrations per example")
    show.add_argument("--min-words", type=int, help="same as --task-option min_words=N")
    show.add_argument("--eval-size", type=int, default=500)
    show.add_argument("--show-eval", type=int, default=5, help="eval queries to list")
    add_task_options(show)
    show.set_defaults(func=run)


def short(text: str, width: int = WIDTH) -> str:
    one_line = text.replace("\n", "\\n")
    return one_line if len(one_line) <= width else one_line[: width - 3] + "..."


def run(args) -> int:
    spec = task_spec(args.task, args, min_words=args.min_words)
    spec.template(args.preset)  # unknown preset for this task: a clear error before loading data
    ep = make_episode(spec, args.n, args.seed, data_dir=args.data_dir, max_demos=args.max_demos,
                      eval_size=args.eval_size, balanced=args.balanced)

    def line(i, ex):
        gold = answer_text(spec, ex, args.preset) if spec.kind == "classification" else ex.label
        query = short(render_query(spec, ex, args.preset), 60)
        return f"  [{i}] {ex.uid}  {short(repr(gold), 24)}  {query}"

    print(f"task {spec.name} ({spec.kind}), N={ep.n}, seed {ep.seed}, preset {args.preset}, "
          f"episode {episode_fingerprint(ep)[:16]}")
    print(f"train ({len(ep.train)}):")
    for i, ex in enumerate(ep.train):
        print(line(i, ex) + f"\n      demos {list(ep.demos_for_train[i])}")
    print(f"dev ({len(ep.dev)}):")
    for j, ex in enumerate(ep.dev):
        print(line(j, ex))
    print(f"demo pool: {len(ep.demo_pool)} examples")
    print(f"eval: {len(ep.eval)} examples; the first {min(args.show_eval, len(ep.eval))}:")
    for k, ex in enumerate(ep.eval[: args.show_eval]):
        print(line(k, ex))
    demos = [ep.train[i] for i in ep.demos_for_train[0]]
    prompt = "".join(render_demo(spec, d, args.preset) for d in demos)
    prompt += render_query(spec, ep.train[0], args.preset)
    print(f"\nICL prompt for train[0] ({len(demos)} demonstrations), between the rules:")
    print("-" * 40)
    print(prompt)
    print("-" * 40)
    return 0
