"""Method dispatch and run directories: every method trains and writes a loadable adapter,
ia2->sft continues the same adapter under a fresh optimizer, finished runs are reused."""

import json

import pytest
import torch
import yaml
from methods_helpers import examples, reference_teacher, tiny_spec
from peft import PeftModel
from transformers import TrainerCallback

from ia2.errors import IA2Error
from ia2.methods import losses, pipeline
from ia2.methods.adapters import AdapterConfig
from ia2.methods.pipeline import METHODS, RunConfig, TrainingData, stages, train_method
from ia2.methods.trainer import TrainConfig
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()


def _full_teacher(model, exs, steps=2, topk=4):
    """methods_helpers' reference teacher with its whole distribution (top-k over all V)."""
    out = []
    for ex in exs:
        s = reference_teacher(model, TOK, SPEC, ex, examples(3, start=200), steps, topk=len(TOK))
        s.logprobs = torch.empty_like(s.topk_logprobs).scatter_(-1, s.topk_ids, s.topk_logprobs)
        s.topk_ids, s.topk_logprobs = s.topk_ids[:, :topk], s.topk_logprobs[:, :topk]
        out.append(s)
    return out


@pytest.fixture(scope="module")
def data():
    model, train, dev = tiny_model("llama"), examples(8), examples(4, start=100)
    return TrainingData(train, dev, _full_teacher(model, train), _full_teacher(model, dev),
                        teacher={"key": "abc123", "config": {}})


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


