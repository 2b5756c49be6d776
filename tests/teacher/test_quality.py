"""The teacher's accuracy on its training queries: scored responses, and teach_episode's record."""

import dataclasses

import torch

from ia2.tasks.registry import get_task
from ia2.tasks.spec import Example
from ia2.teacher.collect import TeacherConfig, teach_episode
from ia2.teacher.quality import response_correct, teacher_accuracy
from ia2.teacher.signals import TeacherSignals
from ia2.testing import tiny_model, tiny_tokenizer

from test_cache import SPEC, _episode  # the toy sentiment task: labels negative, positive


def _sig(ids):
    return TeacherSignals(torch.tensor(ids, dtype=torch.long), torch.zeros(1, len(ids), 4))


def test_classification_scores_the_first_token_against_the_gold_label():
    tok = tiny_tokenizer()
    # the template's answer is "{answer}": a label's first token is its word's first byte
    neg, pos = tok("negative", add_special_tokens=False)["input_ids"][0], \
        tok("positive", add_special_tokens=False)["input_ids"][0]
    ep = _episode(n=4)  # train labels 0, 1, 0, 1; dev labels 0, 1
    train = [_sig([pos, 2]), _sig([pos, 2]), _sig([neg, 2]), _sig([neg])]  # right: 2nd, 3rd
    dev = [_sig([neg, 2]), _sig([neg, 2])]  # right: 1st
    got = teacher_accuracy(tok, SPEC, ep, train, dev)
    assert got == {"train": {"correct": 2, "n": 4, "accuracy": 0.5},
                   "dev": {"correct": 1, "n": 2, "accuracy": 0.5}}
    # a token that starts no label (an unconstrained teacher's space, say) is wrong
    assert response_correct(tok, SPEC, [tok(" ", add_special_tokens=False)["input_ids"][0]],
                            ep.train[0], [neg, pos]) is False


def test_generation_parses_the_text_before_the_stop_string():
    tok, spec = tiny_tokenizer(), get_task("gsm8k")
    ids = tok("3 + 4 = 7\n#### 7\n\nQuestion: and twice that?\n#### 14",
              add_special_tokens=False)["input_ids"]
    assert response_correct(tok, spec, ids + [2], Example({}, "7", "g:0")) is True
    assert response_correct(tok, spec, ids, Example({}, "14", "g:1")) is False  # after the stop
    # the teacher's own stop strings, where its config overrides the task's
    late = tok("Let me think.\n\n#### 7", add_special_tokens=False)["input_ids"]
    assert response_correct(tok, spec, late, Example({}, "7", "g:3")) is False
    assert response_correct(tok, spec, late, Example({}, "7", "g:3"), stops=()) is True
    unparsable = tok("no idea", add_special_tokens=False)["input_ids"]
    assert response_correct(tok, spec, unparsable, Example({}, "7", "g:2")) is False


def test_teach_episode_records_how_often_its_responses_are_right(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    ep = _episode()
    cfg = TeacherConfig(batch_size=3, topk=0, constrain_to_labels=True)
    tset = teach_episode(model, tok, SPEC, ep, cfg, cache_root=tmp_path, progress=False)
    gold = [tok(w, add_special_tokens=False)["input_ids"][0] for w in ("negative", "positive")]
    total = 0
    for split, examples, signals in (("train", ep.train, tset.train), ("dev", ep.dev, tset.dev)):
        right = sum(int(s.response_ids[0]) == gold[ex.label] for ex, s in zip(examples, signals))
        assert tset.accuracy[split] == {"correct": right, "n": len(examples),
                                        "accuracy": right / len(examples)}
        total += right
    assert 0 < total < len(ep.train) + len(ep.dev)  # some right, some wrong: a real count


def test_an_uncountable_teacher_has_no_accuracy_and_no_error(tmp_path):
    # unconstrained, with label words sharing their first token: no label token stands for one
    shared = dataclasses.replace(SPEC, labels=("good", "great"))
    tset = teach_episode(tiny_model("llama"), tiny_tokenizer(), shared, _episode(),
                         TeacherConfig(batch_size=3, topk=0), cache_root=tmp_path, progress=False)
    assert tset.accuracy is None and len(tset.train) == 5
