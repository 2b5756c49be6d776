"""Checks for the numbers in configs, shared so that every stage's message reads the same:
`train.lr must be a finite number > 0, got nan`. Configs call them from `__post_init__`, so a
bad value fails where the config is built (CLI or YAML alike), before anything is written."""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import IA2Error

SEED_MAX = 2**32 - 1  # numpy's seed range, which transformers' set_seed uses


def _fail(name: str, rule: str, value) -> None:
    raise IA2Error(f"{name} must be {rule}, got {value!r}")


def integer(name: str, value, low: int | None = None, high: int | None = None,
            optional: bool = False) -> None:
    """A whole number (not a bool) within [low, high]; None passes when `optional`."""
    if value is None and optional:
        return
    if low is not None and high is not None:
        rule = f"an integer in [{low}, {high}]"
    else:
        rule = "an integer" + (f" >= {low}" if low is not None else "")
        rule += f" <= {high}" if high is not None else ""
    if not isinstance(value, Integral) or isinstance(value, bool):
        _fail(name, rule, value)
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(name, rule, value)


def number(name: str, value, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """A finite real (not a bool, never NaN) within the bounds; open bounds exclude the end."""
    if value is None and optional:
        return
    if low is not None and high is not None:
        rule = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        rule = "a finite number"
        if low is not None:
            rule += f" {'>' if low_open else '>='} {low:g}"
        if high is not None:
            rule += f" {'<' if high_open else '<='} {high:g}"
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        _fail(name, rule, value)
    if low is not None and (value <= low if low_open else value < low):
        _fail(name, rule, value)
    if high is not None and (value >= high if high_open else value > high):
        _fail(name, rule, value)


def seed(name: str, value, optional: bool = False) -> None:
    integer(name, value, 0, SEED_MAX, optional)


def each(check, name: str, values, *args, **kwargs) -> None:
    """`check` on every item of a sequence, named `name[i]`."""
    for i, value in enumerate(values):
        check(f"{name}[{i}]", value, *args, **kwargs)


def choice(name: str, value, options) -> None:
    if value not in options:
        raise IA2Error(f"unknown {name} {value!r} (choose from {', '.join(options)})")
