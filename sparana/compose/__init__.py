"""Composing models: the Vulcanizer (submodels split off, trained apart, melded back) and the ModelMixer.

    _split        building a submodel: chosen units plus consolidation units
    _plan         SubmodelPlan: what melding and reverting a submodel needs (picklable)
    _vulcanizer   Vulcanizer: choosing units, splitting, reverting, mind meld
    _mixer        ModelMixer: averages, importance-weighted averages, replace_all
"""

from ._mixer import ModelMixer
from ._plan import SubmodelPlan
from ._split import CONSOLIDATIONS
from ._vulcanizer import Vulcanizer

__all__ = ["CONSOLIDATIONS", "ModelMixer", "SubmodelPlan", "Vulcanizer"]
