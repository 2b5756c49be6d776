"""Prompt encoding: the demonstration block is tokenized as the model reads text, the query keeps
its own tokens, and answers end where an ICL response ends."""

from __future__ import annotations

import pytest

from ia2.errors import IA2Error
from ia2.tasks import get_task
from ia2.tasks.prompts import (encode, encode_answer, encode_prompt, render_demo, render_query,
                               special_prefix, terminator)
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import tiny_tokenizer

SST2 = get_task("sst2")
REVIEWS = [Example({"text": t}, i % 2, f"r{i}") for i, t in
           enumerate(["a fine film", "dull and long", "warm, funny", "flat", "sharp 2"])]
GSM = [Example({"question": f"{a} + {a}?"}, str(2 * a), f"g{a}", f"{a} + {a} = {2 * a}\n#### {2 * a}")
       for a in (3, 5, 8)]


def whole_text(tok, spec, query, demos, preset="natural"):
    """The independent reference: the prompt's text tokenized in one call."""
    text = "".join(render_demo(spec, d, preset) for d in demos) + render_query(spec, query, preset)
    return special_prefix(tok) + encode(tok, text)


@pytest.mark.parametrize("regex", [False, True], ids=["plain", "gpt2-regex"])
@pytest.mark.parametrize("preset", ["natural", "paper"])
def test_prompt_is_the_whole_text_tokenization(regex, preset):
    tok = tiny_tokenizer(regex=regex)
    for spec, exs in ((SST2, REVIEWS), (get_task("gsm8k"), GSM)):
        query, demos = exs[-1], exs[:-1]
        p = encode_prompt(tok, spec, query, demos, preset)
        assert p.exact and p.n_demos == len(demos)
        assert p.ids == whole_text(tok, spec, query, demos, preset)
        # ...and the query keeps the tokens the student sees without demonstrations
        alone = encode_prompt(tok, spec, query, (), preset)
        assert p.ids[p.query_start:] == alone.ids[alone.query_start:]


def test_pieces_are_what_whole_text_fixes():
    """With GPT-2's pattern a demonstration's trailing blank line is one token on its own but two
    before the next query: joining pieces gives the rare token, whole text does not."""
    tok = tiny_tokenizer(regex=True)
    pieces = encode_prompt(tok, SST2, REVIEWS[-1], REVIEWS[:-1], tokenization="pieces")
    text = encode_prompt(tok, SST2, REVIEWS[-1], REVIEWS[:-1])
    blank = tok.convert_tokens_to_ids("\u010a\u010a")
    assert blank in pieces.ids and blank not in text.ids
    assert not pieces.exact and tok.decode(pieces.ids) == tok.decode(text.ids)
    with pytest.raises(IA2Error, match="unknown prompt tokenization 'bytes'"):
        encode_prompt(tok, SST2, REVIEWS[0], tokenization="bytes")


def test_a_merge_across_the_query_start_keeps_the_query_tokens():
    """A tokenizer that merges "\\n" with the query's first letter: the block keeps whole-text
    tokens up to the last clean boundary, and the query its own tokens."""
    tok = tiny_tokenizer(extra_merges=[("\u010a", "R")])
    query, demos = REVIEWS[-1], REVIEWS[:-1]
    whole = whole_text(tok, SST2, query, demos)
    p = encode_prompt(tok, SST2, query, demos)
    assert not p.exact and p.ids != whole
    assert p.ids[p.query_start:] == encode(tok, render_query(SST2, query))
    block = p.ids[len(special_prefix(tok)):p.query_start]
    assert tok.decode(block) == "".join(render_demo(SST2, d) for d in demos)
    assert block[:-1] == whole[len(special_prefix(tok)):][:len(block) - 1]  # all but the cut


def test_demonstrations_that_do_not_fit_are_dropped_from_the_end():
    tok = tiny_tokenizer(regex=True)
    full = encode_prompt(tok, SST2, REVIEWS[-1], REVIEWS[:-1])
    for limit in range(len(full.ids) - 1, len(encode_prompt(tok, SST2, REVIEWS[-1]).ids) - 1, -7):
        p = encode_prompt(tok, SST2, REVIEWS[-1], REVIEWS[:-1], max_length=limit)
        assert len(p.ids) <= limit and p.exact
        assert p.ids == whole_text(tok, SST2, REVIEWS[-1], REVIEWS[:p.n_demos])
        more = whole_text(tok, SST2, REVIEWS[-1], REVIEWS[:p.n_demos + 1])
        assert len(more) > limit  # the most that fit
    with pytest.raises(IA2Error, match="alone needs"):
        encode_prompt(tok, SST2, REVIEWS[-1], max_length=3)


def test_generation_targets_end_where_an_icl_response_ends():
    tok = tiny_tokenizer()
    gsm = get_task("gsm8k")
    assert terminator(gsm) == "\n\n" and terminator(gsm, "paper") == "\n\n"
    assert tok.decode(encode_answer(tok, gsm, GSM[0])) == " 3 + 3 = 6\n#### 6\n\n"
    assert tok.decode(encode_answer(tok, gsm, GSM[0], "paper")) == "3 + 3 = 6\n#### 6\n\n"
    math = get_task("math_algebra")  # its solutions hold blank lines: the next query ends them
    assert terminator(math) == "\n\nProblem:" and terminator(math, "paper") == "\n\nQuestion:"
    # classification targets stay the label word alone
    assert encode_answer(tok, SST2, REVIEWS[1]) == encode(tok, " positive")
    own = TaskSpec("own", "generation", "", Source("none"), {"natural": Template("Q {q} A:")},
                   stop=("###",), parser="gsm8k", max_new_tokens=8)
    ids = encode_answer(tok, own, Example({"q": "x"}, "1", "o1", "1"))
    assert terminator(own) is None and ids == encode(tok, " 1") + [tok.eos_token_id]


@pytest.mark.real
@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_real_tokenizers_read_prompts_as_whole_text(model):
    from ia2.episodes import make_episode
    from ia2.models import load_tokenizer

    tok = load_tokenizer(model)
    for name in ("sst2", "agnews", "strategyqa", "gsm8k", "math_algebra"):
        spec = get_task(name)
        episode = make_episode(spec, 8, 0, eval_size=6, balanced=False)
        for preset in ("natural", "paper"):
            for q in episode.eval:
                demos = list(episode.demo_pool[:7])
                p = encode_prompt(tok, spec, q, demos, preset)
                assert p.exact, (model, name, preset, q.uid)
                assert p.ids == whole_text(tok, spec, q, demos, preset)
