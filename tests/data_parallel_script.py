"""Launched by test_data_parallel.py, alone or under torchrun: teacher signals for a toy episode
(through the cache) and three evaluations (ICL with per-query demonstrations, zero-shot, and a
generation task) into a results store, all in OUT.

Each rank writes rank<r>.pt: its teacher signals, its evaluation rows, and how many prompts
and queries this process itself computed."""

import os
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

import ia2.evaluate.runner as runner  # noqa: E402
import ia2.teacher.cache as cache_mod  # noqa: E402
import ia2.teacher.collect as collect  # noqa: E402
from ia2.episodes import Episode  # noqa: E402
from ia2.evaluate.runner import EvalConfig, evaluate_and_store  # noqa: E402
from ia2.store import ResultsStore  # noqa: E402
from ia2.tasks.spec import Example, Source, TaskSpec, Template  # noqa: E402
from ia2.teacher.collect import TeacherConfig, teach_episode  # noqa: E402
from ia2.testing import tiny_model, tiny_tokenizer  # noqa: E402

SPEC = TaskSpec(name="toy", kind="classification", description="toy", source=Source("sst2"),
                templates={"natural": Template("Review: {text}\nSentiment: ", "{answer}")},
                labels=("negative", "positive"), max_new_tokens=3)
GEN = TaskSpec(name="toygen", kind="generation", description="toy", source=Source("gsm8k"),
               templates={"natural": Template("Question: {question}\nAnswer:")},
               parser="gsm8k", max_new_tokens=4)
WORDS = ["good fun", "awful", "a bore", "lovely", "fine", "bad", "great", "meh", "dull", "warm",
         "cold", "superb", "weak", "charming", "tedious", "brilliant"]


def episode(n=6):
    ex = [Example({"text": w}, i % 2, f"toy:{i}") for i, w in enumerate(WORDS)]
    train, dev = tuple(ex[:n]), tuple(ex[n:n + 3])
    rot = lambda i: tuple((i + k) % n for k in range(1, n))  # noqa: E731
    return Episode("toy", n, 0, train, dev, tuple(ex[n + 3:]), (),
                   tuple(rot(i) for i in range(n)), tuple(rot(j) for j in range(len(dev))))


def main(out: str) -> None:
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    cache_mod.SHARD_SIZE = 4  # 9 items -> 3 shards: several rounds of splitting
    counts = {"prompts": 0, "queries": 0}
    real_teach, real_score = collect.teach, runner._score

    def counting_teach(model, tok, prompts, *a, **k):
        counts["prompts"] += len(prompts)
        return real_teach(model, tok, prompts, *a, **k)

    def counting_score(model, tok, spec, queries, *a, **k):
        counts["queries"] += len(queries)
        return real_score(model, tok, spec, queries, *a, **k)

    collect.teach, runner._score = counting_teach, counting_score
    model, tok = tiny_model("llama"), tiny_tokenizer()
    ep = episode()
    ts = teach_episode(model, tok, SPEC, ep, TeacherConfig(batch_size=2, topk=4, dtype="fp32"),
                       cache_root=out / "cache", progress=False)
    queries = [Example({"text": w + " again"}, i % 2, f"q:{i}") for i, w in enumerate(WORDS[:7])]
    gen_queries = [Example({"question": f"What is {i} plus {i}?"}, str(2 * i), f"g:{i}")
                   for i in range(5)]
    ident = dict(model="tiny", adapter=None, method="icl", task="toy", n=6, seed=0)
    config = EvalConfig(size=7, icl_k=3, batch_size=3)
    rows = []
    with ResultsStore(out / "results.sqlite") as store:
        rows.append(evaluate_and_store(store, model, tok, SPEC, queries, "icl", config, ident,
                                       ep.demo_pool, SPEC, 0))
        rows.append(evaluate_and_store(store, model, tok, SPEC, queries, "zero_shot", config,
                                       dict(ident, method="zero_shot", n=None, seed=None)))
        rows.append(evaluate_and_store(store, model, tok, GEN, gen_queries, "zero_shot", config,
                                       dict(ident, method="zero_shot", task="toygen", n=None,
                                            seed=None)))
    signals = [(s.response_ids, s.activations, s.topk_ids, s.topk_logprobs)
               for s in ts.train + ts.dev]
    torch.save({"signals": signals, "computed": ts.computed, "key": ts.key, "rows": rows,
                "counts": counts}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
