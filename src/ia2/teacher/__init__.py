"""Stage 2: teacher signals. The frozen model runs WITH demonstrations; its greedy response and its
activations at the aligned positions are what IA2 (and KD / SFT on ICL outputs) train on."""

from .cache import TeacherCache, model_fingerprint
from .capture import Capture
from .collect import TeacherConfig, TeacherSet, episode_prompts, teach, teach_episode
from .signals import TeacherSignals
from .sites import SITES, activation_sites, decoder_layers, num_layers

__all__ = ["SITES", "Capture", "TeacherCache", "TeacherConfig", "TeacherSet", "TeacherSignals",
           "activation_sites", "decoder_layers", "episode_prompts", "model_fingerprint",
           "num_layers", "teach", "teach_episode"]
