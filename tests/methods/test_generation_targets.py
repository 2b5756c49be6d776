"""Generation targets end where an ICL response ends, so SFT learns to stop: a model trained on
targets with the terminator stops at the blank line; trained on the bare solution, it runs on."""

import pytest

from ia2.evaluate.generate import evaluate_generation
from ia2.methods import data as method_data
from ia2.methods.pipeline import RunConfig, TrainingData, train_method
from ia2.methods.trainer import TrainConfig
from ia2.tasks.prompts import encode
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
SPEC = TaskSpec(name="arith", kind="generation", description="test", source=Source("none"),
                templates={"natural": Template("Q: {question}\nA:")}, parser="gsm8k",
                max_new_tokens=12, stop=("\n\n",))
EXAMPLES = [Example({"question": f"{a}+{a}"}, str(2 * a), f"a{a}", f"#### {2 * a}") for a in (1, 2)]


def _train_and_generate(tmp_path):
    cfg = RunConfig(method="sft", train=TrainConfig(lr=3e-2, epochs=120, eval_steps=40,
                                                    patience=100, progress=False))
    run = train_method(tiny_model("llama"), TOK, SPEC, TrainingData(EXAMPLES, EXAMPLES), cfg,
                       tmp_path)
    return evaluate_generation(run.model, TOK, SPEC, EXAMPLES)


def test_sft_on_terminated_targets_learns_to_stop(tmp_path):
    scores = _train_and_generate(tmp_path)
    assert [r["finish"] for r in scores.records] == ["stop", "stop"]
    assert scores.metrics["exact_match"] == 1.0


def test_bare_targets_never_learn_to_stop(tmp_path, monkeypatch):
    """ia2 0.1's targets (the solution alone): the same training leaves the model running on."""
    bare = lambda tok, spec, ex, preset="natural": encode(tok, " " + ex.solution)  # noqa: E731
    monkeypatch.setattr(method_data, "encode_answer", bare)
    scores = _train_and_generate(tmp_path)
    assert "stop" not in [r["finish"] for r in scores.records]
