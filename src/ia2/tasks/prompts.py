"""The one place prompts are rendered and tokenized.

A prompt is `special prefix + demonstration block + query`. The demonstration block is tokenized
as the model reads text: the tokens of `demos_text + query_text` up to where the query starts
(`tokenization="text"`, the default; joining separately tokenized demonstrations gives separator
tokens a model rarely saw in pretraining). The query keeps the tokens it has on its own, so the
teacher (demonstrations + query), the student (query alone) and a shared-prefix KV cache see the
same query ids. Where the tokenizer would merge a token across the query's start, the block keeps
its whole-text tokens up to the last clean boundary and tokenizes the remaining characters alone
(`PromptIds.exact` is then False).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import IA2Error
from .spec import Example, TaskSpec

log = logging.getLogger(__name__)

TOKENIZATIONS = ("text", "pieces")


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


def terminator(spec: TaskSpec, preset: str = "natural") -> str | None:
    """How a generation task's answer ends in the demonstrations' format: the separator and the
    start of the next query, up to the end of the first stop string met there (GSM8K: "\\n\\n";
    MATH: "\\n\\nProblem:"). That is where an ICL response stops, so ground-truth targets end
    the same way. None when no stop string occurs there (the target then ends with EOS)."""
    t = spec.template(preset)
    follow = t.separator + t.query.split("{", 1)[0]
    hits = [(follow.index(s) + len(s), s) for s in spec.stop if s and s in follow]
    return follow[: min(hits)[0]] if hits else None


def encode_answer(tokenizer, spec: TaskSpec, ex: Example, preset: str = "natural") -> list[int]:
    """The gold target's ids as the student is trained on them: the label word, or the solution
    followed by the task's terminator (or EOS), so that SFT learns to stop where ICL stops."""
    t = spec.template(preset)
    text = t.answer.format(answer=answer_text(spec, ex, preset))
    if spec.kind == "classification":
        return encode(tokenizer, text)
    end = terminator(spec, preset)
    if end is not None:
        return encode(tokenizer, text + end)
    if tokenizer.eos_token_id is None:
        raise IA2Error(f"task {spec.name}: no stop string follows an answer in the demonstrations' "
                       "format and the tokenizer has no EOS token; targets could not end")
    return encode(tokenizer, text) + [tokenizer.eos_token_id]


def demo_block_ids(tokenizer, demos_text: str, query_text: str,
                   query_ids: list[int]) -> tuple[list[int], bool]:
    """The demonstration block's ids as the tokenizer reads `demos_text + query_text`, cut where
    the query starts, and whether block + query_ids is exactly that whole-text tokenization."""
    if not demos_text:
        return [], True
    try:
        enc = tokenizer(demos_text + query_text, add_special_tokens=False,
                        return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        return encode(tokenizer, demos_text), False
    ids, spans, cut = enc["input_ids"], enc["offset_mapping"], len(demos_text)
    j = 0
    while j < len(ids) and spans[j][1] <= cut:
        j += 1
    if ids[j:] == list(query_ids) and (j == len(ids) or spans[j][0] >= cut):
        return ids[:j], True
    # A token straddles the query's start, or the query reads differently after text: keep
    # the whole-text tokens before the last clean boundary, the remaining characters alone.
    start = spans[j - 1][1] if j else 0
    return ids[:j] + encode(tokenizer, demos_text[start:cut]), False


@dataclass(frozen=True)
class PromptIds:
    """A prompt as token ids: `ids[:query_start]` is the special prefix plus demonstrations
    (shared by every query with the same demos); `ids[query_start:]` is the query. `exact`:
    the ids are the whole-text tokenization of the prompt (see the module docstring)."""

    ids: list[int]
    query_start: int
    n_demos: int
    exact: bool = True


def _block(tokenizer, spec, demos, preset, query_text, q, tokenization) -> tuple[list[int], bool]:
    if tokenization == "pieces":  # ia2 0.1's way: each demonstration tokenized on its own
        ids = []
        for d in demos:
            t = spec.template(preset)
            ids += encode(tokenizer, render_query(spec, d, preset))
            ids += encode(tokenizer, t.answer.format(answer=answer_text(spec, d, preset)) + t.separator)
        return ids, not demos
    text = "".join(render_demo(spec, d, preset) for d in demos)
    return demo_block_ids(tokenizer, text, query_text, q)


def encode_prompt(
    tokenizer,
    spec: TaskSpec,
    query: Example,
    demos: list[Example] = (),
    preset: str = "natural",
    max_length: int | None = None,
    reserve: int = 0,
    tokenization: str = "text",
) -> PromptIds:
    """special prefix + demonstrations + query. Demonstrations that would push the prompt past
    `max_length - reserve` tokens are dropped from the end, with a warning; text is never cut."""
    if tokenization not in TOKENIZATIONS:
        raise IA2Error(f"unknown prompt tokenization {tokenization!r} "
                       f"(choose from {', '.join(TOKENIZATIONS)})")
    prefix = special_prefix(tokenizer)
    query_text = render_query(spec, query, preset)
    q = encode(tokenizer, query_text)
    budget = None if max_length is None else max_length - reserve - len(prefix) - len(q)
    if budget is not None and budget < 0:
        raise IA2Error(f"task {spec.name}: query {query.uid} alone needs {len(q) + len(prefix)} "
                       f"tokens, more than the context window allows ({max_length - reserve})")
    demos = list(demos)
    kept = len(demos)
    body, exact = _block(tokenizer, spec, demos, preset, query_text, q, tokenization)
    if budget is not None and len(body) > budget:
        lo, hi = 0, kept - 1  # the most demonstrations that fit (block length grows with them)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(_block(tokenizer, spec, demos[:mid], preset, query_text, q, tokenization)[0]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        kept = lo
        body, exact = _block(tokenizer, spec, demos[:kept], preset, query_text, q, tokenization)
        log.warning("prompt for %s: kept %d of %d demonstrations to fit %d tokens",
                    query.uid, kept, len(demos), max_length)
    return PromptIds(prefix + body + q, len(prefix) + len(body), kept, exact)


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
