"""Every numeric setting of every stage config is checked where the config is built, with one
message shape: `<name> must be <rule>, got <value>`. NaN never slips through a comparison."""

from __future__ import annotations

import math
import re

import pytest

from ia2 import validate
from ia2.config import AnalysisConfig, ExperimentConfig, TaskEntry
from ia2.errors import IA2Error
from ia2.evaluate.runner import EvalConfig
from ia2.methods.adapters import AdapterConfig
from ia2.methods.pipeline import RunConfig
from ia2.methods.trainer import Objective, TrainConfig
from ia2.teacher.collect import TeacherConfig

NAN, INF = math.nan, math.inf

BAD = [
    (TrainConfig, "lr", [NAN, INF, 0.0, -1e-3, True, "1e-3"], "train.lr"),
    (TrainConfig, "batch_size", [0, -1, 2.0, True], "train.batch_size"),
    (TrainConfig, "epochs", [0, NAN], "train.epochs"),
    (TrainConfig, "eval_steps", [0], "train.eval_steps"),
    (TrainConfig, "patience", [0], "train.patience"),
    (TrainConfig, "save_total_limit", [0], "train.save_total_limit"),
    (TrainConfig, "seed", [-1, 2**32], "train.seed"),
    (TrainConfig, "data_seed", [-1], "train.data_seed"),
    (TrainConfig, "max_grad_norm", [0.0, NAN, -1.0], "train.max_grad_norm"),
    (RunConfig, "beta", [NAN, -0.1, 1.01], "beta"),
    (RunConfig, "sft_lr", [NAN, 0.0], "sft_lr"),
    (AdapterConfig, "r", [0], "adapter.r"),
    (AdapterConfig, "alpha", [0, NAN], "adapter.alpha"),
    (AdapterConfig, "dropout", [1.0, -0.1, NAN], "adapter.dropout"),
    (AdapterConfig, "num_virtual_tokens", [0], "adapter.num_virtual_tokens"),
    (TeacherConfig, "max_new_tokens", [0], "teacher.max_new_tokens"),
    (TeacherConfig, "topk", [-1], "teacher.topk"),
    (TeacherConfig, "batch_size", [0], "teacher.batch_size"),
    (TeacherConfig, "max_length", [0], "teacher.max_length"),
    (TeacherConfig, "layers", [(0, -1)], "teacher.layers[1]"),
    (EvalConfig, "size", [0], "eval.size"),
    (EvalConfig, "batch_size", [0], "eval.batch_size"),
    (EvalConfig, "icl_sets", [0], "eval.icl_sets"),
    (EvalConfig, "n_bins", [0], "eval.n_bins"),
    (EvalConfig, "icl_k", [-1], "eval.icl_k"),
    (AnalysisConfig, "asim_queries", [0], "analysis.asim_queries"),
    (Objective, "beta", [NAN, 2.0], "beta"),
]


def _build(cls, **kw):
    if cls is Objective:
        return cls("ia2+sft", **kw)
    return cls(**kw)


@pytest.mark.parametrize("cls, name, values, label", BAD, ids=[f"{b[0].__name__}.{b[1]}" for b in BAD])
def test_bad_values_fail_where_the_config_is_built(cls, name, values, label):
    _build(cls)  # the defaults are valid
    for value in values:
        with pytest.raises(IA2Error) as err:
            _build(cls, **{name: value})
        assert str(err.value).startswith(f"{label} must be "), str(err.value)
        assert str(err.value).endswith(f"got {value!r}") or name == "layers"


def test_experiment_lists_are_checked_item_by_item():
    base = dict(name="x", tasks=(TaskEntry("sst2"),))
    cases = {"n": ((8, 1), "n[1] must be an integer >= 2, got 1"),
             "seeds": ((-1,), "seeds[0] must be an integer in [0, 4294967295], got -1"),
             "lr": ((NAN,), "lr[0] must be a finite number > 0, got nan"),
             "beta": ((0.5, 1.5), "beta[1] must be a number in [0, 1], got 1.5"),
             "max_demos": (-1, "max_demos must be an integer >= 0, got -1"),
             "sft_labels": ("gold", "unknown sft_labels 'gold'"),
             "alignment": ("l2", "unknown alignment 'l2'")}
    ExperimentConfig(**base)
    for key, (value, message) in cases.items():
        with pytest.raises(IA2Error, match="^" + re.escape(message)):
            ExperimentConfig(**base, **{key: value})
    with pytest.raises(IA2Error, match="ia2\\+sft needs at least one beta"):
        ExperimentConfig(**base, methods=("ia2+sft",), beta=())


def test_replace_revalidates():
    from dataclasses import replace

    with pytest.raises(IA2Error, match="train.lr"):
        replace(TrainConfig(), lr=NAN)
    with pytest.raises(IA2Error, match="eval.size"):
        replace(EvalConfig(), size=0)


def test_helper_bounds_are_exact():
    validate.number("x", 1.0, 0, 1)  # closed ends pass
    validate.number("x", 0.0, 0, 1, high_open=True)
    validate.integer("x", 2**32 - 1, 0, validate.SEED_MAX)
    with pytest.raises(IA2Error, match=r"^x must be a number in \[0, 1\), got 1$"):
        validate.number("x", 1, 0, 1, high_open=True)
    with pytest.raises(IA2Error, match="^x must be a finite number > 0, got 0$"):
        validate.number("x", 0, low=0, low_open=True)
    validate.integer("x", None, low=1, optional=True)
    with pytest.raises(IA2Error, match="got None"):
        validate.integer("x", None, low=1)
