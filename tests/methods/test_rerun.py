"""Asking again for a run: a finished one with another config says what differs, an interrupted
one says that (and where) it resumes, a failed one that finished no stage does not block a
corrected rerun."""

import json
import logging
import shutil

import pytest
import yaml
from methods_helpers import examples, teacher_data, tiny_spec

from ia2.errors import IA2Error
from ia2.methods import pipeline
from ia2.methods.pipeline import RunConfig, TrainingData, train_method
from ia2.methods.trainer import TrainConfig
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()
DATA = TrainingData(examples(4), examples(2, start=100))


@pytest.fixture(scope="module")
def taught():
    train, sig_train, dev, sig_dev = teacher_data(tiny_model("llama"), TOK, SPEC, n_train=4,
                                                  n_dev=2)
    return TrainingData(train, dev, sig_train, sig_dev)


def _cfg(method="sft", epochs=1, **kw):
    return RunConfig(method=method, train=TrainConfig(lr=1e-2, epochs=epochs, progress=False), **kw)


def test_a_finished_run_asked_with_another_config_names_the_keys_that_differ(tmp_path):
    out = tmp_path / "run"
    train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(), out, extra={"task": "tiny"})
    again = train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(), out, extra={"task": "tiny"})
    assert not again.trained
    with pytest.raises(IA2Error) as e:
        train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(epochs=2, beta=0.3), out,
                     extra={"task": "other"})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{out} holds a finished run with a different config")
    assert "(beta: 0.5 → 0.3, task: tiny → other, train.epochs: 1 → 2)" in msg
    assert "--overwrite" in msg


def test_a_resumed_run_says_which_stage_and_checkpoint_it_resumes(taught, tmp_path, caplog):
    out = tmp_path / "run"
    train_method(tiny_model("llama"), TOK, SPEC, taught, _cfg("sft->ia2"), out,
                 keep_checkpoints=True)
    # as if killed in stage 2 after its last checkpoint: stage 1 done, stage 2 not recorded
    (out / "run.json").unlink()
    (out / "stages" / "2-ia2" / "stage.json").unlink()
    shutil.rmtree(out / "stages" / "2-ia2" / "adapter")
    ckpt = max((out / "stages" / "2-ia2" / "checkpoints").glob("checkpoint-*"),
               key=lambda p: int(p.name.split("-")[1]))
    with caplog.at_level(logging.WARNING, logger="ia2.methods.pipeline"):
        train_method(tiny_model("llama"), TOK, SPEC, taught, _cfg("sft->ia2"), out)
    said = [r.getMessage() for r in caplog.records]
    assert f"resuming {out} (1-sft finished before)" in said
    assert f"resuming {out}: stage 2-ia2 from {ckpt.name}" in said


def test_a_failed_train_does_not_block_a_corrected_rerun(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    real = pipeline.train_stage

    def fail(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline, "train_stage", fail)
    with pytest.raises(RuntimeError):
        train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(epochs=1), out)
    assert (out / "config.yaml").is_file() and not (out / "run.json").exists()
    monkeypatch.setattr(pipeline, "train_stage", real)
    with caplog.at_level(logging.WARNING, logger="ia2.methods.pipeline"):
        done = train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(epochs=2), out)
    assert done.trained
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2
    assert "replacing an unfinished run that finished no stage (train.epochs: 1 → 2)" \
        in caplog.text
    # a run with a finished stage is kept: another config is still refused
    (out / "run.json").unlink()
    with pytest.raises(IA2Error, match=r"unfinished run with a different config \(.*2 → 3"):
        train_method(tiny_model("llama"), TOK, SPEC, DATA, _cfg(epochs=3), out)
    assert json.loads((out / "stages" / "1-sft" / "stage.json").read_text())


def test_a_damaged_stage_adapter_is_trained_again_on_resume(taught, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_method(tiny_model("llama"), TOK, SPEC, taught, _cfg("sft->ia2"), out)
    (out / "run.json").unlink()
    weights = out / "stages" / "1-sft" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    calls = []
    real = pipeline.train_stage
    monkeypatch.setattr(pipeline, "train_stage",
                        lambda m, o, *a, **k: calls.append(o.loss) or real(m, o, *a, **k))
    assert train_method(tiny_model("llama"), TOK, SPEC, taught, _cfg("sft->ia2"), out).trained
    assert calls == ["sft"]  # stage 1 again; stage 2 was finished and intact
