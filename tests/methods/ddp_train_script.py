"""Launched by test_ddp.py: one tiny run (method and adapter from argv, default ia2+sft with LoRA),
alone or under torchrun (one process per rank).

Each rank saves its final adapter weights as rank<r>.safetensors in the output directory."""

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
warnings.filterwarnings("ignore")

from methods_helpers import teacher_data, tiny_spec  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from ia2.methods.adapters import AdapterConfig  # noqa: E402
from ia2.methods.pipeline import RunConfig, TrainingData, train_method  # noqa: E402
from ia2.methods.trainer import TrainConfig  # noqa: E402
from ia2.testing import tiny_model, tiny_tokenizer  # noqa: E402


def main(out: str, method: str = "ia2+sft", adapter: str = "lora") -> None:
    tok, spec = tiny_tokenizer(), tiny_spec()
    train, st, dev, sd = teacher_data(tiny_model("llama"), tok, spec, n_train=8, n_dev=4, steps=2)
    config = RunConfig(method=method, adapter=AdapterConfig(kind=adapter),
                       train=TrainConfig(lr=1e-2, epochs=3, progress=False))
    result = train_method(tiny_model("llama"), tok, spec, TrainingData(train, dev, st, sd), config,
                          Path(out) / "run")
    state = {n: p.detach().contiguous() for n, p in result.model.named_parameters() if p.requires_grad}
    save_file(state, str(Path(out) / f"rank{os.environ.get('RANK', '0')}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
