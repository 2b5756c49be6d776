"""The paper's 12 benchmarks as `TaskSpec`s, users' own tasks from a YAML file, and split loading.

`load_split(spec, "train" | "eval")` returns a task's training pool or its evaluation split.
Tasks with one local file (FinPhraseBank; AG News, whose offline copy is only its test split)
carve both from it: a fixed shuffle (seeded by the task name, never by the run's seed), then the
first `options["carve_eval"]` examples are the eval split and the rest the training pool.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections import OrderedDict
from pathlib import Path

import yaml

from ..errors import DataError, IA2Error
from ..paths import data_dir as resolve_data_dir
from . import loaders
from .spec import Example, Source, TaskSpec, Template

SPLITS = ("train", "eval")
PAPER_TEXT = "Text:{text}\nLabel:"  # the authors' text: no spaces, the answer follows at once
PAPER_QUESTION = "Question:{question}\nAnswer:"
QUESTION = "Question: {question}\nAnswer:"
MC = "Question: {question}\n{choices}\nAnswer:"
SENTIMENT = "Review: {text}\nSentiment:"  # shared by the three sentiment tasks (OOD sees it too)
TOPIC = "Article: {text}\nTopic:"
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")


def _classification(name, description, source, natural, labels, words, paper=PAPER_TEXT, **kw):
    return TaskSpec(
        name=name, kind="classification", description=description, source=source,
        templates={"natural": Template(natural), "paper": Template(paper, answer="{answer}")},
        labels=labels, verbalizers={"natural": words, "paper": tuple(map(str, range(len(labels))))},
        **kw)


def _generation(name, description, source, parser, max_new_tokens, natural=QUESTION,
                paper=PAPER_QUESTION, **kw):
    return TaskSpec(
        name=name, kind="generation", description=description, source=source,
        templates={"natural": Template(natural), "paper": Template(paper, answer="{answer}")},
        parser=parser, max_new_tokens=max_new_tokens, **kw)


def _builtin() -> dict[str, TaskSpec]:
    sentiment = ("negative", "positive")
    letters = tuple("ABCDEFGH")
    specs = [
        _classification(
            "sst2", "SST-2 movie-review sentiment (train: phrases and sentences; eval: GLUE dev)",
            Source("sst2", {"train": "sst2/train.tsv", "eval": "sst2/validation.tsv"},
                   "stanfordnlp/sst2", None,
                   {"hub_splits": {"train": "train", "eval": "validation"}}),
            SENTIMENT, sentiment, sentiment, ood=("finphrasebank", "poem_sentiment")),
        _classification(
            "finphrasebank", "Financial PhraseBank (50% agreement), negative vs positive",
            Source("finphrasebank", {"train": "finphrasebank/sentences_50agree.csv",
                                     "eval": "finphrasebank/sentences_50agree.csv"},
                   "takala/financial_phrasebank", "sentences_50agree",
                   {"format": "csv", "columns": ["label", "sentence"], "encoding": "latin-1",
                    "carve_eval": 600, "hub_splits": {"train": "train", "eval": "train"}}),
            SENTIMENT, sentiment, sentiment, ood=("poem_sentiment", "sst2")),
        _classification(
            "poem_sentiment",
            "Poem Sentiment, negative vs positive verses of the train split (OOD)",
            Source("poem_sentiment", {"eval": "poem_sentiment/train.tsv"},
                   "google-research-datasets/poem_sentiment", None,
                   {"columns": ["id", "text", "label"], "hub_splits": {"eval": "train"}}),
            SENTIMENT, sentiment, sentiment, eval_only=True),
        _classification(
            "agnews", "AG News topic, 4 classes",
            Source("agnews", {"train": "agnews/test.csv", "eval": "agnews/test.csv"},
                   "fancyzhx/ag_news", None,
                   {"carve_eval": 2000, "hub_splits": {"train": "train", "eval": "test"}}),
            TOPIC, AGNEWS_LABELS, ("World", "Sports", "Business", "Technology"), ood=("bbcnews",)),
        _classification(
            "bbcnews",
            "BBC News mapped onto AG News topics; title + body cut to 256 characters (OOD)",
            Source("bbcnews", {"eval": "bbcnews/bbc.jsonl"}, "SetFit/bbc-news", None,
                   {"max_chars": 256, "hub_splits": {"eval": "train"}}),
            TOPIC, AGNEWS_LABELS, ("World", "Sports", "Business", "Technology"), eval_only=True),
        _classification(
            "strategyqa", "StrategyQA yes/no questions needing implicit reasoning",
            Source("strategyqa", {"train": "strategyqa/train.json", "eval": "strategyqa/dev.json"},
                   "wics/strategy-qa", None, {"hub_splits": {"train": "test", "eval": "test"},
                                              "carve_eval": 229}),
            QUESTION, ("false", "true"), ("no", "yes"), paper="Text:{question}\nLabel:"),
        _classification(
            "sciq", "SciQ science questions, 4-way multiple choice (options shuffled per example)",
            Source("sciq", {"train": "sciq/train.jsonl", "eval": "sciq/test.jsonl"},
                   "allenai/sciq"),
            MC, letters[:4], letters[:4], paper=MC, ood=("qasc",)),
        _classification(
            "qasc", "QASC science questions, 8-way multiple choice (OOD)",
            Source("qasc", {"eval": "qasc/validation.jsonl"}, "allenai/qasc", None,
                   {"hub_splits": {"eval": "validation"}}),
            MC, letters, letters, paper=MC, eval_only=True),
        _generation(
            "gsm8k", "GSM8K grade-school math word problems (worked solution, '#### n')",
            Source("gsm8k", {"train": "gsm8k/train.jsonl", "eval": "gsm8k/test.jsonl"},
                   "openai/gsm8k", "main"),
            "gsm8k", 200, ood=("gsm_symbolic",)),
        _generation(
            "gsm_symbolic", "GSM-Symbolic: GSM8K templates with new names and numbers (OOD)",
            Source("gsm8k", {"eval": "gsm_symbolic/test.jsonl"}, "apple/GSM-Symbolic", "main",
                   {"hub_splits": {"eval": "test"}}),
            "gsm8k", 200, eval_only=True),
        _generation(
            "math_algebra", "MATH algebra problems; gold = the last \\boxed{...}",
            Source("math", {"train": "math_algebra/train.jsonl", "eval": "math_algebra/test.jsonl"},
                   "EleutherAI/hendrycks_math", "algebra"),
            "math", 400, natural="Problem: {problem}\nSolution:",
            paper="Question:{problem}\nAnswer:",
            stop=("\n\nProblem:", "\n\nQuestion:")),  # solutions contain blank lines
        _generation(
            "sciq_gen", "SciQ as generation: support passage, then '#### <answer>'",
            Source("sciq_gen", {"train": "sciq/train.jsonl", "eval": "sciq/test.jsonl"},
                   "allenai/sciq"),
            "sciq", 256),
    ]
    return {s.name: s for s in specs}


TASKS: dict[str, TaskSpec] = _builtin()


def list_tasks() -> list[TaskSpec]:
    return list(TASKS.values())


def get_task(name: str, **overrides) -> TaskSpec:
    """A built-in task (or a task YAML file's path), with fields replaced, e.g. min_words=8."""
    if name in TASKS:
        spec = TASKS[name]
    elif name.endswith((".yaml", ".yml")):
        spec = load_task_file(name)
    else:
        raise IA2Error(f"unknown task {name!r} (known: {', '.join(TASKS)}; or a task .yaml file)")
    bad = set(overrides) - {f.name for f in dataclasses.fields(TaskSpec)}
    if bad:
        raise IA2Error(f"task {name}: no such setting {', '.join(sorted(bad))}")
    overrides = {k: _typed(spec, k, v) for k, v in overrides.items()}
    return dataclasses.replace(spec, **overrides) if overrides else spec


def _typed(spec: TaskSpec, key: str, value):
    """An override checked against the type of the value it replaces (YAML and the CLI give
    plain values: a list for a tuple is converted, a string for a number is an error)."""
    current = getattr(spec, key)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if current is None:
        ok = value is None or isinstance(value, str)
    else:
        ok = isinstance(value, type(current)) and (isinstance(current, bool)
                                                   or not isinstance(value, bool))
    if not ok:
        kind = str if current is None else type(current)
        want = {int: "an integer", bool: "true or false", str: "a string", tuple: "a list"}
        raise IA2Error(f"task {spec.name}: {key} must be {want.get(kind, kind.__name__)}, "
                       f"got {value!r}")
    return value


# ------------------------------------------------------------------------------------ user tasks

USER_KEYS = {"name", "kind", "description", "files", "template", "templates", "labels",
             "label_words", "text_fields", "label_field", "solution_field", "choices_field",
             "parser", "max_new_tokens", "stop", "eval_only", "ood", "min_words", "carve_eval"}


def _template(path, raw, where) -> Template:
    if isinstance(raw, str):
        raw = {"query": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("query"), str):
        raise DataError(path, f"{where} needs a 'query' string")
    unknown = set(raw) - {"query", "answer", "separator"}
    if unknown:
        raise DataError(path, f"{where}: unknown keys {', '.join(sorted(unknown))}")
    return Template(**raw)


def load_task_file(path: str | os.PathLike) -> TaskSpec:
    """A user's task: a YAML spec (see docs/tasks.md) whose data files are relative to it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IA2Error(f"task file {path} not found") from None
    except OSError as e:
        raise IA2Error(f"cannot read task file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"malformed YAML: {e}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise DataError(path, "expected a YAML mapping of task settings")
    unknown = set(raw) - USER_KEYS
    if unknown:
        raise DataError(path, f"unknown keys {', '.join(sorted(unknown))} "
                              f"(allowed: {', '.join(sorted(USER_KEYS))})")
    for key in ("name", "kind", "files", "label_field"):
        if key not in raw:
            raise DataError(path, f"missing key {key!r}")
    kind = raw["kind"]
    if kind not in ("classification", "generation"):
        raise DataError(path, f"kind must be classification or generation, not {kind!r}")
    files = raw["files"]
    if not isinstance(files, dict) or "eval" not in files or set(files) - set(SPLITS):
        raise DataError(path, "files must map 'eval' (and optionally 'train') to data files")
    carve = raw.get("carve_eval")
    if carve is not None and (not isinstance(carve, int) or carve < 1):
        raise DataError(path, f"carve_eval must be a positive whole number, not {carve!r}")
    if files.get("train") == files["eval"] and not carve:
        raise DataError(path, "train and eval are the same file: set carve_eval to the number of "
                              "examples to hold out for evaluation")
    if "templates" in raw:
        if not isinstance(raw["templates"], dict):
            raise DataError(path, "templates must map preset names to templates")
        templates = {k: _template(path, v, f"template {k!r}") for k, v in raw["templates"].items()}
    elif "template" in raw:
        templates = {"natural": _template(path, raw["template"], "template")}
    else:
        raise DataError(path, "missing key 'template'")
    if "natural" not in templates:
        raise DataError(path, "templates must include 'natural'")
    labels = tuple(str(x) for x in raw.get("labels") or ())
    if kind == "classification" and len(labels) < 2:
        raise DataError(path, "a classification task needs at least two labels")
    words = raw.get("label_words")
    if words is None:
        verbalizers = {}
    else:
        words = words if isinstance(words, dict) else {p: words for p in templates}
        verbalizers = {p: tuple(str(w) for w in ws) for p, ws in words.items()}
        if any(len(ws) != len(labels) for ws in verbalizers.values()):
            raise DataError(path, f"label_words must give one word per label ({len(labels)})")
    text_fields = raw.get("text_fields") or [
        f for f in loaders.template_fields(templates["natural"].query) if f != "choices"]
    parser = raw.get("parser")
    if kind == "generation":
        from .parsers import PARSERS

        if parser not in PARSERS:
            raise DataError(path, f"a generation task needs a parser: one of {', '.join(PARSERS)}")
    options = {"root": str(path.resolve().parent), "text_fields": list(text_fields),
               "label_field": raw["label_field"], "solution_field": raw.get("solution_field"),
               "choices_field": raw.get("choices_field"), "carve_eval": carve}
    try:
        return TaskSpec(
            name=str(raw["name"]), kind=kind, description=str(raw.get("description", path.name)),
            source=Source("user", {k: str(v) for k, v in files.items()}, options=options),
            templates=templates, labels=labels, verbalizers=verbalizers, parser=parser,
            max_new_tokens=int(raw.get("max_new_tokens", 1 if kind == "classification" else 256)),
            stop=tuple(raw.get("stop", ("\n\n",))),
            eval_only=bool(raw.get("eval_only", "train" not in files)),
            ood=tuple(raw.get("ood", ())), min_words=int(raw.get("min_words", 0)))
    except (TypeError, ValueError) as e:
        raise DataError(path, f"bad setting: {e}") from None


# ---------------------------------------------------------------------------------------- splits

_CACHE: OrderedDict = OrderedDict()  # parsed files, so repeated episodes don't re-read 60k rows
_CACHE_SIZE = 32


def _load_file_cached(path: Path, uid_prefix: str, spec: TaskSpec) -> list[Example]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IA2Error(f"data file {path} for task {spec.name} not found") from None
    except OSError as e:
        raise IA2Error(f"cannot read data file {path}: {e.strerror or e}") from None
    key = (str(path), st.st_mtime_ns, st.st_size, uid_prefix, spec.kind, spec.labels,
           spec.source.loader, json.dumps(spec.source.options, sort_keys=True, default=str))
    if key not in _CACHE:
        _CACHE[key] = tuple(loaders.load_file(path, uid_prefix, spec))
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return list(_CACHE[key])


def main_text(ex: Example) -> str:
    """The text `min_words` counts: "text", else "question", else "problem", else all inputs."""
    for name in ("text", "question", "problem"):
        if name in ex.inputs:
            return ex.inputs[name]
    return " ".join(v for k, v in ex.inputs.items() if k != "choices")


def _carve(spec: TaskSpec, examples: list[Example], split: str) -> list[Example]:
    k = spec.source.options.get("carve_eval")
    if not k or k >= len(examples):
        raise IA2Error(f"task {spec.name}: cannot carve {k} eval examples from {len(examples)}")
    order = list(range(len(examples)))
    random.Random(f"carve:{spec.name}").shuffle(order)
    chosen = order[:k] if split == "eval" else sorted(order[k:])
    return [examples[i] for i in chosen]


def load_split(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None = None,
               source: str = "local") -> list[Example]:
    """The training pool ("train", filtered by `spec.min_words`) or the eval split ("eval")."""
    if split not in SPLITS:
        raise IA2Error(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if source not in ("local", "hub"):
        raise IA2Error(f"source must be 'local' or 'hub', not {source!r}")
    if split == "train" and spec.eval_only:
        raise IA2Error(f"task {spec.name} is evaluation-only (out of distribution); it has no "
                       "training pool")
    if source == "hub":
        hub_splits = spec.source.options.get("hub_splits", {"train": "train", "eval": "test"})
        examples = loaders.load_hub(spec, hub_splits[split])
        carve = hub_splits.get("train") == hub_splits.get("eval")  # e.g. one hub split only
    else:
        if split not in spec.source.files:
            raise IA2Error(f"task {spec.name} has no {split} file")
        rel = spec.source.files[split]
        root = spec.source.options.get("root")
        base = Path(root) if root else resolve_data_dir(data_dir)
        examples = _load_file_cached(base / rel, rel, spec)
        carve = spec.source.files.get("train") == spec.source.files.get("eval")
    if carve and spec.source.options.get("carve_eval"):
        examples = _carve(spec, examples, split)
    if split == "train" and spec.min_words:
        examples = [ex for ex in examples if len(main_text(ex).split()) >= spec.min_words]
        if not examples:
            raise IA2Error(f"task {spec.name}: no training examples have {spec.min_words}+ words")
    return examples

