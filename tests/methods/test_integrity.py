"""Adapters are verified before they are trusted: run.json records the adapter files' sha256 and
the base model; every consumer checks them and says in one line what is wrong."""

import json
import logging
import shutil

import pytest
from methods_helpers import examples, tiny_spec

from ia2.errors import IA2Error
from ia2.methods.integrity import adapter_problem, load_adapter, verify_adapter
from ia2.methods.pipeline import RunConfig, TrainingData, train_method
from ia2.methods.trainer import TrainConfig
from ia2.teacher.cache import file_sha256, model_fingerprint
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()
WEIGHTS = "adapter_model.safetensors"


def _cfg(**kw):
    return RunConfig(method="sft", train=TrainConfig(lr=1e-2, epochs=1, progress=False), **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    data = TrainingData(examples(4), examples(2, start=100))
    train_method(tiny_model("llama"), TOK, SPEC, data, _cfg(), out)
    return out


@pytest.fixture
def run(run_dir, tmp_path):
    """A private copy of the finished run, free to damage."""
    return shutil.copytree(run_dir, tmp_path / "run")


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_run_json_records_the_adapter_files_and_the_base_model(run):
    doc = json.loads((run / "run.json").read_text())
    files = doc["adapter_files"]
    assert set(files) == {"adapter_config.json", WEIGHTS}
    for name, rec in files.items():
        assert rec == {"sha256": file_sha256(run / "adapter" / name),
                       "bytes": (run / "adapter" / name).stat().st_size}
    assert doc["base_model"] == model_fingerprint(tiny_model("llama"))
    verify_adapter(run / "adapter", tiny_model("llama"))
    assert load_adapter(tiny_model("llama"), run / "adapter").active_adapter == "default"


@pytest.mark.parametrize("damage, words", [("flip", "checksum mismatch"), ("truncate", "truncated"),
                                           ("delete", "is missing")])
def test_a_damaged_adapter_file_is_one_line_naming_it(run, damage, words):
    path = run / "adapter" / WEIGHTS
    data = path.read_bytes()
    if damage == "flip":  # same size, one byte of tensor data changed: a silent change before
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    with pytest.raises(IA2Error) as e:
        load_adapter(tiny_model("llama"), run / "adapter")
    msg = _one_line(e)
    assert str(path) in msg and words in msg and "retrain with --overwrite" in msg


def test_an_adapter_trained_on_another_base_model_is_refused(run):
    other = tiny_model("llama", seed=1)
    with pytest.raises(IA2Error) as e:
        load_adapter(other, run / "adapter")
    msg = _one_line(e)
    assert "was trained on base model weights:" in msg
    recorded = json.loads((run / "run.json").read_text())["base_model"]
    assert recorded.split(":")[1][:12] in msg and model_fingerprint(other).split(":")[1][:12] in msg
    other.ia2_fingerprint = "dir:abc"  # a loader's fingerprint is compared the same way
    assert "not dir:abc" in adapter_problem(run / "adapter", other)


def test_a_plain_peft_adapter_loads_with_a_warning_but_a_truncated_one_is_one_line(run, tmp_path,
                                                                                  caplog):
    plain = shutil.copytree(run / "adapter", tmp_path / "plain")  # no run.json beside it
    with caplog.at_level(logging.WARNING):
        load_adapter(tiny_model("llama"), plain)
    assert "has no run.json" in caplog.text
    data = (plain / WEIGHTS).read_bytes()
    (plain / WEIGHTS).write_bytes(data[: len(data) - 100])
    with pytest.raises(IA2Error) as e:
        load_adapter(tiny_model("llama"), plain)
    assert "is damaged (not a complete safetensors file" in _one_line(e)
    with pytest.raises(IA2Error, match="does not exist"):
        verify_adapter(tmp_path / "nowhere")


def test_the_subspace_analysis_checks_its_adapters(run, tmp_path):
    from ia2.evaluate.subspace import subspace_overlap

    assert subspace_overlap(run / "adapter", run / "adapter")
    other = shutil.copytree(run, tmp_path / "other")
    doc = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps(dict(doc, base_model="dir:elsewhere")))
    with pytest.raises(IA2Error, match="different base models"):
        subspace_overlap(run / "adapter", other / "adapter")
    path = run / "adapter" / WEIGHTS
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IA2Error, match="truncated"):
        subspace_overlap(run / "adapter", run / "adapter")


