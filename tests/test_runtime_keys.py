"""What the model's dtype changes in the study's identities (teacher cache keys, evaluation rows)
and the teacher cache size a dry run reports (ia2.costs), against real cache entries."""

import dataclasses
import json

import pytest
import torch

from ia2.config import ExperimentConfig, TaskEntry
from ia2.costs import ModelDims, teacher_cache_bytes, teacher_episodes
from ia2.episodes import make_episode
from ia2.evaluate.runner import EvalConfig, evaluate_and_store
from ia2.store import ResultsStore, run_key
from ia2.tasks.registry import get_task
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.teacher.collect import TeacherConfig, teach_episode
from ia2.testing import tiny_model, tiny_tokenizer

TOY = TaskSpec(name="toy", kind="classification", description="toy", source=Source("none"),
               templates={"natural": Template("Review: {text}\nSentiment:")},
               labels=("negative", "positive"), verbalizers={"natural": ("negative", "positive")})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bf16(model):
    return model.to(torch.bfloat16)


def test_teacher_cache_keys_the_model_dtype_but_keeps_fp32_keys(tmp_path):
    spec = get_task("sst2", min_words=12)
    episode = make_episode(spec, 4, 0)
    tok, cfg = tiny_tokenizer(), TeacherConfig(constrain_to_labels=True, batch_size=6)
    fp32 = teach_episode(tiny_model("llama"), tok, spec, episode, cfg, tmp_path, progress=False)
    bf16 = teach_episode(_bf16(tiny_model("llama")), tok, spec, episode, cfg, tmp_path,
                         progress=False)
    again = teach_episode(_bf16(tiny_model("llama")), tok, spec, episode, cfg, tmp_path,
                          progress=False)
    assert fp32.key != bf16.key and bf16.computed == 6 and again.computed == 0
    # an fp32 entry's fields are exactly those of earlier versions: its key is unchanged
    fields = json.loads((fp32.path / "manifest.json").read_text())["fields"]
    assert sorted(fields["model"]) == ["attn_implementation", "class", "fingerprint", "name"]
    fields = json.loads((bf16.path / "manifest.json").read_text())["fields"]
    assert fields["model"]["dtype"] == "bf16"


def test_evaluation_rows_key_the_model_dtype_but_keep_fp32_keys(tmp_path):
    tok = tiny_tokenizer()
    queries = [Example({"text": f"fine film {i}"}, i % 2, f"toy:{i}") for i in range(4)]
    ident = dict(model="tiny", adapter=None, method="zero_shot", task="toy", n=None, seed=None)
    config = EvalConfig()
    with ResultsStore(tmp_path / "r.sqlite") as store:
        fp32 = evaluate_and_store(store, tiny_model("llama"), tok, TOY, queries, "zero_shot",
                                  config, ident)
        bf16 = evaluate_and_store(store, _bf16(tiny_model("llama")), tok, TOY, queries,
                                  "zero_shot", config, ident)
        assert len(store.rows()) == 2
    # the key earlier versions wrote, rebuilt from its documented fields; bf16 adds its dtype
    fields = dict(ident, eval_task="toy", setting="zero_shot", size=4, preset="natural",
                  n_bins=15, confidence="label_set")
    assert fp32["key"] == run_key(**fields)
    assert bf16["key"] == run_key(**fields, dtype="bf16")
    assert (fp32["definitions"]["model_dtype"], bf16["definitions"]["model_dtype"]) == ("fp32", "bf16")


def _signal_bytes(tset) -> int:
    return sum(t.nbytes for sig in tset.train + tset.dev
               for t in (sig.response_ids, sig.activations, sig.topk_ids, sig.topk_logprobs,
                         sig.logprobs) if t is not None)


