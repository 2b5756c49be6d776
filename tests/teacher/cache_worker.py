"""A separate process filling the teacher cache (for the concurrency test in test_cache.py)."""

import time


def fill(root, first, holding, ready, out):
    """Teach the test episode into `root`; put (first, computed, key) on `out`. The `first`
    process signals `holding` from inside the computation (it holds the entry), then waits for
    the other one to set `ready` just before it asks for the same entry."""
    import torch
    from test_cache import CFG, SPEC, _episode

    import ia2.teacher.collect as collect
    from ia2.teacher.collect import teach_episode
    from ia2.testing import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    real = collect.teach

    def slow(*a, **k):
        holding.set()
        ready.wait(300)
        time.sleep(3.0)  # the other process is asking for the entry by now
        return real(*a, **k)

    if first:
        collect.teach = slow
    model, tok = tiny_model("llama"), tiny_tokenizer()
    if not first:
        ready.set()
    ts = teach_episode(model, tok, SPEC, _episode(), CFG, cache_root=root, progress=False)
    out.put((first, ts.computed, ts.key))
