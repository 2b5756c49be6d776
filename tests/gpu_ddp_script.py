"""Launched by test_gpu.py: one tiny ia2+sft run on a CUDA device, alone (cuda:0) or under
torchrun (cuda:LOCAL_RANK per rank); each rank saves its adapter as rank<r>.safetensors."""

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "methods"))
warnings.filterwarnings("ignore")

from methods_helpers import teacher_data, tiny_spec  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from ia2.methods.pipeline import RunConfig, TrainingData, train_method  # noqa: E402
from ia2.methods.trainer import TrainConfig  # noqa: E402
from ia2.runtime import Runtime  # noqa: E402
from ia2.testing import tiny_model, tiny_tokenizer  # noqa: E402


def main(out: str, dtype: str = "fp32") -> None:
    tok, spec = tiny_tokenizer(), tiny_spec()
    train, st, dev, sd = teacher_data(tiny_model("llama"), tok, spec, n_train=8, n_dev=4, steps=2)
    runtime = Runtime(device="cuda", dtype=dtype, attn_implementation="eager").resolve()
    model = tiny_model("llama").to(device=runtime.device, dtype=runtime.torch_dtype)
    model.ia2_runtime = runtime
    config = RunConfig(method="ia2+sft", train=TrainConfig(lr=1e-2, epochs=3, progress=False))
    result = train_method(model, tok, spec, TrainingData(train, dev, st, sd), config,
                          Path(out) / "run")
    state = {n: p.detach().cpu().contiguous() for n, p in result.model.named_parameters()
             if p.requires_grad}
    save_file(state, str(Path(out) / f"rank{os.environ.get('RANK', '0')}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
