"""Composing models: the Vulcanizer (submodels split off and melded back) and the ModelMixer."""

from ._mixer import ModelMixer
from ._vulcanizer import SubmodelPlan, Vulcanizer
