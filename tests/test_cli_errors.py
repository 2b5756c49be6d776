"""Bad input through the CLI: exit 2, one stderr line `ia2: error: ...`, no traceback, and nothing
written — no run directory, no study directory, no store. No model is ever loaded here: every
case must fail before that (a model directory holding only a config.json proves it)."""

from __future__ import annotations

import pytest
import yaml

from ia2.cli import main
from ia2.episodes import episode_fingerprint, make_episode
from ia2.tasks import get_task, registry


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A data directory with tiny SST-2 and PoemSentiment files, a cache, a model directory
    that cannot load (config.json only) and an empty working directory to watch."""
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    rows = [f"{'long ' * 9}review {i}\t{i % 2}" if i % 3 else f"short {i}\t{i % 2}" for i in range(60)]
    (data / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (data / "sst2" / "validation.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"held out {i}\t{i % 2}\n" for i in range(10)))
    (data / "poem_sentiment").mkdir()
    (data / "poem_sentiment" / "train.tsv").write_text(
        "".join(f"{i}\tverse {i}\t{1 if i % 2 else -1}\n" for i in range(10)))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("IA2_DATA_DIR", str(data))
    monkeypatch.setenv("IA2_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(work)  # a default output (runs/...) would land here
    registry._CACHE.clear()
    yield {"data": data, "model": model, "work": work, "cache": tmp_path / "cache"}
    registry._CACHE.clear()


def fails(argv, capsys) -> str:
    """Run `ia2 argv`; assert exit 2 with one `ia2: error:` line; return the message."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("ia2: error: ") and "Traceback" not in captured.err
    return lines[0].removeprefix("ia2: error: ")


def nothing_written(env, *paths):
    assert list(env["work"].iterdir()) == []
    assert not env["cache"].exists()
    for p in paths:
        assert not p.exists(), p


# --- class 1: numeric settings, one message from the CLI and from the YAML ---------------------

