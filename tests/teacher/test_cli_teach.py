"""`ia2 teach` end to end on a tiny model saved as a local model directory and real SST-2 rows."""

import re

import pytest

from ia2.cli import main
from ia2.paths import data_dir
from ia2.testing import tiny_model, tiny_tokenizer


@pytest.fixture
def model_dir(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_teach_then_cached(model_dir, tmp_path, capsys):
    try:
        data = data_dir()
    except Exception:
        pytest.skip("benchmark data not available")
    argv = ["teach", "--model", str(model_dir), "--task", "sst2", "--n", "4", "--seed", "1",
            "--layers", "0,1", "--out", str(tmp_path / "cache"), "--data-dir", str(data),
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "computed 6 examples" in out and "4 train, 2 dev" in out and str(tmp_path / "cache") in out
    assert re.search(r"teacher accuracy on train: [0-4]/4 responses", out)
    assert re.search(r"teacher accuracy on dev: [0-2]/2 responses", out)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ": cached" in out
    [entry] = (tmp_path / "cache").iterdir()
    assert (entry / "manifest.json").is_file() and str(entry) in out


@pytest.mark.parametrize("extra, message", [
    (["--layers", "0,x"], "comma-separated integers"),
    (["--layers", "7"], "not distinct indices"),
])
def test_bad_options_are_one_line_errors(model_dir, tmp_path, capsys, extra, message):
    try:
        data = data_dir()
    except Exception:
        pytest.skip("benchmark data not available")
    argv = ["teach", "--model", str(model_dir), "--task", "sst2", "--n", "2", "--out",
            str(tmp_path / "c"), "--data-dir", str(data), "--no-progress", *extra]
    assert main(argv) == 2
    # (transformers' own weight-loading bar may also be on stderr)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ia2:")]
    assert len(err) == 1 and err[0].startswith("ia2: error:") and message in err[0]
