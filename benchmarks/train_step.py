"""Optimizer-step cost of IA2 relative to SFT, on the same batches and the same LoRA adapter.

IA2 reads the attention outputs with forward hooks during the one forward pass and adds an MSE
over [L, T, H]; SFT computes the vocabulary projection and cross-entropy instead. Steps of the two
methods are interleaved so that load from other processes hits both alike.

    python benchmarks/train_step.py            # smollm2-135m
    python benchmarks/train_step.py --smoke    # tiny random model, seconds

Last line: `train ia2_over_sft=<ratio>` (target <= 1.15).
"""

from __future__ import annotations

import argparse
import time

import torch

from ia2.methods.adapters import AdapterConfig, attach
from ia2.methods.trainer import BoundObjective, Objective
from ia2.teacher.capture import Capture
from ia2.teacher.sites import activation_sites


def make_batch(model, vocab: int, batch: int, query_len: int, response_len: int, seed: int) -> dict:
    """Random queries of varied length (so there is padding) + responses, and teacher activations
    of the right shape (the base model's own; their values do not matter for timing)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [query_len - 4 * i for i in range(batch)]
    width = max(lengths) + response_len - 1
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    positions = torch.zeros(batch, response_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, : n + response_len - 1] = torch.randint(10, vocab, (n + response_len - 1,), generator=g)
        mask[b, : n + response_len - 1] = 1
        positions[b] = torch.arange(n - 1, n - 1 + response_len)
    targets = torch.gather(torch.cat([ids, ids[:, -1:]], 1), 1, positions + 1)
    with torch.no_grad(), Capture(activation_sites(model, "attn"), positions=positions) as cap:
        model(input_ids=ids, attention_mask=mask)
    teacher = torch.stack(cap.outputs, 1) + 0.01  # [B, L, T, H]
    return dict(input_ids=ids, attention_mask=mask, positions=positions, target_ids=targets,
                target_mask=torch.ones(batch, response_len, dtype=torch.bool),
                teacher_activations=teacher)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--smoke", action="store_true", help="tiny random model instead")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per method")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--query-len", type=int, default=48)
    ap.add_argument("--response-len", type=int, default=2)
    ap.add_argument("--full-logits", action="store_true",
                    help="ia2 computes all logits too (isolates the cost of capture + MSE)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        from ia2.testing import tiny_model

        base, name = tiny_model("llama", hidden=64, layers=4), "tiny-llama"
    else:
        from ia2.models import load_model

        base, _ = load_model(args.model)
        name = args.model
    vocab = base.config.vocab_size
    torch.manual_seed(0)
    model = attach(base, AdapterConfig())
    model.train()
    batches = [make_batch(model, vocab, args.batch, args.query_len, args.response_len, s) for s in range(4)]
    objectives = {m: BoundObjective(model, Objective(m)) for m in ("sft", "ia2")}
    if args.full_logits:
        objectives["ia2"].trim_logits = False
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0)

    def step(method: str, batch: dict) -> float:
        start = time.perf_counter()
        loss = objectives[method](model, batch)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for i in range(2):  # warm-up
        for m in objectives:
            step(m, batches[i % len(batches)])
    spent = {m: [] for m in objectives}
    for i in range(args.steps):
        for m in (("sft", "ia2") if i % 2 == 0 else ("ia2", "sft")):
            spent[m].append(step(m, batches[i % len(batches)]))
    # the median resists spikes from other processes on a shared machine
    med = {m: sorted(v)[len(v) // 2] for m, v in spent.items()}
    for m, v in spent.items():
        print(f"{name} {m}: median {1000 * med[m]:.1f} ms/step, mean {1000 * sum(v) / len(v):.1f} ms "
              f"({len(v)} steps, batch {args.batch}, query {args.query_len}, response {args.response_len})")
    print(f"train ia2_over_sft={med['ia2'] / med['sft']:.3f}")


if __name__ == "__main__":
    main()
