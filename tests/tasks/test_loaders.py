"""Every built-in loader on the shared benchmark files, checked against a deliberately simple
re-reading of the same files (and the row counts the data README states)."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from ia2.tasks import get_task, load_split
from ia2.tasks.loaders import cut_words


def _tsv_lines(path):
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_sst2_matches_plain_split(shared_data):
    train, dev = load_split(get_task("sst2"), "train"), load_split(get_task("sst2"), "eval")
    assert (len(train), len(dev)) == (60614, 872)
    lines = _tsv_lines(shared_data / "sst2" / "train.tsv")[1:]
    for i in (0, 1, 12345, 60613):
        sentence, label = lines[i].rsplit("\t", 1)
        assert train[i].inputs == {"text": " ".join(sentence.split())}
        assert train[i].label == int(label)
        assert train[i].uid == f"sst2/train.tsv:{i + 2}"  # the header is line 1
        assert train[i].solution is None
    assert Counter(ex.label for ex in dev) == Counter(int(l[-1]) for l in
                                                      _tsv_lines(shared_data / "sst2" / "validation.tsv")[1:])


def test_sst2_min_words_filters_training_pool_only(shared_data):
    spec = get_task("sst2", min_words=8)
    train = load_split(spec, "train")
    assert 0 < len(train) < 60614
    assert all(len(ex.inputs["text"].split()) >= 8 for ex in train)
    assert len(load_split(spec, "eval")) == 872  # eval untouched
    assert get_task("sst2").min_words == 0  # the override did not leak into the registry


def test_finphrasebank_keeps_negative_and_positive(shared_data):
    spec = get_task("finphrasebank")
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    # Reference: the file's CR-separated lines as latin-1 text.
    lines = (shared_data / "finphrasebank" / "sentences_50agree.csv").read_bytes().decode("latin-1").split("\r")
    lines = [l for l in lines if l]
    assert len(lines) == 4846
    polar = {i + 1: l for i, l in enumerate(lines) if l.startswith(("negative,", "positive,"))}
    assert len(train) + len(ev) == len(polar) == 604 + 1363
    assert len(ev) == 600
    uids = [ex.uid for ex in train + ev]
    assert len(set(uids)) == len(uids)  # the carve is a partition
    for ex in train[:50] + ev[:50]:
        row = int(ex.uid.rsplit(":", 1)[1])
        word, sentence = polar[row].split(",", 1)
        assert ex.label == ("negative", "positive").index(word)
        assert ex.inputs["text"] == " ".join(sentence.strip('"').split())
    assert any(not ex.inputs["text"].isascii() for ex in train + ev)  # latin-1 decoded, not lost
    assert load_split(spec, "eval") == ev  # fixed carve


def test_poem_sentiment_is_288_polar_train_rows(shared_data):
    spec = get_task("poem_sentiment")
    ev = load_split(spec, "eval")
    assert len(ev) == 288
    raw = [l.split("\t") for l in _tsv_lines(shared_data / "poem_sentiment" / "train.tsv")]
    expect = Counter({0: sum(r[2] == "-1" for r in raw), 1: sum(r[2] == "1" for r in raw)})
    assert Counter(ex.label for ex in ev) == expect == Counter({0: 155, 1: 133})
    assert ev[0].inputs["text"] == raw[0][1] and ev[0].label == 1


def test_agnews_carves_train_and_eval(shared_data):
    spec = get_task("agnews")
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    assert (len(train), len(ev)) == (5600, 2000)
    assert not {e.uid for e in train} & {e.uid for e in ev}
    with open(shared_data / "agnews" / "test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7600
    by_line = {i + 2: r for i, r in enumerate(rows)}  # no multi-line records in this file
    for ex in train[:30] + ev[:30]:
        r = by_line[int(ex.uid.rsplit(":", 1)[1])]
        assert ex.label == int(r["label"]) - 1
        assert ex.inputs["text"] == " ".join((r["title"] + " " + r["description"]).split())


def test_bbcnews_maps_onto_agnews_labels_and_cuts_text(shared_data):
    spec = get_task("bbcnews")
    assert spec.labels == get_task("agnews").labels
    ev = load_split(spec, "eval")
    assert len(ev) == 2225
    raw = [json.loads(l) for l in (shared_data / "bbcnews" / "bbc.jsonl").read_text().splitlines()]
    cats = Counter(r["category"] for r in raw)
    assert Counter(ex.label for ex in ev) == {
        0: cats["entertainment"] + cats["politics"], 1: cats["sport"], 2: cats["business"],
        3: cats["tech"]}
    for ex, r in zip(ev, raw):
        full = " ".join(r["text"].split())
        t = ex.inputs["text"]
        assert len(t) <= 256 and full.startswith(t)
        assert len(full) == len(t) or full[len(t)] == " "  # cut at a word boundary
        assert full.split()[0] == t.split()[0]  # the title leads


def test_cut_words():
    assert cut_words("short text", 256) == "short text"
    assert cut_words("aaa bbb ccc", 7) == "aaa bbb"  # boundary right at the limit
    assert cut_words("aaa bbb ccc", 9) == "aaa bbb"
    assert cut_words("abcdefghij", 4) == "abcd"  # one long word is cut


def test_strategyqa_labels_from_bools(shared_data):
    spec = get_task("strategyqa")
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    assert (len(train), len(ev)) == (2061, 229)
    raw = json.loads((shared_data / "strategyqa" / "train.json").read_text())
    assert [ex.label for ex in train] == [int(r["answer"]) for r in raw]
    assert train[5].inputs == {"question": raw[5]["question"]}


def test_gsm8k_gold_is_number_after_hashes(shared_data):
    spec = get_task("gsm8k")
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    assert (len(train), len(ev)) == (7473, 1319)
    raw = json.loads((shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[0])
    assert train[0].solution == raw["answer"] and train[0].label == "72"
    assert all(ex.solution.endswith(ex.label) for ex in train)
    assert spec.parser == "gsm8k" and spec.max_new_tokens == 200


def test_math_gold_is_last_boxed_with_nested_braces(shared_data):
    spec = get_task("math_algebra")
    train, ev = load_split(spec, "train"), load_split(spec, "eval")
    assert (len(train), len(ev)) == (1744, 1187)
    assert train[0].label == "0" and train[1].label == "8+4i"
    nested = [ex for ex in train + ev if "{" in ex.label]
    assert nested and all(ex.label.count("{") == ex.label.count("}") for ex in nested)
    for ex in train + ev:  # the gold sits inside the last box
        assert ex.label in ex.solution[ex.solution.rfind("\\boxed"):]
    assert spec.parser == "math" and spec.max_new_tokens == 400


def test_missing_data_file_names_it(tmp_path):
    from ia2.errors import IA2Error

    with pytest.raises(IA2Error, match=r"sst2/train.tsv.*not found"):
        load_split(get_task("sst2"), "train", data_dir=tmp_path)


def test_unreadable_data_dir_is_named(tmp_path):
    from ia2.errors import IA2Error

    missing = tmp_path / "nowhere"
    with pytest.raises(IA2Error, match="nowhere.*not a readable directory"):
        load_split(get_task("sst2"), "eval", data_dir=missing)
