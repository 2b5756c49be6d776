"""Method dispatch and run directories: every method trains and writes a loadable adapter,
ia2->sft continues the same adapter under a fresh optimizer, finished runs are reused."""

import json

import pytest
import torch
import yaml
from methods_helpers import teacher_data, tiny_spec
from peft import PeftModel
from transformers import TrainerCallback

from ia2.errors import IA2Error
from ia2.methods import pipeline
from ia2.methods.adapters import AdapterConfig
from ia2.methods.pipeline import METHODS, RunConfig, TrainingData, stages, train_method
from ia2.methods.trainer import TrainConfig
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()


@pytest.fixture(scope="module")
def data():
    train, st, dev, sd = teacher_data(tiny_model("llama"), TOK, SPEC, n_train=8, n_dev=4, steps=2)
    return TrainingData(train, dev, st, sd, teacher={"key": "abc123", "config": {}})


def _cfg(method, **kw):
    return RunConfig(method=method, train=TrainConfig(lr=1e-2, epochs=2, progress=False), **kw)


def test_stage_plans_are_the_papers():
    plan = {m: [(s.loss, s.target) for s in stages(RunConfig(method=m))] for m in METHODS}
    assert plan == {
        "sft": [("sft", "ground_truth")], "kd": [("kd", "icl")], "ia2": [("ia2", "icl")],
        "ia2+sft": [("ia2+sft", "icl")],
        "ia2->sft": [("ia2", "icl"), ("sft", "ground_truth")],
        "sft->ia2": [("sft", "ground_truth"), ("ia2", "icl")],
    }
    assert stages(RunConfig(method="sft", labels="icl"))[0].target == "icl"
    with pytest.raises(IA2Error, match="unknown method"):
        RunConfig(method="ia2-sft")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_complete_run_directory(method, data, tmp_path):
    result = train_method(tiny_model("llama"), TOK, SPEC, data, _cfg(method), tmp_path / "run",
                          extra={"task": "tiny"})
    out = result.out_dir
    assert result.trained and len(result.stages) == len(stages(RunConfig(method=method)))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == method and cfg["task"] == "tiny" and cfg["teacher_key"] == "abc123"
    assert cfg["adapter"]["r"] == 8 and cfg["train"]["batch_size"] == 4
    assert json.loads((out / "teacher.json").read_text())["key"] == "abc123"
    curves = json.loads((out / "curves.json").read_text())
    assert list(curves) == list(result.stages)
    for c in curves.values():
        assert len(c["train"]) == c["steps"] == 4 and [s for s, _ in c["dev"]] == [2, 4]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "run.json").read_text())["finished"] is True
    assert not list(out.glob("stages/*/checkpoints"))  # checkpoints dropped once finished
    loaded = PeftModel.from_pretrained(tiny_model("llama"), out / "adapter").eval()
    ids = torch.randint(3, 200, (1, 9))
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(loaded(input_ids=ids).logits, tiny_model("llama")(input_ids=ids).logits,
                                  atol=1e-4)


class FirstStep(TrainerCallback):
    def __init__(self):
        self.begin, self.adam_steps = None, None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.begin = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        if state.global_step == 1:
            self.adam_steps = {int(s["step"]) for s in optimizer.state.values()}


def test_ia2_then_sft_continues_the_same_adapter_with_a_fresh_optimizer(data, tmp_path, monkeypatch):
    seen = []
    real = pipeline.train_stage

    def spy(model, objective, *args, **kw):
        cb = FirstStep()
        result = real(model, objective, *args, callbacks=[cb], **kw)
        end = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        seen.append((objective.loss, kw["lr"], cb, end))
        return result

    monkeypatch.setattr(pipeline, "train_stage", spy)
    train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft", sft_lr=5e-3), tmp_path / "run")
    (l1, lr1, cb1, end1), (l2, lr2, cb2, end2) = seen
    assert (l1, lr1, l2, lr2) == ("ia2", 1e-2, "sft", 5e-3)
    assert all(torch.equal(cb2.begin[n], end1[n]) for n in end1)  # stage 2 starts where stage 1 ended
    assert not all(torch.equal(cb1.begin[n], end1[n]) for n in end1)
    assert cb2.adam_steps == {1}  # fresh Adam state: one step taken, none carried over
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "stages" / "1-ia2" / "adapter" / "adapter_model.safetensors")
    assert len(saved) == len(end1)
    assert all(torch.equal(saved[k], v) for k, v in zip(sorted(saved), [end1[n] for n in sorted(end1)]))


def test_finished_run_is_reused_and_interrupted_one_resumes_at_its_stage(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft"), out)
    stamp = (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft"), out)
    assert not again.trained and again.stages == json.loads(json.dumps(first.stages))
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    # as if killed during stage 2: stage 1 finished, nothing after it
    (out / "run.json").unlink()
    import shutil

    shutil.rmtree(out / "stages" / "2-sft")
    calls = []
    real = pipeline.train_stage
    monkeypatch.setattr(pipeline, "train_stage", lambda m, o, *a, **k: calls.append(o.loss) or real(m, o, *a, **k))
    resumed = train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft"), out)
    assert calls == ["sft"] and resumed.trained
    final = PeftModel.from_pretrained(tiny_model("llama"), out / "adapter")
    with torch.no_grad():
        ids = torch.randint(3, 200, (1, 7))
        assert torch.allclose(final.eval()(input_ids=ids).logits, first.model.eval()(input_ids=ids).logits,
                              atol=1e-5)  # same seeds: the resumed run ends where the whole one did

    with pytest.raises(IA2Error, match="different config"):
        (out / "run.json").unlink()
        train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft", beta=0.9), out)
    redone = train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("ia2->sft", beta=0.9), out, overwrite=True)
    assert redone.trained and yaml.safe_load((out / "config.yaml").read_text())["beta"] == 0.9


def test_methods_that_need_the_teacher_say_so(tmp_path):
    bare = TrainingData(list(range(2)), list(range(1)))
    with pytest.raises(IA2Error, match="needs teacher signals"):
        train_method(tiny_model("llama"), TOK, SPEC, bare, _cfg("ia2"), tmp_path)


def test_teacher_collected_with_another_prompt_preset_is_refused(data, tmp_path):
    other = TrainingData(data.train, data.dev, data.train_signals, data.dev_signals,
                         teacher={"key": "k", "config": {"preset": "paper"}})
    with pytest.raises(IA2Error, match="preset 'paper'"):
        train_method(tiny_model("llama"), TOK, SPEC, other, _cfg("ia2"), tmp_path)