TRAIN_CASES = [
    (["--lr", "nan"], "train.lr must be a finite number > 0, got nan"),
    (["--lr", "-1"], "train.lr must be a finite number > 0, got -1.0"),
    (["--lr", "inf"], "train.lr must be a finite number > 0, got inf"),
    (["--batch-size", "0"], "train.batch_size must be an integer >= 1, got 0"),
    (["--epochs", "0"], "train.epochs must be an integer >= 1, got 0"),
    (["--patience", "0"], "train.patience must be an integer >= 1, got 0"),
    (["--seed", "-1"], "train.seed must be an integer in [0, 4294967295], got -1"),
    (["--sft-lr", "nan"], "sft_lr must be a finite number > 0, got nan"),
    (["--beta", "1.5"], "beta must be a number in [0, 1], got 1.5"),
    (["--rank", "0"], "adapter.r must be an integer >= 1, got 0"),
    (["--task-option", "nosuch=1"], "task sst2: no such setting nosuch"),
    (["--task-option", "min_words=many"], "task sst2: min_words must be an integer, got 'many'"),
    (["--task-option", "min_words=-2"], "task sst2: min_words must be an integer >= 0, got -2"),
    (["--task-option", "min_words"], "--task-option takes KEY=VALUE"),
    (["--task", "no-such-task"], "unknown task 'no-such-task'"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
]


@pytest.mark.parametrize("extra, message", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_rejects_bad_settings_and_writes_nothing(env, capsys, extra, message):
    out = env["work"] / "run"
    argv = ["train", "--model", str(env["model"]), "--task", "sst2", "--method", "ia2->sft",
            "--n", "4", "--out", str(out), "--no-progress", *extra]
    assert fails(argv, capsys).startswith(message)
    nothing_written(env, out)


def _study(env, overrides: str):
    """A valid study config with top-level keys replaced by the YAML in `overrides`."""
    doc = {"name": "s", "model": str(env["model"]), "out": str(env["work"] / "study"),
           "tasks": [{"task": "sst2", "ood": ["poem_sentiment"]}], "methods": ["sft"],
           "n": [4], "seeds": [0], "lr": [1e-3], "eval": {"size": 4}}
    doc.update(yaml.safe_load(overrides) or {})
    path = env["work"].parent / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


YAML_CASES = [
    ("train: {lr: .nan}", "train.lr must be a finite number > 0, got nan"),
    ("train: {epochs: 0}", "train.epochs must be an integer >= 1, got 0"),
    ("train: {max_grad_norm: 0}", "train.max_grad_norm must be a finite number > 0, got 0"),
    ("n: [1]", "n[0] must be an integer >= 2, got 1"),
    ("n: [4, 0]", "n[1] must be an integer >= 2, got 0"),
    ("lr: [.inf]", "lr[0] must be a finite number > 0, got inf"),
    ("seeds: [-1]", "seeds[0] must be an integer in [0, 4294967295], got -1"),
    ("beta: [.nan]", "beta[0] must be a number in [0, 1], got nan"),
    ("max_demos: -1", "max_demos must be an integer >= 0, got -1"),
    ("adapter: {dropout: 1.0}", "adapter.dropout must be a number in [0, 1), got 1.0"),
    ("adapter: {r: 0}", "adapter.r must be an integer >= 1, got 0"),
    ("teacher: {topk: -1}", "teacher.topk must be an integer >= 0, got -1"),
    ("eval: {n_bins: 0}", "eval.n_bins must be an integer >= 1, got 0"),
    ("analysis: {asim_queries: 0}", "analysis.asim_queries must be an integer >= 1, got 0"),
    ("tasks: [no-such-task]", "unknown task 'no-such-task'"),
    ("tasks: [{task: sst2, ood: [no-such-ood]}]", "unknown task 'no-such-ood'"),
    ("tasks: [{task: sst2, options: {nosuch: 1}}]", "task sst2: no such setting nosuch"),
    ("tasks: [{task: sst2, options: {min_words: x}}]", "task sst2: min_words must be an integer"),
    ("tasks: [poem_sentiment]", "task poem_sentiment is evaluation-only"),
    ("model: no-such-model", "unknown model 'no-such-model'"),
    ("data_dir: /no/such/dir", "data directory /no/such/dir is not a readable directory"),
    ("preset: nosuch", "task sst2 has no template preset 'nosuch'"),
]


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("text, message", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_run_rejects_bad_config_before_any_output(env, capsys, text, message, dry):
    path = _study(env, text)
    assert fails(["run", str(path), *(["--dry-run"] if dry else [])], capsys).startswith(message)
    nothing_written(env, env["work"] / "study")


def test_run_rejects_a_missing_data_file_before_any_output(env, capsys):
    (env["data"] / "poem_sentiment" / "train.tsv").unlink()
    path = _study(env, "")
    assert "poem_sentiment/train.tsv not found" in fails(["run", str(path)], capsys)
    nothing_written(env)


def test_cli_and_yaml_say_the_same(env, capsys):
    cli = fails(["train", "--task", "sst2", "--method", "sft", "--lr", "nan"], capsys)
    yaml_ = fails(["run", str(_study(env, "train: {lr: .nan}"))], capsys)
    assert cli == yaml_ == "train.lr must be a finite number > 0, got nan"
    nothing_written(env)


def test_a_good_dry_run_passes_the_checks_and_writes_nothing(env, capsys):
    assert main(["run", str(_study(env, "")), "--dry-run"]) == 0
    assert "method/sst2/sft/4" in capsys.readouterr().out
    nothing_written(env)


# --- class 5: merge validates every source before it creates the target -------------------------

def test_merge_from_a_bad_source_creates_no_target(env, capsys):
    from ia2.store import ResultsStore

    good = env["work"].parent / "good.sqlite"
    with ResultsStore(good) as store:
        store.add({"key": "k", "setting": "zero_shot", "metrics": {"accuracy": 0.5}})
    target = env["work"] / "merged" / "results.sqlite"
    junk = env["work"].parent / "junk.sqlite"
    junk.write_text("not sqlite" * 100)
    for bad in (env["work"].parent / "missing.sqlite", junk):
        message = fails(["merge", str(target), str(good), str(bad)], capsys)
        assert message.startswith(str(bad))
        nothing_written(env, target)
    assert main(["merge", str(target), str(good)]) == 0  # the corrected command
    assert "merged 1 new rows" in capsys.readouterr().out


# --- task options on every command that draws an episode ---------------------------------------

@pytest.mark.parametrize("argv", [
    ["teach", "--task", "sst2", "--model", "MODEL"],
    ["eval", "--task", "sst2", "--model", "MODEL", "--icl"],
    ["data", "show", "sst2"],
    ["train", "--task", "sst2", "--method", "sft", "--model", "MODEL"],
], ids=lambda a: a[0])
def test_unknown_task_option_is_one_line_everywhere(env, capsys, argv):
    argv = [str(env["model"]) if a == "MODEL" else a for a in argv]
    message = fails([*argv, "--task-option", "nosuch=1"], capsys)
    assert message == "task sst2: no such setting nosuch"
    nothing_written(env)


def _fingerprint(out: str) -> str:
    return out.split(" episode ")[1].split()[0]


def test_task_option_and_balanced_reach_the_episode(env, capsys):
    def shown(*extra):
        assert main(["data", "show", "sst2", "--n", "4", "--seed", "1", *extra]) == 0
        return _fingerprint(capsys.readouterr().out)

    plain = episode_fingerprint(make_episode(get_task("sst2"), 4, 1))[:16]
    long = episode_fingerprint(make_episode(get_task("sst2", min_words=8), 4, 1))[:16]
    balanced = episode_fingerprint(make_episode(get_task("sst2"), 4, 1, balanced=True))[:16]
    assert len({plain, long, balanced}) == 3  # each setting changes the draw
    assert shown() == plain
    assert shown("--task-option", "min_words=8") == long
    assert shown("--min-words", "8") == long  # the older flag is the same setting
    assert shown("--balanced") == balanced
    assert fails(["data", "show", "sst2", "--task-option", "min_words=8", "--min-words", "4"],
                 capsys) == "min_words is given twice, as 8 and 4"


class Stop(Exception):
    pass


def test_train_passes_task_options_and_balanced_to_the_run(env, monkeypatch):
    from ia2.cli import train

    seen = {}

    def fake_run_episode(model, task, config, n, seed, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(train, "run_episode", fake_run_episode)
    argv = ["train", "--model", str(env["model"]), "--task", "sst2", "--method", "sft",
            "--task-option", "min_words=8", "--task-option", "stop=[.]", "--balanced"]
    with pytest.raises(Stop):
        main(argv)
    assert seen["task_options"] == {"min_words": 8, "stop": ["."]} and seen["balanced"] is True