@pytest.mark.parametrize("methods,kd,layers,storage", [
    (("ia2",), "full", None, "fp16"),
    (("kd", "sft"), "full", (1,), "bf16"),  # kd=full: the whole distribution is kept
    (("ia2->sft",), "topk", None, "fp32"),
])
def test_dry_run_cache_size_is_what_the_teacher_writes(tmp_path, methods, kd, layers, storage):
    """sst2 answers in one token, so the bound (every response at its budget) is exact."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    teacher = TeacherConfig(constrain_to_labels=True, layers=layers, dtype=storage, batch_size=6)
    config = ExperimentConfig(name="x", tasks=(TaskEntry("sst2", options={"min_words": 12}),),
                              methods=methods, kd=kd, n=(4,), seeds=(0, 1), teacher=teacher)
    assert teacher_episodes(config) == [("sst2", 4, 0), ("sst2", 4, 1)]
    written = 0
    for seed in (0, 1):
        episode = make_episode(get_task("sst2", min_words=12), 4, seed)
        full = kd == "full" and "kd" in methods
        tset = teach_episode(model, tok, get_task("sst2", min_words=12), episode,
                             dataclasses.replace(teacher, full_distribution=full), tmp_path,
                             progress=False)
        written += _signal_bytes(tset)
    assert teacher_cache_bytes(config, model.config) == written
    dims = ModelDims(layers=2, hidden=32, vocab=321)  # the tiny model's, given by hand
    assert teacher_cache_bytes(config, dims) == written
    assert teacher_cache_bytes(config, {"layers": 2, "hidden": 32, "vocab": 321}) == written
    assert teacher_cache_bytes(config, dims, episodes=[("sst2", 4, 0)]) * 2 == written


def test_studies_without_a_teacher_write_no_cache():
    config = ExperimentConfig(name="x", tasks=(TaskEntry("sst2"),), methods=("sft",))
    assert teacher_cache_bytes(config, ModelDims(30, 576, 49152)) == 0
    on_icl = dataclasses.replace(config, sft_labels="icl")  # sft on the teacher's answers
    # 8 train + 4 dev examples x (30 layers x 576 x fp16 + 8-byte id + 20 x 12-byte top-k)
    per = 30 * 576 * 2 + 8 + 20 * 12
    assert teacher_cache_bytes(on_icl, ModelDims(30, 576, 49152)) == 12 * per


def test_a_small_study_in_bf16_keeps_its_numbers_apart(tmp_path, monkeypatch):
    """`runtime: {dtype: bf16}` end to end on a tiny model: the model is loaded in bf16, its
    teacher entry and evaluation rows are keyed by it, its runs record it, and its numbers are
    the fp32 study's within bf16 rounding."""
    import yaml

    from ia2 import experiment
    from ia2.config import load_experiment

    monkeypatch.setenv("IA2_CACHE", str(tmp_path / "cache"))
    tiny_model("llama").save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    rows = {}
    for dtype in ("fp32", "bf16"):
        doc = {"name": dtype, "model": str(tmp_path / "tiny"), "out": str(tmp_path / dtype),
               "tasks": [{"task": "sst2", "ood": [], "options": {"min_words": 12}}],
               "methods": ["ia2"], "baselines": ["zero_shot"], "n": [4], "seeds": [0],
               "lr": [1e-2], "teacher": {"constrain_to_labels": True},
               "train": {"epochs": 1, "eval_steps": 1}, "eval": {"size": 8},
               "analysis": {"asim": False, "subspace": False},
               "runtime": {"device": "cpu", "dtype": dtype}}
        (tmp_path / f"{dtype}.yaml").write_text(yaml.safe_dump(doc))
        out = experiment.run_study(load_experiment(tmp_path / f"{dtype}.yaml"), progress=False)
        with ResultsStore(out / "results.sqlite") as store:
            rows[dtype] = {r["setting"]: r for r in store.rows()}
        run = next((out / "runs" / "sst2").iterdir())
        assert yaml.safe_load((run / "config.yaml").read_text()).get("dtype") == (
            None if dtype == "fp32" else "bf16")
    manifests = [json.loads(p.read_text())["fields"]["model"]
                 for p in (tmp_path / "cache" / "teacher").glob("*/manifest.json")]
    assert sorted(m.get("dtype", "fp32") for m in manifests) == ["bf16", "fp32"]
    for setting in ("zero_shot", "adapter"):
        a, b = rows["fp32"][setting], rows["bf16"][setting]
        assert "dtype=bf16" in b["key"] and "dtype" not in a["key"]
        if setting == "zero_shot":  # adapters differ: their weights are in the key
            assert b["key"].replace("|dtype=bf16", "") == a["key"]
        # measured: nll and Brier within 3e-4, the same accuracy (one query of 8 may flip)
        for metric, bound in (("nll", 0.01), ("brier", 0.005), ("label_set_accuracy", 0.125)):
            assert abs(a["metrics"][metric] - b["metrics"][metric]) <= bound, (setting, metric)
