"""bf16 against fp32 on one device, in one process: speed and how far the numbers move.

(a) evaluation: 100 SST-2 validation queries scored with 4 shared demonstrations (ICL, the
    demonstration block's KV cache reused), label probabilities compared query by query;
(b) training: a few optimizer steps of SFT on a LoRA adapter through ia2's Trainer (bf16: the
    frozen base in bf16 under autocast, the adapter and the loss in fp32).
The two precisions alternate part by part, so load from other processes hits both alike.

    python benchmarks/precision.py            # gemma-3-270m on the CPU
    python benchmarks/precision.py --smoke    # tiny random model, seconds

Last line: `precision bf16_speedup=X max_prob_diff=Y` (X: fp32 seconds / bf16 seconds over both
parts; Y: the largest difference of a label probability).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import set_seed

from ia2.cli.common import add_runtime_options, runtime_from_args
from ia2.evaluate.icl import evaluate_classification
from ia2.methods.adapters import AdapterConfig, attach
from ia2.methods.data import Collator, ItemDataset, build_items
from ia2.methods.trainer import Objective, TrainConfig, train_stage
from ia2.tasks.registry import get_task, load_split


def _load(args, dtype: str):
    runtime = replace(runtime_from_args(args), dtype=dtype).resolve()
    if args.smoke:
        from ia2.testing import tiny_model, tiny_tokenizer

        model = tiny_model("llama").to(device=runtime.device, dtype=runtime.torch_dtype)
        model.ia2_runtime = runtime
        return model, tiny_tokenizer(), "paper"
    from ia2.models import load_model

    model, tok = load_model(args.model, runtime)
    return model, tok, "natural"


def _evaluate(model, tok, preset, queries, demos, batch):
    spec = get_task("sst2")
    start = time.perf_counter()
    scores = evaluate_classification(model, tok, spec, queries, demos, preset=preset,
                                     batch_size=batch)
    return time.perf_counter() - start, scores


def _train(model, tok, preset, train, dev, steps, out: Path):
    spec = get_task("sst2")
    data = [ItemDataset(build_items(tok, spec, ex, None, "ground_truth", preset=preset))
            for ex in (train, dev)]
    set_seed(0)
    adapted = attach(model, AdapterConfig())
    config = TrainConfig(lr=1e-3, epochs=1, eval_steps=steps, progress=False)
    start = time.perf_counter()
    result = train_stage(adapted, Objective("sft"), *data, Collator(tok.pad_token_id or 0),
                         config, out, resume=False)
    seconds = time.perf_counter() - start
    adapted.unload()  # the base model again, for the next part
    return seconds, result.train_curve[-1][1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--demos", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="training steps (batch 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, few queries")
    add_runtime_options(ap, batching=False)  # --device, --attn-implementation (--dtype: both)
    args = ap.parse_args(argv)
    if args.dtype:
        ap.error("--dtype: this benchmark runs fp32 and bf16 both")
    if args.smoke:
        args.queries, args.steps = min(args.queries, 16), min(args.steps, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = get_task("sst2")
    pool = load_split(spec, "eval")
    queries = pool[: args.queries]
    demos = random.Random(0).sample(pool[args.queries:], args.demos)
    train_pool = load_split(spec, "train")
    train = random.Random(1).sample(train_pool, 4 * args.steps + 4)
    train, dev = train[:-4], train[-4:]

    models = {d: _load(args, d) for d in ("fp32", "bf16")}
    print(f"model={'tiny-llama' if args.smoke else args.model} "
          f"runtime={models['bf16'][0].ia2_runtime.describe()} queries={len(queries)} "
          f"demos={args.demos} steps={args.steps} threads={torch.get_num_threads()}")
    seconds = {d: 0.0 for d in models}
    scores, losses = {}, {}
    for d, (model, tok, preset) in models.items():  # warm-up: kernels, allocator
        _evaluate(model, tok, preset, queries[:2], demos, args.batch_size)
    for d, (model, tok, preset) in models.items():
        t, scores[d] = _evaluate(model, tok, preset, queries, demos, args.batch_size)
        seconds[d] += t
        print(f"eval  {d}: {t:7.2f}s  accuracy={scores[d].metrics['accuracy']:.3f} "
              f"ece={scores[d].metrics['ece']:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        for d, (model, tok, preset) in models.items():
            t, losses[d] = _train(model, tok, preset, train, dev, args.steps, Path(tmp) / d)
            seconds[d] += t
            print(f"train {d}: {t:7.2f}s  last train loss={losses[d]:.4f}")
    diff = max(abs(a - b) for r, g in zip(scores["fp32"].records, scores["bf16"].records)
               for a, b in zip(r["label_probs"], g["label_probs"]))
    print(f"precision bf16_speedup={seconds['fp32'] / seconds['bf16']:.2f} max_prob_diff={diff:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
