"""Evaluation settings and how ICL demonstrations are drawn (ia2.evaluate.runner)."""

from dataclasses import replace

import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate.classify import score_classification
from ia2.evaluate.runner import (EvalConfig, demo_sets, evaluate_and_store, evaluate_setting,
                                 icl_k_for, per_query_demos)
from ia2.tasks.prompts import encode_prompt, label_token_ids
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import tiny_model, tiny_tokenizer

SPEC = TaskSpec(name="toy", kind="classification", description="toy", source=Source("none"),
                templates={"natural": Template("Review: {text}\nSentiment:")},
                labels=("negative", "positive"),
                verbalizers={"natural": ("negative", "positive")})


def _examples(n, start=0):
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    return [Example({"text": f"{words[i % 8]} film {i}"}, i % 2, f"toy:{i}")
            for i in range(start, start + n)]


def test_shared_demo_sets_are_seeded_distinct_and_balanced_on_request():
    pool = _examples(40)
    a = demo_sets(pool, SPEC, k=6, sets=3, seed=0, balanced=True)
    assert a == demo_sets(pool, SPEC, k=6, sets=3, seed=0, balanced=True)
    assert a != demo_sets(pool, SPEC, k=6, sets=3, seed=1, balanced=True)
    assert len({tuple(e.uid for e in s) for s in a}) == 3
    for s in a:
        assert sorted(int(e.label) for e in s) == [0, 0, 0, 1, 1, 1]
    # random by default (the paper's): some draw is not balanced
    plain = demo_sets(pool, SPEC, k=6, sets=20, seed=0)
    assert any(sum(int(e.label) for e in s) != 3 for s in plain)
    with pytest.raises(IA2Error, match="fewer than k"):
        demo_sets(pool[:3], SPEC, k=4, sets=1, seed=0)


def test_per_query_demos_are_random_seeded_per_query_uid():
    pool, queries = _examples(40), _examples(30, start=500)
    a = per_query_demos(pool, SPEC, 4, queries, seed=0)
    assert a == per_query_demos(pool, SPEC, 4, queries, seed=0)
    # a query's draw depends on its uid only, not on which other queries are evaluated
    assert per_query_demos(pool, SPEC, 4, queries[7:9][::-1], seed=0) == [a[8], a[7]]
    assert a != per_query_demos(pool, SPEC, 4, queries, seed=1)
    other = replace(SPEC, name="other")  # the demonstration task is part of the seed
    assert a != per_query_demos(pool, other, 4, queries, seed=0)
    uids = {e.uid for e in pool}
    for d in a:
        assert len({e.uid for e in d}) == 4 and {e.uid for e in d} <= uids  # no repeats
    assert len({tuple(e.uid for e in d) for d in a}) == 30
    assert any(sum(int(e.label) for e in d) != 2 for d in a)  # random, not balanced
    for d in per_query_demos(pool, SPEC, 4, queries, seed=0, balanced=True):
        assert sorted(int(e.label) for e in d) == [0, 0, 1, 1]
    assert per_query_demos(pool, SPEC, 0, queries[:2], seed=0) == [[], []]
    with pytest.raises(IA2Error, match="fewer than k"):
        per_query_demos(pool[:3], SPEC, 4, queries, seed=0)


def test_icl_k_is_n_minus_1_capped_unless_given():
    assert icl_k_for(EvalConfig(), 8).icl_k == 7
    assert icl_k_for(EvalConfig(), 8, max_demos=4).icl_k == 4
    assert icl_k_for(EvalConfig(), 4, max_demos=16).icl_k == 3
    assert icl_k_for(EvalConfig(icl_k=2), 8).icl_k == 2
    assert icl_k_for(EvalConfig(), None).icl_k is None
    with pytest.raises(IA2Error, match="icl_demos"):
        EvalConfig(icl_demos="per_set")
    with pytest.raises(IA2Error, match="icl_k"):
        EvalConfig(icl_k=-1)


