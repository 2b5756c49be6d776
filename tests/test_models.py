import json

import pytest
import torch

from ia2 import models
from ia2.cli import main
from ia2.errors import IA2Error
from ia2.testing import tiny_model, tiny_tokenizer


def test_unknown_model_is_one_line_exit_2(capsys):
    assert main(["models", "--prepare", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'no-such-model'" in err[0]


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(IA2Error, match="no config.json"):
        models.resolve(str(tmp_path))


def test_local_directory_loads_with_fingerprint(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = models.load_model(str(tmp_path))
    assert loaded.ia2_fingerprint.startswith("dir:")
    ids = torch.tensor([loaded_tok("abc").input_ids])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    # Different weights, different fingerprint: caches keyed on it never mix models.
    tiny_model("llama", seed=1).save_pretrained(tmp_path)
    assert models.resolve(str(tmp_path))[1] != loaded.ia2_fingerprint


def test_models_lists_both_short_names(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gemma-3-270m" in out and "smollm2-135m" in out and "(default)" in out


@pytest.mark.real
def test_smollm2_converts_once_and_reloads(tmp_path):
    model, tok = models.load_model("smollm2-135m")
    assert models.status("smollm2-135m") == "ready"
    meta = json.loads((models.converted_dir("smollm2-135m") / "ia2-model.json").read_text())
    assert model.ia2_fingerprint == "gguf:" + meta["gguf_sha256"]
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    ids = tok("Review: a wonderful, moving film.\nSentiment:", return_tensors="pt").input_ids
    with torch.no_grad():
        top = model(ids).logits[0, -1].argmax()
    assert tok.decode(top).strip() == "positive"
