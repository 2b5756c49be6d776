"""Options several sub-commands share, so a study's task settings can be given on the command
line: `--task-option KEY=VALUE` (a study's `options:`) and `--balanced` (its `balanced:`)."""

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