@pytest.mark.parametrize("kd", ["full", "topk"])
def test_kd_trains_on_the_chosen_teacher_distribution(kd, data, tmp_path, monkeypatch):
    calls = []
    for name in ("kd_full", "kd_topk"):
        real = getattr(losses, name)
        monkeypatch.setattr(losses, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    cfg = _cfg("kd", kd=kd)
    cfg.train.eval_steps, cfg.train.epochs = 1, 3
    result = train_method(tiny_model("llama"), TOK, SPEC, data, cfg, tmp_path / "run")
    assert set(calls) == {f"kd_{kd}"}
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["kd"] == kd
    # the dev loss before training, computed independently on the base model (LoRA's B is zero)
    base = tiny_model("llama")
    before = []
    for ex, sig in zip(data.dev, data.dev_signals):
        from ia2.tasks.prompts import encode_prompt

        q = encode_prompt(TOK, SPEC, ex, ()).ids
        ids = q + sig.response_ids.tolist()[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(base(input_ids=torch.tensor([ids])).logits[0, len(q) - 1:], -1)
        if kd == "full":
            p = sig.logprobs.exp()
            kl = (p * (sig.logprobs - logp)).sum(-1)
        else:
            p_log = torch.log_softmax(sig.topk_logprobs, -1)
            kl = (p_log.exp() * (p_log - logp.gather(-1, sig.topk_ids))).sum(-1)
        before.append(kl.mean().item())
    stage = result.stages["1-kd"]
    assert stage["best_dev_loss"] < stage["dev"][0][1] < sum(before) / len(before)  # it learns


def test_full_kd_on_a_topk_only_teacher_is_one_clear_error(data, tmp_path):
    for s in data.train_signals[:1]:
        s.logprobs, kept = None, s.logprobs
    try:
        with pytest.raises(IA2Error, match="collect the teacher with full_distribution") as err:
            train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("kd"), tmp_path / "run")
        assert "\n" not in str(err.value) and not (tmp_path / "run" / "config.yaml").exists()
        # the cheap option needs no full distribution; methods other than kd never look at it
        train_method(tiny_model("llama"), TOK, SPEC, data, _cfg("kd", kd="topk"), tmp_path / "topk")
        with pytest.raises(IA2Error, match="unknown kd"):
            RunConfig(method="kd", kd="all")
    finally:
        data.train_signals[0].logprobs = kept


def _has_sst2() -> bool:
    try:
        from ia2.paths import data_dir

        return (data_dir() / "sst2" / "train.tsv").is_file()
    except Exception:
        return False


@pytest.fixture()
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("IA2_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(path)
    TOK.save_pretrained(path)
    return path


@pytest.mark.skipif(not _has_sst2(), reason="needs the SST-2 files of the shared data directory")
def test_train_and_teach_commands_collect_the_full_distribution_for_kd(tiny_checkpoint, tmp_path,
                                                                       capsys):
    from safetensors.torch import load_file

    from ia2.cli import main

    common = ["--model", str(tiny_checkpoint), "--task", "sst2", "--n", "4", "--seed", "1",
              "--max-demos", "1", "--no-progress"]
    train = ["train", *common, "--method", "kd", "--lr", "1e-2", "--epochs", "1"]
    teachers = {}
    for kd in ("full", "topk"):
        assert main([*train, "--kd", kd, "--out", str(tmp_path / kd)]) == 0
        teachers[kd] = json.loads((tmp_path / kd / "teacher.json").read_text())
        assert yaml.safe_load((tmp_path / kd / "config.yaml").read_text())["kd"] == kd
    assert teachers["full"]["config"]["full_distribution"] is True
    assert teachers["topk"]["config"]["full_distribution"] is False
    assert teachers["full"]["key"] != teachers["topk"]["key"]
    # the record says how often the ICL responses are right: the same responses either way
    assert teachers["full"]["accuracy"] == teachers["topk"]["accuracy"]
    assert teachers["full"]["accuracy"]["train"]["n"] == 4
    shard = load_file(f"{teachers['full']['path']}/shard-00000.safetensors")
    lp = shard["train.0.logprobs"]
    assert lp.shape == (shard["train.0.response_ids"].numel(), len(TOK)) and lp.dtype == torch.float16
    # `ia2 teach --full-distribution` finds that same entry in the cache
    capsys.readouterr()
    assert main(["teach", *common, "--full-distribution"]) == 0
    printed = capsys.readouterr().out
    assert f"cache: {teachers['full']['path']} " in printed and ": cached" in printed


def test_study_teacher_has_the_full_distribution_only_when_it_trains_full_kd(monkeypatch, tmp_path):
    from ia2 import experiment
    from ia2.config import ExperimentConfig, TaskEntry
    from ia2.episodes import Episode
    from ia2.teacher import collect

    train, dev = tuple(examples(4)), tuple(examples(2, start=100))
    episode = Episode("tiny", 4, 0, train, dev, (), (), tuple((1,) for _ in train),
                      tuple((0,) for _ in dev))

    def model():
        m = tiny_model("llama")
        m.ia2_fingerprint = "tiny"
        return m, TOK

    seen = []
    real = collect.teach_episode

    def spy(model, tok, spec, ep, config, **kw):
        seen.append(config.full_distribution)
        return real(model, tok, spec, ep, config, cache_root=tmp_path / "cache", progress=False)

    monkeypatch.setattr(collect, "teach_episode", spy)
    for methods, kd, expected in ((("ia2", "kd"), "full", [True, True]),
                                  (("ia2", "kd"), "topk", [False, False]),
                                  (("ia2",), "full", [False])):
        config = ExperimentConfig(name="t", tasks=(TaskEntry("tiny"),), methods=methods, kd=kd,
                                  out=str(tmp_path / f"{kd}-{len(methods)}"),
                                  train=TrainConfig(epochs=1, progress=False))
        study = experiment.Study(config)
        monkeypatch.setattr(study, "spec", lambda name: SPEC)
        monkeypatch.setattr(study, "episode", lambda *a: episode)
        monkeypatch.setattr(study, "model", model)
        seen.clear()
        for m in methods:
            unit = experiment.TrainUnit("tiny", m, 4, 0, 1e-2)
            assert study.run_config(unit).kd == kd
            result = study.train(unit)
            assert result.trained
        assert seen == expected, (methods, kd)
    with pytest.raises(IA2Error, match="unknown kd"):
        ExperimentConfig(name="t", tasks=(TaskEntry("tiny"),), kd="exact")
