import random

import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate.classify import score_classification
from ia2.evaluate.icl import (evaluate_classification, full_prompt_logits, logits_for_prompts,
                              next_token_logits, prefix_cache)
from ia2.tasks.prompts import encode_prompt, label_token_ids
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import ARCHITECTURES, tiny_model, tiny_tokenizer


def _alone(model, prompt):
    """The reference: one prompt, no batching, no padding, no cache."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt])).logits[0, -1]


def _random_ids(rng, n):
    return [rng.randrange(3, 259) for _ in range(n)]


@pytest.fixture(scope="module")
def models():
    return {arch: tiny_model(arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prefix_reuse_matches_each_prompt_alone(models, arch):
    model = models[arch]
    rng = random.Random(0)
    prefix = [1] + _random_ids(rng, 40)  # longer than gemma3's 16-token sliding window
    queries = [_random_ids(rng, n) for n in (1, 9, 25, 3, 17)]  # 25 > window on its own too
    got = next_token_logits(model, prefix, queries, batch_size=2)  # 3 batches share one cache
    ref = torch.stack([_alone(model, prefix + q) for q in queries])
    assert got.shape == (5, model.config.vocab_size)
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)
    # the answers really depend on the prefix (else the test could not tell reuse from none)
    assert not torch.allclose(got, next_token_logits(model, [1], queries), atol=1e-2)
    full = full_prompt_logits(model, [prefix + q for q in queries], batch_size=3)
    assert torch.allclose(full, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_empty_and_special_only_prefix(models, arch):
    model = models[arch]
    rng = random.Random(1)
    queries = [_random_ids(rng, n) for n in (4, 30, 11)]
    for prefix in ([], [1]):
        got = next_token_logits(model, prefix, queries, batch_size=8)
        ref = torch.stack([_alone(model, prefix + q) for q in queries])
        assert torch.allclose(got, ref, atol=1e-4, rtol=0)


def test_prefix_cache_is_not_modified(models):
    from ia2.evaluate.icl import _batch_view

    model = models["llama"]
    cache = prefix_cache(model, list(range(3, 23)))
    before = [layer.keys.clone() for layer in cache.layers]
    view = _batch_view(cache, 3)  # what each query batch runs on
    with torch.no_grad():
        model(input_ids=torch.ones(3, 4, dtype=torch.long), past_key_values=view,
              position_ids=torch.arange(20, 24).expand(3, 4))
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, cache.layers))
    assert view.layers[0].keys.shape[:3] == (3, before[0].shape[1], 24)
    assert prefix_cache(model, []) is None


def test_training_mode_restored_and_bad_input(models):
    model = models["qwen2"]
    model.train()
    try:
        next_token_logits(model, [1, 5], [[6]])
        assert model.training
    finally:
        model.eval()
    with pytest.raises(IA2Error, match="at least one token"):
        next_token_logits(model, [1], [[5], []])
    with pytest.raises(IA2Error, match="batch size"):
        next_token_logits(model, [1], [[5]], batch_size=0)
    assert next_token_logits(model, [1], []).shape == (0, model.config.vocab_size)


def test_peft_wrapped_model(models):
    peft = pytest.importorskip("peft")
    base = tiny_model("llama", seed=3)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    lora.eval()
    rng = random.Random(2)
    prefix, queries = [1] + _random_ids(rng, 10), [_random_ids(rng, n) for n in (2, 6)]
    got = next_token_logits(lora, prefix, queries)
    ref = torch.stack([_alone(lora, prefix + q) for q in queries])
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)


SPEC = TaskSpec(
    name="toy", kind="classification", description="toy sentiment",
    source=Source(loader="none"),
    templates={"natural": Template(query="Review: {text}\nSentiment: ", answer="{answer}")},
    labels=("negative", "positive"),
)


def _examples(n, seed):
    rng = random.Random(seed)
    words = ["good", "bad", "fine", "awful", "great", "dull"]
    return [Example({"text": " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))},
                    rng.randrange(2), f"toy:{seed}:{i}") for i in range(n)]


def test_logits_for_prompts_groups_prefixes_and_keeps_order(models):
    model, tok = models["gemma3_text"], tiny_tokenizer()
    queries = _examples(5, 0)
    demos_a, demos_b = _examples(2, 1), _examples(1, 2)
    prompts = [encode_prompt(tok, SPEC, q, demos_a if i % 2 else demos_b)
               for i, q in enumerate(queries)]
    got = logits_for_prompts(model, prompts, batch_size=2)
    ref = torch.stack([_alone(model, p.ids) for p in prompts])
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)


def test_evaluate_classification_matches_reference_scoring(models):
    model, tok = models["llama"], tiny_tokenizer()
    queries, demos = _examples(6, 3), _examples(3, 4)
    scores = evaluate_classification(model, tok, SPEC, queries, demos, batch_size=4, n_bins=3)
    prompts = [encode_prompt(tok, SPEC, q, demos) for q in queries]
    ref_logits = torch.stack([_alone(model, p.ids) for p in prompts])
    ref = score_classification(ref_logits, label_token_ids(tok, SPEC),
                               [q.label for q in queries], n_bins=3)
    for key in ("accuracy", "label_set_accuracy", "ece", "brier", "nll"):
        assert scores.metrics[key] == pytest.approx(ref.metrics[key], abs=1e-5)
    assert scores.metrics["n_demos"] == 3
    assert [r["uid"] for r in scores.records] == [q.uid for q in queries]
    with pytest.raises(IA2Error, match="not classification"):
        gen = TaskSpec(name="g", kind="generation", description="", source=Source("none"),
                       templates=SPEC.templates, parser="gsm8k")
        evaluate_classification(model, tok, gen, queries)


def test_unique_prefixes_are_batched_whole_and_match_each_prompt_alone(models, monkeypatch):
    """Per-query demonstrations make every prefix unique: those prompts go through the full-prompt
    path in batches; prompts that do share a prefix still share its cache."""
    import ia2.evaluate.icl as icl

    model, tok = models["gemma3_text"], tiny_tokenizer()
    queries = _examples(7, 5)
    per_query = [_examples(1 + i % 3, 100 + i) for i in range(5)] + [_examples(2, 9)] * 2
    prompts = [encode_prompt(tok, SPEC, q, d) for q, d in zip(queries, per_query)]
    assert len({tuple(p.ids[: p.query_start]) for p in prompts}) == 6
    prefix_calls, full_calls = [], []
    real_next, real_full = icl.next_token_logits, icl.full_prompt_logits
    monkeypatch.setattr(icl, "next_token_logits",
                        lambda m, prefix, qs, *a: prefix_calls.append(len(qs)) or real_next(m, prefix, qs, *a))
    monkeypatch.setattr(icl, "full_prompt_logits",
                        lambda m, ps, *a: full_calls.append(len(ps)) or real_full(m, ps, *a))
    got = logits_for_prompts(model, prompts, batch_size=3)
    ref = torch.stack([_alone(model, p.ids) for p in prompts])
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)
    assert full_calls == [5] and prefix_calls == [2]  # the 5 unique ones in one call


def test_evaluate_classification_with_demos_per_query(models):
    model, tok = models["qwen2"], tiny_tokenizer()
    queries = _examples(5, 6)
    per_query = [_examples(3, 200 + i) for i in range(5)]
    scores = evaluate_classification(model, tok, SPEC, queries, per_query, batch_size=2, n_bins=2)
    ref_logits = torch.stack([_alone(model, encode_prompt(tok, SPEC, q, d).ids)
                              for q, d in zip(queries, per_query)])
    ref = score_classification(ref_logits, label_token_ids(tok, SPEC),
                               [q.label for q in queries], n_bins=2)
    for key in ("accuracy", "label_set_accuracy", "ece", "brier", "nll"):
        assert scores.metrics[key] == pytest.approx(ref.metrics[key], abs=1e-5)
    # the demonstrations really are per query: one shared set scores differently
    shared = evaluate_classification(model, tok, SPEC, queries, per_query[0], n_bins=2)
    assert shared.metrics["nll"] != pytest.approx(scores.metrics["nll"], abs=1e-5)
    with pytest.raises(IA2Error, match="2 demonstration lists for 5 queries"):
        evaluate_classification(model, tok, SPEC, queries, per_query[:2])
