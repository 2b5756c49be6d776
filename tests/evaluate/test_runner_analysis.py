import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate.analysis import activation_similarity
from ia2.evaluate.runner import EvalConfig, demo_sets, evaluate_setting
from ia2.tasks.prompts import encode, encode_prompt, render_query, special_prefix
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.teacher.collect import TeacherConfig
from ia2.teacher.sites import activation_sites
from ia2.testing import tiny_model, tiny_tokenizer

SPEC = TaskSpec(name="toy", kind="classification", description="toy", source=Source("none"),
                templates={"natural": Template("Review: {text}\nSentiment:")},
                labels=("negative", "positive"),
                verbalizers={"natural": ("negative", "positive")})


def _examples(n, start=0):
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    return [Example({"text": f"{words[i % 8]} film {i}"}, i % 2, f"toy:{i}")
            for i in range(start, start + n)]


def test_demo_sets_are_balanced_seeded_and_distinct():
    pool = _examples(40)
    a = demo_sets(pool, SPEC, k=6, sets=3, seed=0)
    assert a == demo_sets(pool, SPEC, k=6, sets=3, seed=0)
    assert a != demo_sets(pool, SPEC, k=6, sets=3, seed=1)
    assert len({tuple(e.uid for e in s) for s in a}) == 3
    for s in a:
        assert sorted(int(e.label) for e in s) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(IA2Error, match="fewer than k"):
        demo_sets(pool[:3], SPEC, k=4, sets=1, seed=0)


def test_icl_metrics_are_the_mean_over_demo_sets():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    queries, pool = _examples(6), _examples(20, start=100)
    cfg = EvalConfig(icl_k=2, icl_sets=3, batch_size=4)
    out = evaluate_setting(model, tok, SPEC, queries, "icl", cfg, demo_pool=pool)
    accs = [m["label_set_accuracy"] for m in out["per_set"]]
    assert len(accs) == 3
    assert out["metrics"]["label_set_accuracy"] == pytest.approx(sum(accs) / 3)
    assert len(out["definitions"]["demo_sets"]) == 3
    zero = evaluate_setting(model, tok, SPEC, queries, "zero_shot", cfg)
    assert zero["definitions"]["demo_sets"] == [] and len(zero["per_set"]) == 1


def _naive_similarity(model, tok, spec, queries, demos):
    """Independent reference: full forwards without a KV cache, greedy one token."""
    sites = activation_sites(model, "attn")
    sims = []
    for q in queries:
        grabbed = {}
        hooks = [m.register_forward_hook(lambda m, a, o, k=k: grabbed.__setitem__(k, o[0]))
                 for k, m in enumerate(sites)]
        with torch.no_grad():
            p = encode_prompt(tok, spec, q, demos).ids
            logits = model(torch.tensor([p])).logits[0, -1]
            teacher = torch.stack([grabbed[k][0, -1] for k in range(len(sites))])
            qids = special_prefix(tok) + encode(tok, render_query(spec, q))
            model(torch.tensor([qids + [int(logits.argmax())]]))
            student = torch.stack([grabbed[k][0, len(qids) - 1] for k in range(len(sites))])
        for h in hooks:
            h.remove()
        sims.append(torch.nn.functional.cosine_similarity(student, teacher, dim=-1))
    return torch.stack(sims).mean(0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_activation_similarity_matches_naive_reference(arch):
    model, tok = tiny_model(arch), tiny_tokenizer()
    queries, demos = _examples(3), _examples(2, start=50)
    got = activation_similarity(model, tok, SPEC, queries, demos, TeacherConfig(batch_size=2))
    torch.testing.assert_close(torch.tensor(got), _naive_similarity(model, tok, SPEC, queries, demos),
                               atol=1e-4, rtol=0)
    assert max(got) < 0.9999  # demonstrations do change the activations
    # Without demonstrations the model is its own teacher: similarity 1 at every layer.
    same = activation_similarity(model, tok, SPEC, queries, [], TeacherConfig(batch_size=2))
    assert same == pytest.approx([1.0] * len(same), abs=1e-5)
