"""A deliberately naive teacher for reference: batch 1, no KV cache, the whole sequence re-run for
every new token, argmax each step, a plain forward hook reading the site at the last position."""

import torch

from ia2.teacher.sites import activation_sites


@torch.no_grad()
def naive_teacher(model, tokenizer, prompt, max_new_tokens, site="attn", layers=None, eos=(),
                  stop=(), allowed_first=None, topk=5):
    sites = activation_sites(model, site, layers)
    seen = {}
    handles = [m.register_forward_hook(lambda mod, a, out, k=k: seen.__setitem__(
        k, (out[0] if isinstance(out, tuple) else out)[0, -1].clone())) for k, m in enumerate(sites)]
    ids, response, acts, top_ids, top_lp = list(prompt), [], [], [], []
    try:
        for step in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False,
                           logits_to_keep=1).logits[0, -1].float()
            acts.append(torch.stack([seen[k] for k in range(len(sites))]))
            logp = torch.log_softmax(logits, -1)
            top = logp.topk(topk)
            top_ids.append(top.indices)
            top_lp.append(top.values)
            if step == 0 and allowed_first:
                tok = allowed_first[int(torch.argmax(logits[allowed_first]))]
            else:
                tok = int(torch.argmax(logits))
            response.append(tok)
            ids.append(tok)
            if tok in eos or any(s in tokenizer.decode(response) for s in stop):
                break
    finally:
        for h in handles:
            h.remove()
    return (torch.tensor(response), torch.stack(acts, dim=1), torch.stack(top_ids),
            torch.stack(top_lp))
