"""neuroloc: localize, lesion, probe and brain-align functionally selective units in language models."""

from .errors import NeurolocError
from .evaluate.blimp import evaluate_blimp, load_blimp
from .evaluate.controls import magnitude_matched, random_matched, summarize
from .evaluate.perplexity import evaluate_perplexity, load_texts
from .evaluate.scoring import token_logprobs
from .evaluate.syntaxgym import evaluate_syntaxgym, load_suites
from .lesion import Intervention, intervene, lesion
from .localize.localizer import Localizer
from .models.hooks import hooks, record, run_forward
from .models.layout import Site, register_family
from .models.loading import LoadedModel, load_model, wrap_model
from .pipelines.lesion import build_benchmarks, run_lesion_study
from .pipelines.localize import run_localize
from .pipelines.pos import run_pos
from .text.alignment import align_words
from .studies.pos.attribution import attribute
from .studies.pos.key_neurons import KeyNeurons, contrast_key_neurons, select_key_neurons
from .studies.pos.specificity import specificity
from .stimuli.spacy_tagging import tag_texts
from .stimuli.treebank import TaggedCorpus, read_conllu
from .probe import control_labels, evaluate_probe, make_probe
from .record.accumulators import ConditionStats, Moments
from .record.recorder import Recorder
from .stimuli.base import StimulusSet
from .stimuli.custom import load_contrast_file
from .stimuli.language import load_language_localizer
from .stimuli.md import make_md_localizer
from .stimuli.registry import get_stimuli
from .stimuli.tom import load_tom_localizer
from .units import UnitSet

__all__ = [
    "ConditionStats", "Intervention", "KeyNeurons", "LoadedModel", "Localizer", "Moments", "NeurolocError", "Recorder", "Site",
    "StimulusSet", "TaggedCorpus", "UnitSet", "align_words", "attribute", "build_benchmarks", "contrast_key_neurons", "control_labels",
    "evaluate_blimp", "evaluate_perplexity", "evaluate_probe", "evaluate_syntaxgym", "get_stimuli", "hooks",
    "intervene", "lesion", "load_blimp", "load_contrast_file", "load_language_localizer", "load_model",
    "load_suites", "load_texts", "load_tom_localizer", "magnitude_matched", "make_md_localizer", "make_probe",
    "random_matched", "read_conllu", "record", "register_family", "run_forward", "run_lesion_study",
    "run_localize", "run_pos", "select_key_neurons", "specificity", "summarize", "tag_texts", "token_logprobs", "wrap_model",
]
