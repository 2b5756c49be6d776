"""The whole path on a real model: SST-2 episode -> teacher (fresh cache) -> ia2->sft -> run dir."""

import json

import pytest
import torch


@pytest.mark.real
def test_ia2_then_sft_on_smollm2_and_sst2(tmp_path):
    from peft import PeftModel

    from ia2.methods.pipeline import RunConfig, run_episode
    from ia2.methods.trainer import TrainConfig
    from ia2.models import load_model

    config = RunConfig(method="ia2->sft", train=TrainConfig(lr=1e-3, epochs=4, progress=False))
    result = run_episode("smollm2-135m", "sst2", config, n=4, seed=0, out_dir=tmp_path / "run",
                         cache_root=tmp_path / "teacher")
    stages = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
    assert list(stages) == ["1-ia2", "2-sft"]
    for stage in stages.values():  # N=4: one step an epoch, the dev loss at steps 2 and 4
        assert [s for s, _ in stage["dev"]] == [2, 4]
        assert stage["best_dev_loss"] == min(v for _, v in stage["dev"])
    assert stages["1-ia2"]["dev"][1][1] < stages["1-ia2"]["dev"][0][1]  # alignment improves
    base, tok = load_model("smollm2-135m")
    loaded = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter").eval()
    ids = tok("Review: a fine film\nSentiment:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits,
                              atol=1e-4)
