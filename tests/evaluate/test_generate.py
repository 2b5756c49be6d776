import pytest
import torch

from ia2.errors import IA2Error
from ia2.evaluate.generate import evaluate_generation, greedy_generate, score_generation
from ia2.tasks.prompts import encode_prompt
from ia2.tasks.spec import Example, Source, TaskSpec, Template
from ia2.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _prompts(tok):
    texts = ["Q: 2+2?\nA:", "Question: how many legs does a spider have?\nA:", "x", "Hi there"]
    return [tok(t)["input_ids"] for t in texts]


def _alone(model, prompt, n):
    """Reference: one prompt, no padding, plain greedy loop without a cache."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_batched_greedy_matches_each_prompt_alone(arch, tok):
    model = tiny_model(arch, seed=1)
    model.generation_config.eos_token_id = None  # let every row run to the length limit
    prompts = _prompts(tok)
    gens = greedy_generate(model, tok, prompts, max_new_tokens=12, stop=(), batch_size=3)
    for p, g in zip(prompts, gens):
        assert g.ids == _alone(model, p, 12)
        assert g.finish == "length"
        assert g.text == tok.decode(g.ids, skip_special_tokens=True)


def test_stop_string_cuts_text_and_ids(tok):
    model = tiny_model("llama", seed=2)
    model.generation_config.eos_token_id = None
    prompt = _prompts(tok)[1]
    free = greedy_generate(model, tok, [prompt], 16, stop=())[0]
    stop = free.text[5:7]  # a string we know the model produces
    cut = free.text.find(stop)
    g = greedy_generate(model, tok, [prompt, prompt], 16, stop=(stop, "never seen"))
    assert g[0] == g[1]
    g = g[0]
    assert g.finish == "stop"
    assert g.text == free.text[:cut]
    assert stop in tok.decode(g.ids) and stop not in tok.decode(g.ids[:-1])
    assert g.ids == free.ids[: len(g.ids)]


def test_eos_ends_a_row(tok):
    model = tiny_model("llama", seed=2)
    model.generation_config.eos_token_id = None
    prompt = _prompts(tok)[0]
    free = greedy_generate(model, tok, [prompt], 10, stop=())[0]
    model.generation_config.eos_token_id = free.ids[4]
    first = free.ids.index(free.ids[4])
    g = greedy_generate(model, tok, [prompt, _prompts(tok)[2]], 10, stop=())[0]
    assert g.finish == "eos"
    assert g.ids == free.ids[: first + 1]


def test_bad_arguments(tok):
    model = tiny_model("llama")
    with pytest.raises(IA2Error, match="max_new_tokens"):
        greedy_generate(model, tok, [[1, 5]], 0)
    with pytest.raises(IA2Error, match="at least one token"):
        greedy_generate(model, tok, [[]], 3)


def test_score_generation():
    s = score_generation("gsm8k", ["so #### 12.0", "it is 7", "nothing"], ["12", "8", "3"],
                         ["a", "b", "c"])
    assert [r["parsed"] for r in s.records] == ["12", "7", None]
    assert [r["correct"] for r in s.records] == [True, False, False]
    assert s.metrics["exact_match"] == pytest.approx(1 / 3)
    assert s.metrics["parsed_rate"] == pytest.approx(2 / 3)
    with pytest.raises(IA2Error, match="gold"):
        score_generation("gsm8k", ["1"], [])
    with pytest.raises(IA2Error, match="unknown answer parser"):
        score_generation("nope", ["1"], ["1"])


def test_evaluate_generation_uses_task_limits(tok):
    spec = TaskSpec(name="arith", kind="generation", description="toy", source=Source("none"),
                    templates={"natural": Template(query="Q: {question}\nA:")},
                    parser="gsm8k", max_new_tokens=6, stop=("\n\n",))
    queries = [Example({"question": f"{i}+1?"}, str(i + 1), f"q{i}", f"#### {i + 1}")
               for i in range(3)]
    demos = [Example({"question": "1+1?"}, "2", "d0", "#### 2")]
    model = tiny_model("qwen2")
    s = evaluate_generation(model, tok, spec, queries, demos, batch_size=2)
    prompts = [encode_prompt(tok, spec, q, demos).ids for q in queries]
    direct = greedy_generate(model, tok, prompts, 6, ("\n\n",))
    assert [r["text"] for r in s.records] == [g.text for g in direct]
    assert all(r["n_tokens"] <= 6 for r in s.records)
    assert s.metrics["n"] == 3 and s.metrics["n_demos"] == 1
    assert s.definitions["max_new_tokens"] == 6
    cls = TaskSpec(name="c", kind="classification", description="", source=Source("none"),
                   templates=spec.templates, labels=("a", "b"))
    with pytest.raises(IA2Error, match="not a generation task"):
        evaluate_generation(model, tok, cls, queries)


def test_evaluate_generation_with_demos_per_query(tok):
    spec = TaskSpec(name="arith", kind="generation", description="toy", source=Source("none"),
                    templates={"natural": Template(query="Q: {question}\nA:")},
                    parser="gsm8k", max_new_tokens=5, stop=("\n\n",))
    queries = [Example({"question": f"{i}+2?"}, str(i + 2), f"q{i}") for i in range(4)]
    per_query = [[Example({"question": f"{j}+{i}?"}, str(i + j), f"d{i}{j}") for j in range(i + 1)]
                 for i in range(4)]
    model = tiny_model("llama", seed=4)
    s = evaluate_generation(model, tok, spec, queries, per_query, batch_size=3)
    prompts = [encode_prompt(tok, spec, q, d).ids for q, d in zip(queries, per_query)]
    direct = [greedy_generate(model, tok, [p], 5, ("\n\n",))[0] for p in prompts]  # one at a time
    assert [r["text"] for r in s.records] == [g.text for g in direct]
    assert s.metrics["n_demos"] == 1  # the fewest any query had
    shared = evaluate_generation(model, tok, spec, queries, per_query[3], batch_size=3)
    assert [r["text"] for r in shared.records] != [r["text"] for r in s.records]
