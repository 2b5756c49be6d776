"""The teacher on real pretrained models against the naive reference (marked `real`)."""

import dataclasses

import pytest
import torch
from teacher_naive import naive_teacher

from ia2.teacher.collect import TeacherConfig, eos_ids, episode_prompts, teach

pytestmark = pytest.mark.real


@pytest.mark.parametrize("name, n, min_len", [
    ("smollm2-135m", 8, 150),
    ("gemma-3-270m", 40, 513),  # prompts longer than Gemma 3's sliding window of 512
])
def test_real_model_matches_naive(name, n, min_len):
    from ia2.episodes import make_episode
    from ia2.models import load_model
    from ia2.tasks.registry import get_task

    model, tok = load_model(name)
    spec = dataclasses.replace(get_task("sst2"), max_new_tokens=6)
    episode = make_episode(spec, n, seed=0, eval_size=1)
    cfg = TeacherConfig(dtype="fp32", batch_size=3, topk=5).for_task(spec)
    items = episode_prompts(model, tok, spec, episode, cfg)[:3]
    prompts = [it["ids"] for it in items]
    assert min(len(p) for p in prompts) >= min_len
    got = teach(model, tok, prompts, cfg)
    for p, sig in zip(prompts, got):
        ids, acts, top_ids, top_lp = naive_teacher(model, tok, p, 6, eos=eos_ids(model, tok),
                                                   stop=tuple(spec.stop))
        assert sig.response_ids.tolist() == ids.tolist()
        assert (sig.activations - acts).abs().max() <= 1e-4 * acts.abs().max()
        assert sig.topk_ids[:, 0].tolist() == top_ids[:, 0].tolist()
        torch.testing.assert_close(sig.topk_logprobs, top_lp, rtol=0, atol=1e-3)
