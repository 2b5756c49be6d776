"""The report's fidelity settings: read from a study's experiment.yaml, old or new."""

import yaml

from ia2.config import ExperimentConfig, TaskEntry, dump
from ia2.report.settings import fidelity_lines


def _lines(**kw) -> str:
    config = ExperimentConfig(name="s", tasks=(TaskEntry("sst2"),), **kw)
    return "\n".join(fidelity_lines(yaml.safe_load(dump(config))))


def test_defaults_are_reported_as_the_papers():
    text = _lines(methods=("sft", "ia2+sft", "kd", "ia2->sft"))
    assert "gradient clipping: none (the paper's)" in text
    assert "N−1 demonstrations drawn for each query from the held-out pool" in text
    assert "train/dev sampling: at random" in text
    assert "β grid: [0.001, 0.01, 0.05, 0.5]" in text
    assert "KD: exact KL to the teacher's full next-token distribution" in text
    assert "each model generates its own response" in text
    assert "prompt preset: `natural`" in text and "constrained" not in text


def test_options_and_an_old_study_say_what_ran():
    from ia2.methods.trainer import TrainConfig

    from ia2.teacher.collect import TeacherConfig

    text = _lines(preset="paper", balanced=True, train=TrainConfig(max_grad_norm=1.0),
                  teacher=TeacherConfig(constrain_to_labels=True))
    assert "`paper` (the authors' text)" in text and "at norm 1" in text
    assert "constrained to the label tokens" in text
    assert "class-balanced" in text and "β grid" not in text and "KD" not in text
    old = {"methods": ["kd"], "eval": {"icl_k": 8, "icl_sets": 3}, "train": {"max_grad_norm": 1.0}}
    text = "\n".join(fidelity_lines(old))  # an ia2 0.1 study: none of the new keys
    assert "8 demonstrations, one shared set for all queries, averaged over 3 sets" in text
    assert "class-balanced" in text and "renormalised top-k" in text
    assert "fed the ICL response" in text
