"""The one place prompts are rendered and tokenized.

Prompts are built as concatenated token ids, never by tokenizing one long string: the query's
tokens are then identical with and without demonstrations, so the teacher (demos + query), the
student (query only) and a shared-prefix KV cache all see the same ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import IA2Error
from .spec import Example, TaskSpec

log = logging.getLogger(__name__)


def answer_text(spec: TaskSpec, ex: Example, preset: str = "natural") -> str:
    """The text that follows the query: the label word, or the worked solution."""
    if spec.kind == "classification":
        return spec.label_words(preset)[int(ex.label)]
    return ex.solution if ex.solution is not None else str(ex.label)


def render_query(spec: TaskSpec, ex: Example, preset: str = "natural") -> str:
    fields = dict(ex.inputs)
    if "choices" in fields:  # multiple choice: one option a line, named by the label words
        options = fields["choices"].split("\n")
        words = spec.label_words(preset)
        fields["choices"] = "\n".join(f"{w}. {o}" for w, o in zip(words, options))
    try:
        return spec.template(preset).query.format(**fields)
    except KeyError as e:
        raise IA2Error(f"task {spec.name}: template needs field {e.args[0]!r}") from None


def render_demo(spec: TaskSpec, ex: Example, preset: str = "natural") -> str:
    t = spec.template(preset)
    return render_query(spec, ex, preset) + t.answer.format(answer=answer_text(spec, ex, preset)) + t.separator


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before any text (e.g. Gemma's <bos>; nothing for SmolLM2)."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


def encode_demo(tokenizer, spec: TaskSpec, ex: Example, preset: str = "natural") -> list[int]:
    t = spec.template(preset)
    answer = t.answer.format(answer=answer_text(spec, ex, preset)) + t.separator
    return encode(tokenizer, render_query(spec, ex, preset)) + encode(tokenizer, answer)


def encode_answer(tokenizer, spec: TaskSpec, ex: Example, preset: str = "natural") -> list[int]:
    """The gold target's ids as the student is trained on them (no separator)."""
    t = spec.template(preset)
    return encode(tokenizer, t.answer.format(answer=answer_text(spec, ex, preset)))


@dataclass(frozen=True)
class PromptIds:
    """A prompt as token ids: `ids[:query_start]` is the special prefix plus demonstrations
    (shared by every query with the same demos); `ids[query_start:]` is the query."""

    ids: list[int]
    query_start: int
    n_demos: int


def encode_prompt(
    tokenizer,
    spec: TaskSpec,
    query: Example,
    demos: list[Example] = (),
    preset: str = "natural",
    max_length: int | None = None,
    reserve: int = 0,
) -> PromptIds:
    """special prefix + demonstrations + query. Demonstrations that would push the prompt past
    `max_length - reserve` tokens are dropped from the end, with a warning; text is never cut."""
    prefix = special_prefix(tokenizer)
    q = encode(tokenizer, render_query(spec, query, preset))
    budget = None if max_length is None else max_length - reserve - len(prefix) - len(q)
    if budget is not None and budget < 0:
        raise IA2Error(f"task {spec.name}: query {query.uid} alone needs {len(q) + len(prefix)} "
                       f"tokens, more than the context window allows ({max_length - reserve})")
    body: list[int] = []
    kept = 0
    for d in demos:
        ids = encode_demo(tokenizer, spec, d, preset)
        if budget is not None and len(body) + len(ids) > budget:
            log.warning("prompt for %s: kept %d of %d demonstrations to fit %d tokens",
                        query.uid, kept, len(demos), max_length)
            break
        body += ids
        kept += 1
    return PromptIds(prefix + body + q, len(prefix) + len(body), kept)


def label_token_ids(tokenizer, spec: TaskSpec, preset: str = "natural") -> list[int]:
    """The first token of each label's answer text; they must be distinct."""
    t = spec.template(preset)
    firsts = []
    for word in spec.label_words(preset):
        ids = encode(tokenizer, t.answer.format(answer=word))
        if len(ids) > 1:
            log.info("label %r spans %d tokens; its first token stands for it", word, len(ids))
        firsts.append(ids[0])
    if len(set(firsts)) != len(firsts):
        raise IA2Error(f"task {spec.name}: label words {spec.label_words(preset)} share a first "
                       "token under this tokenizer; choose other label words")
    return firsts
