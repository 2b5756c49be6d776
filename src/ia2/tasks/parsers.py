"""Answer parsers for generation tasks: pull the final answer out of a model's text and compare it
with the gold answer after the same normalisation.

`parse_answer(name, text)` returns the normalised answer or None when there is none;
`answers_match(name, predicted, gold)` normalises both sides (a raw gold string, e.g. "1,000" or
"\\dfrac{1}{2}", is fine) and compares them. A None prediction never matches.

Known limits (documented, not bugs): MATH answers are compared as normalised strings, so `0.5` and
`\\frac{1}{2}` (or `x+1` and `1+x`) stay different; GSM8K compares numbers exactly, as decimals.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

from ..errors import IA2Error

# A number: optional sign and $, integer part with or without thousands separators, decimals.
_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\.\d+"
_NUM_RE = re.compile(_NUM)


def _canonical_number(text: str | None) -> str | None:
    """'$1,000.50' -> '1000.5'; '12.0' -> '12'; '-0' -> '0'; not a number -> None."""
    if text is None:
        return None
    t = text.strip().replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    t = t.rstrip(".")
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}` (nested braces kept) and `\\boxed x`."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)", text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth == 0:  # an unclosed brace is no answer
                out.append(text[i + 1 : j])
        elif i < len(text) and text[i] == " ":
            m2 = re.match(r" +([^\s$]+)", text[i:])
            if m2:
                out.append(m2.group(1))
    return out


# ---------------------------------------------------------------------------------------- GSM8K

def parse_gsm8k(text: str) -> str | None:
    """The first `#### n`, else the first `\\boxed{}`, else the first "the answer is n", else the
    last number. The first marked answer is the one the model gave: what follows it (a new
    question the model went on to invent) is not its answer."""
    for part in text.split("####")[1:]:
        m = _NUM_RE.search(part)
        if m:
            return _canonical_number(m.group(0))
    for box in boxed_contents(text):
        nums = _NUM_RE.findall(box)
        if nums:
            return _canonical_number(nums[-1])
    said = re.findall(r"answer is\s*:?\s*(" + _NUM + ")", text, flags=re.IGNORECASE)
    if said:
        return _canonical_number(said[0])
    nums = _NUM_RE.findall(text)
    return _canonical_number(nums[-1]) if nums else None


def normalize_gsm8k(answer: str) -> str | None:
    return _canonical_number(answer) or parse_gsm8k(answer)


# ----------------------------------------------------------------------------------------- MATH

def _strip_text_macros(s: str) -> str:
    # \text{cm} -> cm, \mbox{..} likewise (units are then compared as written)
    return re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)


def normalize_math(answer: str) -> str | None:
    """Normalise a MATH final answer (a subset of Hendrycks et al.'s `strip_string`)."""
    s = answer
    boxes = boxed_contents(s)
    if boxes:
        s = boxes[-1]
    s = s.replace("\\!", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _strip_text_macros(s)
    s = re.sub(r"\\[,;: ]", "", s)  # LaTeX spacing commands
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    # "x=5" -> "5" when the left side is a short variable name
    if s.count("=") == 1 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    if re.fullmatch(r"-?\d+/\d+", s):  # 3/4 -> \frac{3}{4}
        num, den = s.split("/")
        s = f"-\\frac{{{num[1:]}}}{{{den}}}" if num.startswith("-") else f"\\frac{{{num}}}{{{den}}}"
    return s or None


def parse_math(text: str) -> str | None:
    """The first `\\boxed{...}` (or `\\fbox{}`, `\\boxed x`) in the text, normalised; else None."""
    boxes = boxed_contents(text)
    return normalize_math(boxes[0]) if boxes else None


# ----------------------------------------------------------------------------------------- SciQ

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_sciq(answer: str) -> str | None:
    s = " ".join(answer.lower().translate(_PUNCT).split())
    return s or None


def parse_sciq(text: str) -> str | None:
    """The text after the first `####` (up to the end of that line), lowercased, no punctuation."""
    if "####" not in text:
        return None
    tail = text.split("####")[1].strip().split("\n")[0]
    return normalize_sciq(tail)


# ------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Parser:
    parse: Callable[[str], str | None]  # model text -> normalised answer or None
    normalize: Callable[[str], str | None]  # a bare answer (e.g. the gold) -> normalised form


PARSERS: dict[str, Parser] = {
    "gsm8k": Parser(parse_gsm8k, normalize_gsm8k),
    "math": Parser(parse_math, normalize_math),
    "sciq": Parser(parse_sciq, normalize_sciq),
}


def get_parser(name: str) -> Parser:
    if name not in PARSERS:
        raise IA2Error(f"unknown answer parser {name!r} (choose from {', '.join(PARSERS)})")
    return PARSERS[name]


def cut_at_stop(text: str, stops) -> str:
    """`text` before its first stop string: where a generated answer ends."""
    hits = [text.find(s) for s in stops if s and s in text]
    return text[: min(hits)] if hits else text


def parse_answer(name: str, text: str) -> str | None:
    return get_parser(name).parse(text)


def answers_match(name: str, predicted: str | None, gold: str) -> bool:
    """Whether a parsed prediction equals the gold answer after normalising both."""
    if predicted is None:
        return False
    norm = get_parser(name).normalize
    p, g = norm(predicted), norm(str(gold))
    return p is not None and p == g
