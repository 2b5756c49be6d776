"""Options several sub-commands share, so a study's settings can be given on the command line:
`--task-option KEY=VALUE` (a study's `options:`), `--balanced` (its `balanced:`) and the runtime
flags `--device`, `--dtype`, `--attn-implementation`, ... (its `runtime:`)."""

from __future__ import annotations

import yaml

from ..errors import IA2Error


def add_task_options(parser) -> None:
    parser.add_argument("--task-option", dest="task_options", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a task setting, as in a study's options: (repeatable; e.g. "
                             "min_words=8); values are typed as YAML reads them")
    parser.add_argument("--balanced", action="store_true",
                        help="class-balanced train/dev draws (default: at random, the paper's)")


def parse_task_options(pairs) -> dict:
    """`["min_words=8", "stop=[.]"]` -> `{"min_words": 8, "stop": ["."]}`."""
    options = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise IA2Error(f"--task-option takes KEY=VALUE (e.g. min_words=8), not {pair!r}")
        if key in options:
            raise IA2Error(f"--task-option {key} is given twice")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # not YAML (e.g. a stray colon): the text itself
        if isinstance(value, dict):
            raise IA2Error(f"--task-option {key}: a mapping is not a task setting, got {text!r}")
        options[key] = value
    return options


def task_spec(name: str, args, **extra):
    """The task `name` with the command's --task-option settings (and `extra`, e.g. an older
    flag's value) applied; get_task rejects unknown settings and wrongly typed values."""
    from ..tasks.registry import get_task

    options = parse_task_options(args.task_options)
    for key, value in extra.items():
        if value is None:
            continue
        if key in options and options[key] != value:
            raise IA2Error(f"{key} is given twice, as {options[key]!r} and {value!r}")
        options[key] = value
    return get_task(name, **options)


RUNTIME_FLAGS = ("device", "dtype", "attn_implementation", "token_budget",
                 "gradient_checkpointing")


def add_runtime_options(parser, training: bool = False, batching: bool = True) -> None:
    """Where and how the model runs (ia2.runtime.Runtime, docs/gpus.md). Unset flags keep the
    default (`auto`) or, for `ia2 run`, the study's `runtime:`."""
    from ..runtime import ATTENTION, DTYPES

    parser.add_argument("--device", default=None,
                        help="auto (a GPU when there is one; default), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="the model's dtype: auto (bf16 on a GPU that has it, fp32 on the "
                             "CPU; default), bf16, fp16 or fp32")
    parser.add_argument("--attn-implementation", choices=ATTENTION, default=None,
                        help="auto (sdpa on a GPU, eager on the CPU; default), eager, sdpa, "
                             "flash_attention_2")
    if batching:
        parser.add_argument("--token-budget", type=int, default=None, metavar="TOKENS",
                            help="teacher/evaluation batches hold at most this many padded "
                                 "tokens (the batch size stays the cap)")
    if training:
        parser.add_argument("--gradient-checkpointing", action="store_true", default=None,
                            help="recompute activations in the backward pass (less memory)")


def runtime_from_args(args, base=None):
    """`base` (default: all `auto`) with the runtime flags that were given."""
    from dataclasses import replace

    from ..runtime import Runtime

    given = {k: getattr(args, k) for k in RUNTIME_FLAGS if getattr(args, k, None) is not None}
    return replace(base or Runtime(), **given)
