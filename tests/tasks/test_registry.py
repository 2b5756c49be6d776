"""The built-in task registry: the paper's 12 benchmarks, their presets and label words, and the
hub path (exercised with a stand-in `datasets` module: tests never touch the network)."""

from __future__ import annotations

import sys
import types

import pytest

from ia2.errors import IA2Error
from ia2.testing import tiny_tokenizer
from ia2.tasks import get_task, list_tasks, load_split
from ia2.tasks.prompts import label_token_ids, render_demo, render_query
from ia2.tasks.spec import Example

NAMES = ["sst2", "finphrasebank", "poem_sentiment", "agnews", "bbcnews", "strategyqa", "sciq",
         "qasc", "gsm8k", "gsm_symbolic", "math_algebra", "sciq_gen"]
CLASSIFICATION = [s for s in list_tasks() if s.kind == "classification"]


def test_twelve_tasks_with_the_papers_ood_pairs():
    assert [s.name for s in list_tasks()] == NAMES
    ood = {s.name: s.ood for s in list_tasks() if s.ood}
    assert ood == {"sst2": ("finphrasebank", "poem_sentiment"),
                   "finphrasebank": ("poem_sentiment", "sst2"), "agnews": ("bbcnews",),
                   "gsm8k": ("gsm_symbolic",), "sciq": ("qasc",)}
    assert {s.name for s in list_tasks() if s.eval_only} == {
        "poem_sentiment", "bbcnews", "qasc", "gsm_symbolic"}
    for spec in list_tasks():
        assert set(spec.templates) == {"natural", "paper"}
        for other in map(get_task, spec.ood):  # OOD queries come in the trained-on format
            assert other.templates == spec.templates and other.kind == spec.kind
            if "choices" not in spec.templates["natural"].query:  # SciQ (4) -> QASC (8) differ
                assert other.labels == spec.labels


def test_generation_settings():
    got = {s.name: (s.parser, s.max_new_tokens) for s in list_tasks() if s.kind == "generation"}
    assert got == {"gsm8k": ("gsm8k", 200), "gsm_symbolic": ("gsm8k", 200),
                   "math_algebra": ("math", 400), "sciq_gen": ("sciq", 256)}
    from ia2.tasks.parsers import PARSERS

    assert all(p in PARSERS for p, _ in got.values())


def test_templates_render_as_documented():
    ex = Example({"text": "great fun"}, 1, "u:1")
    sst2 = get_task("sst2")
    assert render_demo(sst2, ex) == "Review: great fun\nSentiment: positive\n\n"
    # the paper preset is the authors' text exactly: no spaces, the answer follows at once
    assert render_demo(sst2, ex, "paper") == "Text:great fun\nLabel:1\n\n"
    mc = Example({"question": "Q?", "choices": "a\nb\nc\nd"}, 2, "u:2")
    assert render_demo(get_task("sciq"), mc) == "Question: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n"
    assert render_query(get_task("sciq"), mc, "paper") == "Question: Q?\n0. a\n1. b\n2. c\n3. d\nAnswer:"
    math = Example({"problem": "1+1?"}, "2", "u:3", "It is $\\boxed{2}$.")
    assert render_demo(get_task("math_algebra"), math) == "Problem: 1+1?\nSolution: It is $\\boxed{2}$.\n\n"
    assert render_query(get_task("math_algebra"), math, "paper") == "Question:1+1?\nAnswer:"
    assert render_demo(get_task("gsm8k"), Example({"question": "Q"}, "2", "u:5", "1+1=2\n#### 2"),
                       "paper") == "Question:Q\nAnswer:1+1=2\n#### 2\n\n"
    sq = Example({"question": "Is it?"}, 1, "u:4")
    assert render_demo(get_task("strategyqa"), sq) == "Question: Is it?\nAnswer: yes\n\n"
    assert render_demo(get_task("strategyqa"), sq, "paper") == "Text:Is it?\nLabel:1\n\n"


def test_overrides_and_unknown_names():
    assert get_task("sst2", min_words=8).min_words == 8
    assert get_task("sst2").min_words == 0
    with pytest.raises(IA2Error, match=r"unknown task 'sst3' \(known: sst2, finphrasebank"):
        get_task("sst3")
    with pytest.raises(IA2Error, match="no such setting min_wrods"):
        get_task("sst2", min_wrods=8)
    with pytest.raises(IA2Error, match="no template preset 'fancy'"):
        get_task("sst2").template("fancy")


@pytest.mark.parametrize("spec", CLASSIFICATION, ids=lambda s: s.name)
@pytest.mark.parametrize("preset", ["natural", "paper"])
def test_label_words_have_distinct_first_tokens(spec, preset):
    ids = label_token_ids(tiny_tokenizer(), spec, preset)
    assert len(set(ids)) == len(spec.labels)
    assert spec.template(preset).answer == (" {answer}" if preset == "natural" else "{answer}")


@pytest.mark.real
@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_label_words_are_single_distinct_tokens_for_real_tokenizers(model):
    from ia2.models import load_tokenizer
    from ia2.tasks.prompts import encode

    tok = load_tokenizer(model)
    for spec in CLASSIFICATION:
        for preset in spec.templates:
            assert len(set(label_token_ids(tok, spec, preset))) == len(spec.labels)
            answer = spec.template(preset).answer
            assert all(len(encode(tok, answer.format(answer=w))) == 1
                       for w in spec.label_words(preset)), (spec.name, preset)


# ----------------------------------------------------------------------------------------- hub

class FakeDatasets(types.ModuleType):
    def __init__(self, tables):
        super().__init__("datasets")
        self.tables, self.calls = tables, []

    def load_dataset(self, hub, config=None, split=None):
        self.calls.append((hub, config, split))
        return self.tables[(hub, split)]


def test_hub_rows_map_like_local_rows(monkeypatch):
    fake = FakeDatasets({
        ("stanfordnlp/sst2", "validation"): [{"idx": 0, "sentence": "fine ", "label": 1}],
        ("takala/financial_phrasebank", "train"): [
            {"sentence": f"s{i}", "label": i % 3} for i in range(1200)],
        ("SetFit/bbc-news", "train"): [
            {"text": "a " * 200, "label": 4, "label_text": "entertainment"}],
    })
    monkeypatch.setitem(sys.modules, "datasets", fake)
    (ex,) = load_split(get_task("sst2"), "eval", source="hub")
    assert ex == Example({"text": "fine"}, 1, "stanfordnlp/sst2/validation:1")
    train = load_split(get_task("finphrasebank"), "train", source="hub")
    ev = load_split(get_task("finphrasebank"), "eval", source="hub")  # carved: one hub split
    assert (len(train), len(ev)) == (200, 600)
    assert not {e.uid for e in train} & {e.uid for e in ev}
    assert all(int(e.inputs["text"][1:]) % 3 != 1 for e in train + ev)  # neutral (1) dropped
    assert all(e.label == int(e.inputs["text"][1:]) % 3 // 2 for e in train + ev)  # 2 -> positive
    assert {e.label for e in ev} == {0, 1}
    (bbc,) = load_split(get_task("bbcnews"), "eval", source="hub")
    assert bbc.label == 0 and len(bbc.inputs["text"]) <= 256
    assert fake.calls[0] == ("stanfordnlp/sst2", None, "validation")
    assert ("takala/financial_phrasebank", "sentences_50agree", "train") in fake.calls


def test_hub_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(IA2Error, match=r"pip install 'ia2\[hub\]'"):
        load_split(get_task("sst2"), "eval", source="hub")
