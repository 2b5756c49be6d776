"""One context-window rule in every stage that builds a prompt (docs/reliability.md): a prompt
never exceeds the model's window; demonstrations that do not fit are dropped and counted; a
query (with its target, in training) that alone does not fit is one error naming the example."""

import pytest
from methods_helpers import examples, tiny_spec

from ia2.errors import IA2Error
from ia2.evaluate.generate import evaluate_generation
from ia2.evaluate.icl import evaluate_classification
from ia2.methods.data import build_items
from ia2.methods.pipeline import RunConfig, TrainingData, train_method
from ia2.methods.trainer import TrainConfig
from ia2.models import context_window
from ia2.tasks.prompts import encode_prompt
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()
WINDOW = 64  # a query is ~27 tokens and a demonstration ~31: one demonstration fits


def _small(window=WINDOW):
    model = tiny_model("llama")
    model.config.max_position_embeddings = window  # RoPE would run past it: ia2 must not
    return model


def _long(uid="long-1"):
    return Example({"text": "so very long " * 10}, 1, uid)


def test_the_window_is_the_models_or_the_configured_one():
    assert context_window(_small()) == WINDOW
    assert context_window(_small(), max_length=40) == 40
    assert context_window(tiny_model("gpt2")) == 512  # n_positions


def test_classification_prompts_fit_and_count_the_demonstrations_kept():
    model, queries, demos = _small(), examples(3), examples(3, start=200)
    s = evaluate_classification(model, TOK, SPEC, queries, demos, batch_size=3)
    assert s.metrics["n_demos"] == 1 and s.definitions["context_window"] == WINDOW
    for q in queries:  # the prompts it scored: the longest that fit
        assert len(encode_prompt(TOK, SPEC, q, demos[:1]).ids) <= WINDOW
        assert len(encode_prompt(TOK, SPEC, q, demos[:2]).ids) > WINDOW
    with pytest.raises(IA2Error) as e:
        evaluate_classification(model, TOK, SPEC, queries + [_long()], demos)
    assert "query long-1 alone needs" in str(e.value) and f"({WINDOW})" in str(e.value)


def test_generation_prompts_leave_room_for_the_answer():
    spec = TaskSpec(name="arith", kind="generation", description="toy", source=Source("none"),
                    templates={"natural": Template(query="Q: {question}\nA:")},
                    parser="gsm8k", max_new_tokens=20, stop=("\n\n",))
    queries = [Example({"question": f"{i}+1?"}, str(i + 1), f"q{i}", f"#### {i + 1}")
               for i in range(2)]
    demos = [Example({"question": f"{i}+2?"}, str(i + 2), f"d{i}", f"#### {i + 2}")
             for i in range(6)]
    model = _small(56)  # a query is 10 tokens, with one demonstration 27, with two 44
    s = evaluate_generation(model, TOK, spec, queries, demos, batch_size=2)
    assert s.metrics["n_demos"] == 1 and s.definitions["context_window"] == 56
    long = Example({"question": "1+1? " * 8}, "2", "long-q")
    with pytest.raises(IA2Error, match=r"query long-q alone needs \d+ tokens, more than the "
                                       r"context window allows \(36\)"):
        evaluate_generation(model, TOK, spec, [long], demos)


def test_training_items_must_fit_query_and_target():
    exs = examples(2)
    n = len(build_items(TOK, SPEC, exs, target="ground_truth")[0].input_ids)
    assert build_items(TOK, SPEC, exs, target="ground_truth", max_length=n)  # exactly fits
    with pytest.raises(IA2Error, match=rf"training example ex0 needs {n} tokens .* context "
                                       rf"window allows \({n - 1}\)"):
        build_items(TOK, SPEC, exs, target="ground_truth", max_length=n - 1)


def test_training_respects_the_models_window_before_training(tmp_path):
    data = TrainingData(examples(3) + [_long("long-7")], examples(2, start=100))
    cfg = RunConfig(method="sft", train=TrainConfig(lr=1e-2, epochs=1, progress=False))
    with pytest.raises(IA2Error, match="long-7"):
        train_method(_small(), TOK, SPEC, data, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()
    assert train_method(tiny_model("llama"), TOK, SPEC, data, cfg, tmp_path / "wide").trained