def test_ia2_run_retrains_a_damaged_finished_run_and_refuses_a_damaged_adapter(monkeypatch,
                                                                                tmp_path):
    from ia2 import experiment
    from ia2.config import ExperimentConfig, TaskEntry
    from ia2.episodes import Episode

    train, dev = tuple(examples(4)), tuple(examples(2, start=100))
    episode = Episode("tiny", 4, 0, train, dev, (), (), tuple((1,) for _ in train),
                      tuple((0,) for _ in dev))
    config = ExperimentConfig(name="t", tasks=(TaskEntry("tiny"),), methods=("sft",),
                              out=str(tmp_path / "study"),
                              train=TrainConfig(epochs=1, progress=False))
    study = experiment.Study(config)
    monkeypatch.setattr(study, "spec", lambda name: SPEC)
    monkeypatch.setattr(study, "episode", lambda *a: episode)

    def model():
        m = tiny_model("llama")
        m.ia2_fingerprint = "dir:tiny"
        return m, TOK

    monkeypatch.setattr(study, "model", model)
    unit = experiment.TrainUnit("tiny", "sft", 4, 0, 1e-2)
    assert study.train(unit).trained
    assert study.train(unit) is None  # finished and intact: nothing to do
    weights = unit.run_dir(study.out) / "adapter" / WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[:-8])
    with pytest.raises(IA2Error, match="truncated"):
        study._adapted(weights.parent)
    assert study.train(unit).trained  # damaged: treated as unfinished and trained again
    assert weights.read_bytes() == good  # same seed, same adapter
    study._adapted(weights.parent)
    longer = experiment.Study(ExperimentConfig(
        name="t", tasks=(TaskEntry("tiny"),), methods=("sft",), out=str(tmp_path / "study"),
        train=TrainConfig(epochs=2, progress=False)))
    with pytest.raises(IA2Error,
                       match=r"finished run with a different config \(train.epochs: 1 → 2\)"):
        longer.train(unit)


def _has_sst2() -> bool:
    from ia2.paths import data_dir

    try:
        return (data_dir() / "sst2" / "validation.tsv").is_file()
    except IA2Error:
        return False


def _ia2_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("ia2:")]


@pytest.mark.skipif(not _has_sst2(), reason="needs the SST-2 files of the shared data directory")
def test_eval_cli_checks_the_adapter_and_says_what_is_wrong_in_one_line(tmp_path, capsys):
    from ia2.cli import main
    from ia2.models import load_model

    for seed in (0, 1):
        tiny_model("llama", seed=seed).save_pretrained(tmp_path / f"m{seed}")
        TOK.save_pretrained(tmp_path / f"m{seed}")
    base, _ = load_model(str(tmp_path / "m0"))
    data = TrainingData(examples(4), examples(2, start=100))
    train_method(base, TOK, SPEC, data, _cfg(), tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    argv = ["eval", "--adapter", str(adapter), "--task", "sst2", "--limit", "2", "--out",
            str(tmp_path / "store")]
    assert main(argv + ["--model", str(tmp_path / "m0")]) == 0
    capsys.readouterr()
    assert main(argv + ["--model", str(tmp_path / "m1")]) == 2
    err = _ia2_lines(capsys.readouterr().err)  # transformers' loading bar aside
    assert len(err) == 1 and "was trained on base model dir:" in err[0]
    path = adapter / WEIGHTS
    data = path.read_bytes()
    path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    assert main(argv + ["--model", str(tmp_path / "m0")]) == 2
    err = _ia2_lines(capsys.readouterr().err)
    assert err == [f"ia2: error: adapter file {path} is damaged (checksum mismatch) — retrain "
                   "with --overwrite or let `ia2 run` retrain it"]
