"""Stage 1: read benchmark files (local copies or the hub) into `Example`s.

Two layers. A *reader* turns a file format (TSV, CSV, JSON lines, JSON list) into numbered rows.
A *row mapper* (named by `Source.loader`) turns one row, in the hub dataset's field layout, into an
Example; the local files use the same layout or say how theirs differs (`hub` flag), so local and
hub give the same examples, only the uids differ.

Rows are numbered as an editor shows them: for line formats the row is the line the record starts
on (a header is line 1); for a JSON list it is the item's position from 1. A uid is
"<file relative to the data directory>:<row>", e.g. "sst2/train.tsv:124".
"""

from __future__ import annotations

import csv
import json
import random
import string
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import DataError, IA2Error
from .parsers import boxed_contents
from .spec import Example, TaskSpec

Row = tuple[int, dict]


class RowError(ValueError):
    """A row a mapper cannot use; the caller adds the file and row."""


# --------------------------------------------------------------------------------------- readers

def _open(path: Path, encoding: str):
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise IA2Error(f"data file {path} not found") from None
    except OSError as e:
        raise IA2Error(f"cannot read data file {path}: {e.strerror or e}") from None


def read_table(path: Path, *, delimiter: str = ",", columns: list[str] | None = None,
               encoding: str = "utf-8", quoting: bool = True) -> Iterator[Row]:
    """Delimited text; the header names the columns unless `columns` is given. Newline-agnostic
    (CR-only files such as FinPhraseBank's read fine). TSVs are read without quote handling."""
    mode = csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    with _open(path, encoding) as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=mode, strict=True)
        start = 1
        try:
            for cells in reader:
                row, start = start, reader.line_num + 1
                if not cells:
                    continue  # blank line
                if columns is None:
                    columns = [c.strip() for c in cells]
                    continue
                if len(cells) != len(columns):
                    raise DataError(path, f"expected {len(columns)} columns "
                                          f"({', '.join(columns)}), found {len(cells)}", row)
                yield row, dict(zip(columns, cells))
        except csv.Error as e:
            kind = "CSV" if delimiter == "," else "TSV"
            raise DataError(path, f"malformed {kind}: {e}", start) from None
        except UnicodeDecodeError as e:
            raise DataError(path, f"not {encoding} text ({e.reason})", start) from None


def read_jsonl(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    with _open(path, encoding) as f:
        row = 0
        try:
            for row, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})",
                                    row) from None
                if not isinstance(obj, dict):
                    raise DataError(path, f"expected a JSON object, found {type(obj).__name__}",
                                    row)
                yield row, obj
        except UnicodeDecodeError as e:
            raise DataError(path, f"not {encoding} text ({e.reason})", row + 1) from None


