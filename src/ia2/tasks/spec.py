"""What a task is: its examples, its prompt template, its label words and its answer parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["classification", "generation"]
PRESETS = ("natural", "paper")


@dataclass(frozen=True)
class Example:
    """One labelled example.

    `inputs` fills the query template (e.g. {"text": ...} or {"question": ..., "choices": ...}).
    `label` is an index into `TaskSpec.labels` for classification tasks, or the gold final answer
    (a string compared after parsing) for generation tasks. `solution` is the full target text a
    generation task's demonstrations and SFT use (e.g. GSM8K's worked solution); None for
    classification. `uid` is stable across runs (source file and row).
    """

    inputs: dict[str, str]
    label: int | str
    uid: str
    solution: str | None = None


@dataclass(frozen=True)
class Template:
    """One prompt format. `query` is formatted with the example's inputs (plus `{choices}` rendered
    for multiple choice); `answer` with `{answer}` = the label word or solution text. A
    demonstration is query + answer + separator; the model sees demonstrations then a query."""

    query: str
    answer: str = " {answer}"
    separator: str = "\n\n"


@dataclass(frozen=True)
class Source:
    """Where examples come from. `loader` names a function in `ia2.tasks.loaders`; `files` maps a
    split name ("train", "eval") to a path relative to the data directory; `hub` is the dataset id
    used when the user asks for the hub; `options` are loader-specific (e.g. label mapping)."""

    loader: str
    files: dict[str, str] = field(default_factory=dict)
    hub: str | None = None
    hub_config: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: Kind
    description: str
    source: Source
    templates: dict[str, Template]  # preset name -> template
    labels: tuple[str, ...] = ()  # canonical label names (classification)
    verbalizers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # preset -> label words
    parser: str | None = None  # answer parser name (generation), see ia2.tasks.parsers
    max_new_tokens: int = 1
    stop: tuple[str, ...] = ("\n\n",)
    eval_only: bool = False
    ood: tuple[str, ...] = ()  # tasks evaluated out of distribution after training on this one
    min_words: int = 0  # keep only examples whose main text has at least this many words

    def __post_init__(self):
        from .. import validate

        validate.integer(f"task {self.name}: min_words", self.min_words, low=0)
        validate.integer(f"task {self.name}: max_new_tokens", self.max_new_tokens, low=1)

    def template(self, preset: str = "natural") -> Template:
        if preset not in self.templates:
            from ..errors import IA2Error

            raise IA2Error(f"task {self.name} has no template preset {preset!r} "
                           f"(choose from {', '.join(self.templates)})")
        return self.templates[preset]

    def label_words(self, preset: str = "natural") -> tuple[str, ...]:
        return self.verbalizers.get(preset, self.labels)
