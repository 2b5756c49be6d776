"""The batched, KV-cached teacher against the naive reference (tests/teacher/teacher_naive.py)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ia2.errors import IA2Error
from ia2.teacher.collect import TeacherConfig, response_length, teach
from ia2.testing import tiny_model, tiny_tokenizer

from teacher_naive import naive_teacher

TEXTS = ["The movie was a delight from start to finish, honestly.",
         "Dull.",
         "An ambitious, sprawling, occasionally brilliant mess of a film about nothing much."]


def _prompts(tok, texts=TEXTS):
    return [tok(t)["input_ids"] for t in texts]  # <bos> + bytes: 6 to 84 tokens


def _assert_close(got, ref):
    assert got.shape == ref.shape
    assert (got.float() - ref).abs().max() <= 1e-4 * ref.abs().max()


def _model(arch):
    # Gemma 3: six layers give both sliding (window 16) and full attention; prompts exceed 16.
    return tiny_model(arch, layers=6 if arch == "gemma3_text" else 2)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma3_text"])
@pytest.mark.parametrize("site", ["attn", "residual"])
def test_matches_naive_reference(arch, site):
    model, tok = _model(arch), tiny_tokenizer()
    prompts = _prompts(tok)
    cfg = TeacherConfig(site=site, max_new_tokens=12, stop=(), topk=5, dtype="fp32", batch_size=3)
    got = teach(model, tok, prompts, cfg, eos=[])
    for p, sig in zip(prompts, got):
        ids, acts, top_ids, top_lp = naive_teacher(model, tok, p, 12, site=site)
        assert sig.response_ids.tolist() == ids.tolist() and sig.length == 12
        assert sig.activations.dtype == torch.float32
        _assert_close(sig.activations, acts)  # [L, T, H]
        assert sig.topk_ids.tolist() == top_ids.tolist()
        torch.testing.assert_close(sig.topk_logprobs, top_lp, rtol=0, atol=1e-4)


def _naive_full(model, tok, prompt, steps, **kw):
    """The naive teacher's whole log_softmax per step: its top-k over all V, scattered back."""
    ids, acts, top_ids, top_lp = naive_teacher(model, tok, prompt, steps, topk=len(tok), **kw)
    return ids, acts, torch.empty_like(top_lp).scatter_(-1, top_ids, top_lp)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_full_distribution_matches_naive_log_softmax(arch):
    model, tok = _model(arch), tiny_tokenizer()
    prompts = _prompts(tok)
    free = teach(model, tok, prompts, TeacherConfig(max_new_tokens=8, stop=(), topk=0), eos=[])
    eos_tok = int(free[0].response_ids[2])  # row 0 ends early: rows of different lengths
    cfg = TeacherConfig(max_new_tokens=8, stop=(), topk=0, full_distribution=True, dtype="fp32",
                        batch_size=3)
    got = teach(model, tok, prompts, cfg, eos=[eos_tok])
    lengths = []
    for p, sig in zip(prompts, got):
        ids, _, logp = _naive_full(model, tok, p, 8, eos=[eos_tok])
        assert sig.response_ids.tolist() == ids.tolist() and sig.topk_ids is None
        assert sig.logprobs.dtype == torch.float32 and sig.logprobs.shape == (len(ids), len(tok))
        torch.testing.assert_close(sig.logprobs, logp, rtol=0, atol=1e-4)
        lengths.append(sig.length)
    assert lengths[0] <= 3 and max(lengths) == 8
    # fp16 storage: the same numbers rounded, top-k alongside unchanged
    half = teach(model, tok, prompts[1:2], TeacherConfig(**{**cfg.__dict__, "dtype": "fp16",
                                                            "topk": 5}), eos=[eos_tok])[0]
    ref = got[1]
    assert half.logprobs.dtype == torch.float16
    torch.testing.assert_close(half.logprobs.float(), ref.logprobs, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(half.topk_logprobs, ref.logprobs.topk(5).values, rtol=0, atol=1e-4)
    # off by default: nothing of size V is kept
    assert all(s.logprobs is None for s in free)


def test_full_distribution_is_kept_only_for_rows_still_generating(monkeypatch):
    """A finished row's later steps are padding: they must never be stored (memory)."""
    model, tok = _model("llama"), tiny_tokenizer()
    prompts = _prompts(tok)
    free = teach(model, tok, prompts, TeacherConfig(max_new_tokens=8, stop=(), topk=0), eos=[])
    eos_tok = int(free[0].response_ids[1])
    kept = []
    real_stack = torch.stack

    def spy(tensors, *a, **k):
        if tensors and tensors[0].dim() == 1 and tensors[0].shape[0] == len(tok):
            kept.append(len(tensors))
        return real_stack(tensors, *a, **k)

    monkeypatch.setattr(torch, "stack", spy)
    cfg = TeacherConfig(max_new_tokens=8, stop=(), topk=0, full_distribution=True, batch_size=3)
    got = teach(model, tok, prompts, cfg, eos=[eos_tok])
    assert sorted(kept) == sorted(s.length for s in got) == [2, 8, 8]


def test_selected_layers_and_mlp_site():
    model, tok = _model("qwen2"), tiny_tokenizer()
    p = _prompts(tok)[:1]
    cfg = TeacherConfig(site="mlp", layers=(1,), max_new_tokens=4, stop=(), dtype="fp32")
    sig = teach(model, tok, p, cfg, eos=[])[0]
    ref = naive_teacher(model, tok, p[0], 4, site="mlp", layers=[1])
    assert sig.activations.shape == (1, 4, 32)
    _assert_close(sig.activations, ref[1])


def test_eos_and_stop_strings_cut_after_the_terminator():
    model, tok = _model("llama"), tiny_tokenizer()
    prompts = _prompts(tok)
    free = teach(model, tok, prompts, TeacherConfig(max_new_tokens=12, stop=(), topk=0), eos=[])
    # Terminators taken from what the model says: row 0's 4th token as EOS, row 1's 6th as a stop.
    eos_tok = int(free[0].response_ids[3])
    stop = tok.decode(free[1].response_ids[5:6])
    cfg = TeacherConfig(max_new_tokens=12, stop=(stop,), topk=0, dtype="fp32")
    got = teach(model, tok, prompts, cfg, eos=[eos_tok])
    for p, sig in zip(prompts, got):
        ids, acts, _, _ = naive_teacher(model, tok, p, 12, eos=[eos_tok], stop=(stop,))
        assert sig.response_ids.tolist() == ids.tolist()
        _assert_close(sig.activations, acts)
    assert got[0].length <= 4 and got[1].length <= 6
    last = got[0].response_ids[-1].item()
    assert last == eos_tok or stop in tok.decode(got[0].response_ids)


def test_response_length_rule():
    tok = tiny_tokenizer()
    ids = tok("ab\n\ncd", add_special_tokens=False)["input_ids"]
    assert response_length(ids, tok, [], ("\n\n",)) == 4  # 'a','b','\n','\n' kept, cut after
    assert response_length(ids, tok, [ids[1]], ("\n\n",)) == 2
    assert response_length(ids, tok, [], ()) == len(ids)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_batching_and_padding_do_not_change_results(arch):
    model, tok = _model(arch), tiny_tokenizer()
    prompts = _prompts(tok) + _prompts(tok, ["x" * 40, "Another one."])
    cfg = TeacherConfig(max_new_tokens=6, stop=(), topk=5, dtype="fp32", batch_size=5)
    batched = teach(model, tok, prompts, cfg, eos=[])
    tok.padding_side = "right"  # the tokenizer's padding side is never used: prompts are id lists
    single = teach(model, tok, prompts, TeacherConfig(**{**cfg.__dict__, "batch_size": 1}), eos=[])
    for b, s in zip(batched, single):
        assert b.response_ids.tolist() == s.response_ids.tolist()
        _assert_close(b.activations, s.activations)
        torch.testing.assert_close(b.topk_logprobs, s.topk_logprobs, rtol=0, atol=1e-5)


def test_constrain_first_token_to_labels():
    model, tok = _model("llama"), tiny_tokenizer()
    prompts = _prompts(tok)
    free = teach(model, tok, prompts, TeacherConfig(max_new_tokens=1, stop=(), topk=3), eos=[])
    # Labels chosen to exclude every free answer, so the constraint must change the output.
    labels = [t for t in range(100, 110) if t not in {int(s.response_ids[0]) for s in free}][:2]
    cfg = TeacherConfig(max_new_tokens=1, stop=(), topk=3, constrain_to_labels=True, dtype="fp32")
    got = teach(model, tok, prompts, cfg, label_ids=labels, eos=[])
    for p, f, sig in zip(prompts, free, got):
        ids, acts, top_ids, _ = naive_teacher(model, tok, p, 1, allowed_first=labels, topk=3)
        assert sig.response_ids.tolist() == ids.tolist() and ids[0] in labels
        _assert_close(sig.activations, acts)
        assert sig.topk_ids.tolist() == f.topk_ids.tolist()  # the raw distribution is kept
    with pytest.raises(IA2Error, match="label token"):
        teach(model, tok, prompts, cfg)


def test_storage_dtype_and_peft_wrapped_teacher():
    model, tok = _model("llama"), tiny_tokenizer()
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["o_proj"], init_lora_weights=False))
    peft.train()  # the teacher runs in eval mode and then restores the caller's mode
    prompts = _prompts(tok)[:2]
    for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        cfg = TeacherConfig(max_new_tokens=3, stop=(), dtype=dtype)
        sig = teach(peft, tok, prompts, cfg, eos=[])[1]
        ids, acts, _, _ = naive_teacher(peft.eval(), tok, prompts[1], 3)
        peft.train()
        assert sig.activations.dtype == torch_dtype and sig.response_ids.tolist() == ids.tolist()
        torch.testing.assert_close(sig.activations, acts.to(torch_dtype))
    assert peft.training is True


def test_bad_input_is_an_error():
    model, tok = _model("llama"), tiny_tokenizer()
    with pytest.raises(IA2Error, match="empty prompt"):
        teach(model, tok, [[]], TeacherConfig(max_new_tokens=1, stop=()))
    with pytest.raises(IA2Error, match="for_task"):
        teach(model, tok, [[1, 5]], TeacherConfig())
    with pytest.raises(IA2Error, match="dtype"):
        TeacherConfig(dtype="int8")
    with pytest.raises(IA2Error, match="site"):
        TeacherConfig(site="mlp_out")