def test_shared_mode_metrics_are_the_mean_over_demo_sets():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    queries, pool = _examples(6), _examples(20, start=100)
    cfg = EvalConfig(icl_demos="shared", icl_k=2, icl_sets=3, batch_size=4)
    out = evaluate_setting(model, tok, SPEC, queries, "icl", cfg, demo_pool=pool)
    accs = [m["label_set_accuracy"] for m in out["per_set"]]
    assert len(accs) == 3
    assert out["metrics"]["label_set_accuracy"] == pytest.approx(sum(accs) / 3)
    demos = out["definitions"]["demos"]
    assert demos["mode"] == "shared" and demos["k"] == 2 and demos["sets"] == 3
    assert demos["uids"] == [[e.uid for e in s] for s in demo_sets(pool, SPEC, 2, 3, 0)]
    zero = evaluate_setting(model, tok, SPEC, queries, "zero_shot", cfg)
    assert zero["definitions"]["demos"] is None and len(zero["per_set"]) == 1
    with pytest.raises(IA2Error, match="icl_k is unset"):
        evaluate_setting(model, tok, SPEC, queries, "icl", EvalConfig(), demo_pool=pool)


def test_per_query_mode_scores_each_query_with_its_own_demos():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    queries, pool = _examples(6), _examples(20, start=100)
    cfg = EvalConfig(icl_k=3, icl_sets=5, batch_size=4, n_bins=2)  # icl_sets: ignored
    out = evaluate_setting(model, tok, SPEC, queries, "icl", cfg, demo_pool=pool, seed=2)
    assert len(out["per_set"]) == 1 and "accuracy_std" not in out["metrics"]
    draws = per_query_demos(pool, SPEC, 3, queries, seed=2)
    with torch.no_grad():  # reference: each full prompt alone, no batching or cache
        logits = torch.stack([model(torch.tensor([encode_prompt(tok, SPEC, q, d).ids])).logits[0, -1]
                              for q, d in zip(queries, draws)])
    ref = score_classification(logits, label_token_ids(tok, SPEC), [q.label for q in queries],
                               n_bins=2)
    for key in ("accuracy", "label_set_accuracy", "ece", "brier", "nll"):
        assert out["metrics"][key] == pytest.approx(ref.metrics[key], abs=1e-5)
    assert [r["demos"] for r in out["records"]] == [[e.uid for e in d] for d in draws]
    demos = out["definitions"]["demos"]
    assert (demos["mode"], demos["k"], demos["sets"], demos["balanced"]) == ("per_query", 3, None, False)
    assert demos["uids_sha256"] != evaluate_setting(model, tok, SPEC, queries, "icl", cfg, pool,
                                                    seed=3)["definitions"]["demos"]["uids_sha256"]


def test_store_key_holds_the_demo_mode_and_k(tmp_path):
    from ia2.store import ResultsStore

    model, tok = tiny_model("llama"), tiny_tokenizer()
    queries, pool = _examples(3), _examples(12, start=100)
    ident = dict(model="tiny", adapter=None, method="icl", task="toy", n=4, seed=0)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        rows = [evaluate_and_store(store, model, tok, SPEC, queries, "icl", cfg, ident, pool)
                for cfg in (EvalConfig(icl_k=2), EvalConfig(icl_k=3),
                            EvalConfig(icl_k=2, icl_demos="shared", icl_sets=2))]
        assert len({r["key"] for r in rows}) == 3 and len(store.rows()) == 3
        assert [r["definitions"]["demos"]["mode"] for r in rows] == ["per_query"] * 2 + ["shared"]
        assert [r["definitions"]["demos"]["k"] for r in rows] == [2, 3, 2]
        # per-query rows do not depend on icl_sets: the stored row is found again
        again = evaluate_and_store(store, model, tok, SPEC, queries, "icl",
                                   EvalConfig(icl_k=2, icl_sets=7), ident, pool)
        assert again["key"] == rows[0]["key"] and len(store.rows()) == 3
        with pytest.raises(IA2Error, match="icl_k is unset"):
            evaluate_and_store(store, model, tok, SPEC, queries, "icl", EvalConfig(), ident, pool)
