"""Stages 3 and 4: the paper's objectives (`losses`) and their training on `transformers.Trainer`
with peft adapters (`trainer`, `adapters`), dispatched per method (`pipeline`)."""

from .adapters import ADAPTERS, AdapterConfig, attach
from .pipeline import METHODS, RunConfig, RunResult, TrainingData, run_episode, stages, train_method
from .trainer import Objective, TrainConfig, train_stage

__all__ = ["ADAPTERS", "METHODS", "AdapterConfig", "Objective", "RunConfig", "RunResult",
           "TrainConfig", "TrainingData", "attach", "run_episode", "stages", "train_method",
           "train_stage"]