def read_json_list(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    with _open(path, encoding) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON at line {e.lineno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise DataError(path, f"not {encoding} text ({e.reason})") from None
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of objects, found {type(data).__name__}")
    for row, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, found {type(obj).__name__}", row)
        yield row, obj


def read_rows(path: Path, options: dict) -> Iterator[Row]:
    """Pick the reader from `options["format"]`, else from the file's suffix."""
    fmt = options.get("format") or path.suffix.lstrip(".").lower()
    enc = options.get("encoding", "utf-8")
    if fmt in ("csv", "tsv"):
        return read_table(path, delimiter="\t" if fmt == "tsv" else ",", encoding=enc,
                          columns=options.get("columns"), quoting=fmt == "csv")
    if fmt == "jsonl":
        return read_jsonl(path, enc)
    if fmt == "json":
        return read_json_list(path, enc)
    raise IA2Error(f"{path}: unknown data format {fmt!r} (use .jsonl, .json, .csv or .tsv)")


# ------------------------------------------------------------------------------- field helpers

def field(row: dict, name: str):
    if name not in row or row[name] is None:
        raise RowError(f"missing field {name!r}")
    return row[name]


def text(row: dict, name: str) -> str:
    """A text field, whitespace collapsed; empty is an error."""
    value = " ".join(str(field(row, name)).split())
    if not value:
        raise RowError(f"field {name!r} is empty")
    return value


def code(row: dict, name: str, codes: dict[str, int | None]) -> int | None:
    """Look a label code up (compared as text, so 1 and "1" agree); None means 'drop the row'."""
    raw = str(field(row, name)).strip()
    if raw not in codes:
        raise RowError(f"label {raw!r} in field {name!r} is not one of {', '.join(codes)}")
    return codes[raw]


def cut_words(s: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary (a single over-long word is cut)."""
    if len(s) <= limit:
        return s
    head = s[: limit + 1]
    cut = head.rfind(" ")
    return (head[:cut] if cut > 0 else s[:limit]).rstrip()


def shuffled_choices(uid: str, correct: str, distractors: list[str]) -> tuple[list[str], int]:
    """Options in an order fixed by the uid (so the correct letter varies but never changes)."""
    options = [correct, *distractors]
    order = list(range(len(options)))
    random.Random(f"choices:{uid}").shuffle(order)
    return [options[i] for i in order], order.index(0)


# ---------------------------------------------------------------------------------- row mappers
# Each mapper: (row, uid, spec, hub) -> Example, or None to drop the row (e.g. neutral labels).

BINARY = {"0": 0, "1": 1}


def sst2(r, uid, spec, hub):
    return Example({"text": text(r, "sentence")}, code(r, "label", BINARY), uid)


def finphrasebank(r, uid, spec, hub):
    codes = ({"0": 0, "2": 1, "1": None} if hub
             else {"negative": 0, "positive": 1, "neutral": None})
    label = code(r, "label", codes)
    return None if label is None else Example({"text": text(r, "sentence")}, label, uid)


def poem_sentiment(r, uid, spec, hub):
    codes = ({"0": 0, "1": 1, "2": None, "3": None} if hub
             else {"-1": 0, "1": 1, "0": None, "2": None})
    label = code(r, "label", codes)
    return None if label is None else Example({"text": text(r, "verse_text" if hub else "text")},
                                              label, uid)


def agnews(r, uid, spec, hub):
    if hub:  # the hub joins title and description with a space; so do we
        label = code(r, "label", {str(i): i for i in range(4)})
        return Example({"text": text(r, "text")}, label, uid)
    body = text(r, "title") + " " + text(r, "description")
    return Example({"text": body}, code(r, "label", {str(i + 1): i for i in range(4)}), uid)


# BBC categories onto AG News labels (World, Sports, Business, Sci/Tech).
BBC_TO_AGNEWS = {"entertainment": 0, "politics": 0, "sport": 1, "business": 2, "tech": 3}


def bbcnews(r, uid, spec, hub):
    label = code(r, "label_text" if hub else "category", BBC_TO_AGNEWS)
    limit = spec.source.options.get("max_chars", 256)
    return Example({"text": cut_words(text(r, "text"), limit)}, label, uid)


def strategyqa(r, uid, spec, hub):
    label = code(r, "answer", {"False": 0, "True": 1, "false": 0, "true": 1})  # JSON bools
    return Example({"question": text(r, "question")}, label, uid)


def sciq(r, uid, spec, hub):
    distractors = [text(r, f"distractor{i}") for i in (1, 2, 3)]
    options, label = shuffled_choices(uid, text(r, "correct_answer"), distractors)
    return Example({"question": text(r, "question"), "choices": "\n".join(options)}, label, uid)


def sciq_gen(r, uid, spec, hub):
    answer, support = text(r, "correct_answer"), " ".join(str(r.get("support") or "").split())
    solution = f"{support}\n#### {answer}" if support else f"#### {answer}"
    return Example({"question": text(r, "question")}, answer, uid, solution)


def qasc(r, uid, spec, hub):
    choices = field(r, "choices")
    if not isinstance(choices, dict) or not {"text", "label"} <= choices.keys():
        raise RowError("field 'choices' must be an object with 'text' and 'label' lists")
    options = [" ".join(str(t).split()) for t in choices["text"]]
    if len(options) != len(spec.labels) or list(choices["label"]) != list(spec.labels):
        raise RowError(f"expected {len(spec.labels)} choices labelled {', '.join(spec.labels)}")
    label = code(r, "answerKey", {k: i for i, k in enumerate(spec.labels)})
    return Example({"question": text(r, "question"), "choices": "\n".join(options)}, label, uid)


def gsm8k(r, uid, spec, hub):
    solution = str(field(r, "answer")).strip()
    if "####" not in solution:
        raise RowError("field 'answer' has no '#### <number>' final answer")
    gold = solution.rsplit("####", 1)[1].strip()
    if not gold:
        raise RowError("field 'answer' has nothing after '####'")
    return Example({"question": str(field(r, "question")).strip()}, gold, uid, solution)


def math(r, uid, spec, hub):
    solution = str(field(r, "solution")).strip()
    boxes = boxed_contents(solution)
    if not boxes or not boxes[-1].strip():
        raise RowError("field 'solution' has no \\boxed{...} final answer")
    return Example({"problem": str(field(r, "problem")).strip()}, boxes[-1].strip(), uid, solution)


def user(r, uid, spec, hub):
    """A user's task: `options` (from the YAML spec) names the fields."""
    o = spec.source.options
    inputs = {name: str(field(r, name)).strip() for name in o["text_fields"]}
    if o.get("choices_field"):
        raw = field(r, o["choices_field"])
        options = raw if isinstance(raw, list) else str(raw).split("\n")
        inputs["choices"] = "\n".join(" ".join(str(c).split()) for c in options)
    raw = field(r, o["label_field"])
    if spec.kind == "generation":
        solution = str(field(r, o["solution_field"])) if o.get("solution_field") else None
        return Example(inputs, str(raw).strip(), uid, solution)
    names = {n: i for i, n in enumerate(spec.labels)}
    key = str(raw).strip()
    if key in names:
        return Example(inputs, names[key], uid)
    if key.lstrip("-").isdigit() and 0 <= int(key) < len(spec.labels):
        return Example(inputs, int(key), uid)
    raise RowError(f"label {key!r} in field {o['label_field']!r} is not one of "
                   f"{', '.join(spec.labels)} (or an index 0-{len(spec.labels) - 1})")


MAPPERS: dict[str, Callable] = {f.__name__: f for f in (
    sst2, finphrasebank, poem_sentiment, agnews, bbcnews, strategyqa, sciq, sciq_gen, qasc,
    gsm8k, math, user)}


def template_fields(query: str) -> list[str]:
    """Placeholder names in a template query, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(query) if name]


# --------------------------------------------------------------------------------------- loading

def map_rows(rows: Iterable[Row], where, uid_prefix: str, spec: TaskSpec,
             hub: bool) -> list[Example]:
    """Apply the task's row mapper; a bad row raises DataError naming `where` and the row."""
    mapper = MAPPERS.get(spec.source.loader)
    if mapper is None:
        raise IA2Error(f"task {spec.name}: unknown loader {spec.source.loader!r} "
                       f"(choose from {', '.join(MAPPERS)})")
    out, seen = [], 0
    for row, fields in rows:
        seen += 1
        try:
            ex = mapper(fields, f"{uid_prefix}:{row}", spec, hub)
        except RowError as e:
            raise DataError(where, str(e), row) from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise DataError(where, f"bad row ({type(e).__name__}: {e})", row) from None
        if ex is not None:
            out.append(ex)
    if seen == 0:
        raise DataError(where, "empty file: no rows")
    if not out:
        raise DataError(where, f"none of its {seen} rows is usable for task {spec.name}")
    return out


def load_file(path: Path, uid_prefix: str, spec: TaskSpec) -> list[Example]:
    return map_rows(read_rows(path, spec.source.options), path, uid_prefix, spec, hub=False)


def load_hub(spec: TaskSpec, hub_split: str) -> list[Example]:
    """Rows of `spec.source.hub` through the same mapper. Reached only when the user asks for the
    hub (`source="hub"`); needs the optional `datasets` package and a network."""
    if not spec.source.hub:
        raise IA2Error(f"task {spec.name} has no hub dataset; use its local files")
    try:
        import datasets
    except ImportError:
        raise IA2Error("source 'hub' needs the datasets package: pip install 'ia2[hub]'") from None
    try:
        ds = datasets.load_dataset(spec.source.hub, spec.source.hub_config, split=hub_split)
    except Exception as e:  # network, missing split, auth: report it as the user's problem
        raise IA2Error(f"cannot load {spec.source.hub} ({hub_split}) from the hub: {e}") from None
    where = f"{spec.source.hub}[{hub_split}]"
    rows = ((i, dict(r)) for i, r in enumerate(ds, 1))
    return map_rows(rows, where, f"{spec.source.hub}/{hub_split}", spec, hub=True)
