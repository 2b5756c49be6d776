"""Activation similarity (ia2.evaluate.analysis) against naive references: full forwards, no KV
cache, no batching, greedy decoding written out by hand."""

import pytest
import torch

from ia2.config import ASIM_MODES, AnalysisConfig
from ia2.errors import IA2Error
from ia2.evaluate.analysis import MODES, activation_similarity
from ia2.tasks.prompts import encode_prompt
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.teacher.collect import TeacherConfig
from ia2.teacher.sites import activation_sites
from ia2.testing import tiny_model, tiny_tokenizer

CLS = TaskSpec(name="toy", kind="classification", description="toy", source=Source("none"),
               templates={"natural": Template("Review: {text}\nSentiment:")},
               labels=("negative", "positive"),
               verbalizers={"natural": ("negative", "positive")})
GEN = TaskSpec(name="arith", kind="generation", description="toy", source=Source("none"),
               templates={"natural": Template(query="Q: {text}\nA:")}, parser="gsm8k",
               max_new_tokens=6, stop=())


def _examples(n, start=0):
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    return [Example({"text": f"{words[i % 8]} film {i}"}, i % 2, f"toy:{i}", f"{i}")
            for i in range(start, start + n)]


def _lora(seed=0):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_model("llama", seed=seed),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"],
                                                init_lora_weights=False))
    return model.eval()


def _greedy(model, ids, steps, eos=(), force=None):
    """Decode one token at a time with a full forward each step; return the attention outputs at
    the predicting positions ([L, T, H]) and the tokens. `force`: feed these tokens instead."""
    sites = activation_sites(model, "attn")
    ids, acts, toks = list(ids), [], []
    for t in range(len(force) if force is not None else steps):
        grabbed = {}
        hooks = [m.register_forward_hook(lambda m, a, o, k=k: grabbed.__setitem__(k, o[0]))
                 for k, m in enumerate(sites)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        for h in hooks:
            h.remove()
        acts.append(torch.stack([grabbed[k][0, -1] for k in range(len(sites))]))
        tok = int(logits.argmax()) if force is None else force[t]
        toks.append(tok)
        ids.append(tok)
        if tok in eos:
            break
    return torch.stack(acts, dim=1), toks


def _naive(model, tok, spec, queries, demos, mode, eos=()):
    """Base model with demonstrations vs. the (adapted) model without; cosine per layer over the
    common leading steps (generate) or over the base model's response (teacher_forced)."""
    sims, lengths = [], []
    for q, d in zip(queries, demos):
        with model.disable_adapter():
            a, resp = _greedy(model, encode_prompt(tok, spec, q, d).ids, spec.max_new_tokens, eos)
        alone = encode_prompt(tok, spec, q, []).ids
        if mode == "generate":
            b, own = _greedy(model, alone, spec.max_new_tokens, eos)
        else:
            b, own = _greedy(model, alone, None, force=resp)
        t = min(a.shape[1], b.shape[1])
        lengths.append((len(resp), len(own)))
        sims.append(torch.nn.functional.cosine_similarity(a[:, :t], b[:, :t], dim=-1).mean(1))
    return torch.stack(sims).mean(0), lengths


def test_single_token_answers_make_both_modes_coincide():
    model, tok = _lora(), tiny_tokenizer()
    queries = _examples(4)
    demos = [_examples(2, 50 + 3 * i) for i in range(4)]  # per query
    cfg = TeacherConfig(batch_size=3, constrain_to_labels=True)
    gen = activation_similarity(model, tok, CLS, queries, demos, cfg, mode="generate")
    forced = activation_similarity(model, tok, CLS, queries, demos, cfg, mode="teacher_forced")
    ref, _ = _naive(model, tok, CLS, queries, demos, "generate")
    torch.testing.assert_close(torch.tensor(gen), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(forced), ref, atol=1e-4, rtol=0)
    assert max(gen) < 0.9999  # demonstrations and the adapter do change the activations


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_plain_model_without_demonstrations_is_its_own_teacher(arch):
    model, tok = tiny_model(arch), tiny_tokenizer()
    queries = _examples(3)
    for mode in MODES:
        same = activation_similarity(model, tok, GEN, queries, [], TeacherConfig(batch_size=2), mode)
        assert same == pytest.approx([1.0] * len(same), abs=1e-5)
    got = activation_similarity(model, tok, CLS, queries, _examples(2, 50), TeacherConfig())
    assert max(got) < 0.9999


def test_generate_mode_matches_naive_multi_token_responses_of_different_lengths():
    model, tok = _lora(seed=1), tiny_tokenizer()
    queries = _examples(4)
    demos = [_examples(2, 60 + 2 * i) for i in range(4)]
    model.base_model.model.generation_config.eos_token_id = None
    # an EOS that one model produces early and the other does not: the responses then differ
    # in length and only the common leading steps are compared
    with model.disable_adapter():
        icl_resp = _greedy(model, encode_prompt(tok, GEN, queries[0], demos[0]).ids, 6)[1]
    own_resp = _greedy(model, encode_prompt(tok, GEN, queries[0], []).ids, 6)[1]
    stop = next(t for t in icl_resp[1:4] if t not in own_resp and t != tok.eos_token_id)
    eos = (stop, tok.eos_token_id)
    model.base_model.model.generation_config.eos_token_id = stop
    cfg = TeacherConfig(batch_size=3)
    got = activation_similarity(model, tok, GEN, queries, demos, cfg)  # generate: the default
    ref, lengths = _naive(model, tok, GEN, queries, demos, "generate", eos)
    assert any(a != b for a, b in lengths) and max(max(p) for p in lengths) > 1
    torch.testing.assert_close(torch.tensor(got), ref, atol=1e-4, rtol=0)
    forced = activation_similarity(model, tok, GEN, queries, demos, cfg, mode="teacher_forced")
    ref_forced, _ = _naive(model, tok, GEN, queries, demos, "teacher_forced", eos)
    torch.testing.assert_close(torch.tensor(forced), ref_forced, atol=1e-4, rtol=0)
    assert not torch.allclose(ref, ref_forced, atol=1e-3)  # the two modes measure different things


def test_modes_are_validated():
    assert ASIM_MODES == MODES
    with pytest.raises(IA2Error, match="asim_mode"):
        AnalysisConfig(asim_mode="forced")
    with pytest.raises(IA2Error, match="mode"):
        activation_similarity(tiny_model("llama"), tiny_tokenizer(), CLS, _examples(1), [],
                              mode="forced")
