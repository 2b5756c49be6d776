"""`ia2 train` end to end on a tiny model saved as a local checkpoint and the real SST-2 files:
episode -> teacher signals (cached) -> training -> run directory."""

import json

import pytest

from ia2.cli import main
from ia2.paths import data_dir
from ia2.testing import tiny_model, tiny_tokenizer


@pytest.fixture()
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("IA2_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _has_sst2() -> bool:
    try:
        return (data_dir() / "sst2" / "train.tsv").is_file()
    except Exception:
        return False


@pytest.mark.skipif(not _has_sst2(), reason="needs the SST-2 files of the shared data directory")
def test_train_command_writes_a_run_and_reuses_it(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_checkpoint), "--task", "sst2", "--method", "ia2->sft",
            "--n", "4", "--seed", "1", "--lr", "1e-2", "--epochs", "1", "--max-demos", "1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"ia2->sft trained: {out}" in printed and "2-sft: best dev loss" in printed
    run = json.loads((out / "run.json").read_text())
    assert list(run["stages"]) == ["1-ia2", "2-sft"]
    teacher = json.loads((out / "teacher.json").read_text())
    assert (tmp_path / "cache" / "teacher").is_dir() and teacher["key"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out


def test_train_command_reports_bad_input_in_one_line(tiny_checkpoint, capsys):
    code = main(["train", "--model", str(tiny_checkpoint), "--task", "no-such-task", "--method", "sft"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ia2: error:")
    with pytest.raises(SystemExit):
        main(["train", "--task", "sst2", "--method", "ia2-sft"])
