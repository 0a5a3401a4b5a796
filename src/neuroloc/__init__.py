"""neuroloc: localize, lesion, probe and brain-align functionally selective units in language models."""

from .errors import NeurolocError
from .lesion import Intervention, intervene, lesion
from .localize.localizer import Localizer
from .models.hooks import hooks, record, run_forward
from .models.layout import Site, register_family
from .models.loading import LoadedModel, load_model, wrap_model
from .record.accumulators import ConditionStats, Moments
from .record.recorder import Recorder
from .stimuli.base import StimulusSet
from .units import UnitSet

__all__ = [
    "ConditionStats", "Intervention", "LoadedModel", "Localizer", "Moments", "NeurolocError", "Recorder", "Site",
    "StimulusSet", "UnitSet", "hooks", "intervene", "lesion", "load_model", "record", "register_family",
    "run_forward", "wrap_model",
]
