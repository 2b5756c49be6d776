"""The teacher cache: hits, misses, resumption after a crash, corruption, and the key."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import ia2.teacher.cache as cache_mod
import ia2.teacher.collect as collect
from ia2.episodes import Episode
from ia2.tasks.prompts import encode_prompt
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.teacher.cache import cache_fields, cache_key, model_fingerprint
from ia2.teacher.collect import TeacherConfig, eos_ids, episode_prompts, teach, teach_episode
from ia2.testing import tiny_model, tiny_tokenizer

SPEC = TaskSpec(
    name="toy", kind="classification", description="toy sentiment", source=Source("sst2"),
    templates={"natural": Template("Review: {text}\nSentiment: ", "{answer}"),
               "paper": Template("Text: {text}\nLabel: ", "{answer}")},
    labels=("negative", "positive"), max_new_tokens=3)
WORDS = ["good fun", "awful", "a bore", "lovely", "fine", "bad", "great", "meh"]


def _episode(n=5, seed=0):
    ex = [Example({"text": w}, i % 2, f"toy:{i}") for i, w in enumerate(WORDS)]
    train, dev = tuple(ex[:n]), tuple(ex[n:n + 2])
    rot = lambda i: tuple((i + k) % n for k in range(1, n))  # noqa: E731
    return Episode("toy", n, seed, train, dev, (), (),
                   tuple(rot(i) for i in range(n)), tuple(tuple(range(n)) for _ in dev))


@pytest.fixture
def setup(monkeypatch, tmp_path):
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)  # 7 items -> 4 shards
    return tiny_model("llama"), tiny_tokenizer(), tmp_path / "cache"


CFG = TeacherConfig(batch_size=3, topk=4)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.response_ids.tolist() == y.response_ids.tolist()
        assert torch.equal(x.activations, y.activations)
        assert torch.equal(x.topk_ids, y.topk_ids) and torch.equal(x.topk_logprobs, y.topk_logprobs)


def test_signals_are_the_episode_prompts_and_hit_the_cache(setup, monkeypatch):
    model, tok, root = setup
    ep = _episode()
    first = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    assert first.computed == 7 and len(first.train) == 5 and len(first.dev) == 2
    assert first.path == root / first.key and (first.path / "manifest.json").is_file()
    # train example 2 is prompted with its demonstrations demos_for_train[2] in order
    p = encode_prompt(tok, SPEC, ep.train[2], [ep.train[k] for k in ep.demos_for_train[2]])
    direct = teach(model, tok, [p.ids], dataclasses.replace(CFG, dtype="fp32").for_task(SPEC))[0]
    assert first.train[2].response_ids.tolist() == direct.response_ids.tolist()
    torch.testing.assert_close(first.train[2].activations, direct.activations.half())
    assert first.items[2] == {"split": "train", "index": 2, "uid": "toy:2", "n_demos": 4}
    # second call: nothing is computed, the model is never run
    monkeypatch.setattr(collect, "teach", lambda *a, **k: pytest.fail("recomputed"))
    again = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    assert again.computed == 0 and again.key == first.key
    _same(first.train + first.dev, again.train + again.dev)


def test_resume_after_crash(setup, monkeypatch):
    model, tok, root = setup
    ep = _episode()
    calls = []
    real_teach = collect.teach

    def crash_after_first_shard(*a, **k):
        if calls:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return real_teach(*a, **k)

    monkeypatch.setattr(collect, "teach", crash_after_first_shard)
    with pytest.raises(RuntimeError, match="simulated"):
        teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    [entry] = list(root.iterdir())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert list(manifest["shards"]) == ["00000"] and manifest["complete"] is False
    monkeypatch.setattr(collect, "teach", real_teach)
    resumed = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    assert resumed.computed == 5  # only the three unfinished shards
    fresh = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root / "other", progress=False)
    _same(resumed.train + resumed.dev, fresh.train + fresh.dev)
    assert json.loads((entry / "manifest.json").read_text())["complete"] is True


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corruption_is_detected_and_rebuilt(setup, damage):
    model, tok, root = setup
    ep = _episode()
    first = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    shard = first.path / "shard-00001.safetensors"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same length, one byte of tensor data changed
        shard.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif damage == "delete":
        shard.unlink()
    else:
        (first.path / "manifest.json").write_text("{ not json")
    again = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    assert again.computed == (7 if damage == "manifest" else 2)
    _same(first.train + first.dev, again.train + again.dev)
    assert shard.read_bytes() == data


def test_layout_is_readable_with_safetensors_alone(setup):
    model, tok, root = setup
    ts = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)
    manifest = json.loads((ts.path / "manifest.json").read_text())
    where = next(r for r in manifest["shards"].values() if r["items"][0] <= 5 < r["items"][1])
    tensors = load_file(ts.path / where["file"])
    assert tensors["dev.0.activations"].dtype == torch.float16
    assert torch.equal(tensors["dev.0.activations"], ts.dev[0].activations)
    assert torch.equal(tensors["dev.0.response_ids"], ts.dev[0].response_ids)
    # fp16 storage: layers x aligned positions x hidden x 2 bytes per example (+ ids, top-k)
    L, T, H = ts.dev[0].activations.shape
    assert (L, H) == (2, 32) and 1 <= T <= 3
    assert tensors["dev.0.activations"].numel() * 2 == L * T * H * 2
    total = sum(r["bytes"] for r in manifest["shards"].values())
    assert manifest["bytes"] == total and manifest["fields"]["task"] == "toy"


def _key(model, tok, config=CFG, spec=SPEC, ep=None, label_ids=None):
    ep = ep or _episode()
    config = config.for_task(spec)
    config = dataclasses.replace(config, layers=config.layers or (0, 1))
    items = episode_prompts(model, tok, spec, ep, config)
    return cache_key(cache_fields(model, tok, spec, ep, config, items, eos_ids(model, tok),
                                  label_ids))


def test_key_changes_with_every_field():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    base = _key(model, tok)
    assert _key(model, tok) == base
    variants = {
        "site": _key(model, tok, dataclasses.replace(CFG, site="residual")),
        "layers": _key(model, tok, dataclasses.replace(CFG, layers=(1,))),
        "G": _key(model, tok, dataclasses.replace(CFG, max_new_tokens=4)),
        "stop": _key(model, tok, dataclasses.replace(CFG, stop=("\n",))),
        "topk": _key(model, tok, dataclasses.replace(CFG, topk=5)),
        "full": _key(model, tok, dataclasses.replace(CFG, full_distribution=True)),
        "dtype": _key(model, tok, dataclasses.replace(CFG, dtype="bf16")),
        "preset": _key(model, tok, dataclasses.replace(CFG, preset="paper")),
        "labels": _key(model, tok, dataclasses.replace(CFG, constrain_to_labels=True), label_ids=[3, 4]),
        "max_length": _key(model, tok, dataclasses.replace(CFG, max_length=40)),  # drops demos
        "episode": _key(model, tok, ep=_episode(n=4)),
        "seed": _key(model, tok, ep=dataclasses.replace(_episode(), seed=1)),
        "task": _key(model, tok, spec=dataclasses.replace(SPEC, name="toy2")),
        "weights": _key(tiny_model("llama", seed=1), tok),
    }
    assert base not in variants.values() and len(set(variants.values())) == len(variants)


def test_full_distribution_field_round_trips_and_only_keys_entries_that_hold_it(setup, monkeypatch):
    model, tok, root = setup
    ep = _episode()
    plain = teach_episode(model, tok, SPEC, ep, CFG, cache_root=root, progress=False)
    full_cfg = dataclasses.replace(CFG, full_distribution=True)
    full = teach_episode(model, tok, SPEC, ep, full_cfg, cache_root=root, progress=False)
    assert full.key != plain.key and full.computed == 7
    fields = json.loads((full.path / "manifest.json").read_text())["fields"]
    assert fields["full_distribution"] is True
    assert "full_distribution" not in json.loads((plain.path / "manifest.json").read_text())["fields"]
    # what was stored: [T, V] in the storage dtype, the same responses as without it
    V = len(tok)
    for a, b in zip(plain.train + plain.dev, full.train + full.dev):
        assert a.logprobs is None and b.logprobs.shape == (b.length, V)
        assert b.logprobs.dtype == torch.float16
        assert a.response_ids.tolist() == b.response_ids.tolist()
        torch.testing.assert_close(b.logprobs.float().topk(4).values, b.topk_logprobs,
                                   rtol=0, atol=2e-2)  # fp16 rounding of log-probs near -5
    tensors = load_file(full.path / "shard-00000.safetensors")
    assert torch.equal(tensors["train.0.logprobs"], full.train[0].logprobs)
    monkeypatch.setattr(collect, "teach", lambda *a, **k: pytest.fail("recomputed"))
    again = teach_episode(model, tok, SPEC, ep, full_cfg, cache_root=root, progress=False)
    assert again.computed == 0
    assert all(torch.equal(x.logprobs, y.logprobs) for x, y in zip(again.train, full.train))


def test_model_fingerprint():
    model = tiny_model("llama")
    fp = model_fingerprint(model)
    assert fp == model_fingerprint(tiny_model("llama")) != model_fingerprint(tiny_model("llama", seed=1))
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] += 1e-3
    assert model_fingerprint(model) != fp
    model.ia2_fingerprint = "dir:abc"  # the loader's fingerprint is trusted for base weights...
    assert model_fingerprint(model) == "dir:abc"
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    wrapped = model_fingerprint(peft)  # ...but an adapter on top is always hashed
    assert wrapped.startswith("dir:abc+") and wrapped != "dir:abc"
    with torch.no_grad():
        next(p for n, p in peft.named_parameters() if "lora_B" in n).add_(1.0)
    assert model_fingerprint(peft) != wrapped


def test_unwritable_cache_is_an_error(setup):
    model, tok, root = setup
    root.parent.mkdir(exist_ok=True)
    root.write_text("a file where the cache directory should be")
    from ia2.errors import IA2Error

    with pytest.raises(IA2Error, match="cannot write the teacher cache"):
        teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)


def test_the_key_holds_no_model_or_tokenizer_path_so_a_moved_cache_is_reused(setup, monkeypatch):
    model, tok, root = setup
    model.config._name_or_path, tok.name_or_path = "/old/place/model", "/old/place/model"
    first = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["fields"]["model"]["name"] == "/old/place/model"  # recorded, not keyed
    moved = root.parent / "moved"
    root.rename(moved)
    model.config._name_or_path, tok.name_or_path = "/new/place/model", "/new/place/model"
    monkeypatch.setattr(collect, "teach", lambda *a, **k: pytest.fail("recomputed"))
    again = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=moved, progress=False)
    assert again.computed == 0 and again.key == first.key
    _same(first.train + first.dev, again.train + again.dev)


def test_entries_written_under_the_old_path_key_are_still_read(setup, monkeypatch):
    model, tok, root = setup
    first = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)
    manifest = json.loads((first.path / "manifest.json").read_text())
    old = cache_mod.legacy_key(manifest["fields"])  # what ia2 keyed on before: names included
    assert old != first.key
    first.path.rename(root / old)
    (root / old / "manifest.json").write_text(json.dumps(dict(manifest, key=old)))
    monkeypatch.setattr(collect, "teach", lambda *a, **k: pytest.fail("recomputed"))
    again = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)
    assert again.computed == 0 and again.key == old and again.path == root / old


def test_two_processes_filling_one_entry_compute_it_once(tmp_path):
    import multiprocessing

    from cache_worker import fill

    ctx = multiprocessing.get_context("spawn")
    holding, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    root = tmp_path / "cache"
    first = ctx.Process(target=fill, args=(root, True, holding, ready, out))
    first.start()
    assert holding.wait(300), "the first process never started computing"
    second = ctx.Process(target=fill, args=(root, False, holding, ready, out))
    second.start()
    results = dict((is_first, (computed, key)) for is_first, computed, key in
                   (out.get(timeout=300) for _ in range(2)))
    for p in (first, second):
        p.join(60)
        assert p.exitcode == 0
    assert results[True][0] == 7 and results[False][0] == 0  # the second waited, then reused
    assert results[True][1] == results[False][1]
