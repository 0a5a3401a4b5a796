"""neuroloc: localize, lesion, probe and brain-align functionally selective units in language models."""

from .errors import NeurolocError
from .evaluate.blimp import evaluate_blimp, load_blimp
from .evaluate.controls import magnitude_matched, random_matched, summarize
from .evaluate.perplexity import evaluate_perplexity, load_texts
from .evaluate.scoring import token_logprobs
from .evaluate.syntaxgym import evaluate_syntaxgym, load_suites
from .lesion import INTERVENTIONS, Intervention, InterventionKind, intervene, lesion, register_intervention
from .evaluate.benchmark import Benchmark, BenchmarkOptions
from .evaluate.controls import CONTROLS, ControlData, draw_control, register_control
from .evaluate.registry import BENCHMARKS, register_benchmark
from .localize.localizer import Localizer
from .models.hooks import BatchContext, HookContext, batch_context, hooks, record, run_forward
from .models.layout import SITE_KINDS, Site, register_family
from .models.loading import LoadedModel, load_model, wrap_model
from .align import AlignmentResult, Recordings, read_recordings, score_alignment, simulate_recordings
from .pipelines.align import align
from .pipelines.lesion import build_benchmarks, run_lesion_study
from .pipelines.lm_eval import lm_eval
from .models.batching import MicroBatcher
from .record.checkpoint import Checkpoint, checkpoint_key, collect_resumable, model_fingerprint
from .record.distributed import DistContext, merge_across_ranks, shard_stimuli
from .pipelines.localize import run_localize
from .pipelines.pos import PosConfig, run_pos
from .pipelines.language import LanguageConfig, run_language
from .pipelines.languages import run_languages
from .stimuli.corpora import MultilingualCorpus, load_corpus, split_corpus
from .studies.languages import LanguageSelection, count_language, deactivation_matrix, specific_related, steer
from .text.alignment import align_words
from .studies.pos.attribution import attribute
from .studies.pos.key_neurons import KeyNeurons, contrast_key_neurons, select_key_neurons
from .studies.pos.specificity import specificity
from .stimuli.spacy_tagging import tag_texts
from .stimuli.treebank import TaggedCorpus, read_conllu
from .probe import control_labels, evaluate_probe, make_probe
from .localize.score_functions import SCORES, Scores, register_score
from .record.collect import collect
from .record.features import Features, extract_features
from .record.recorder import Recorder
from .record.stats import Moments, Rows, StatsStore, TokenStats
from .stimuli.design import Design
from .text.encoding import encode
from .stimuli.base import StimulusSet
from .stimuli.custom import load_contrast_file
from .stimuli.language import load_language_localizer
from .stimuli.md import make_md_localizer
from .stimuli.registry import STIMULI, get_stimuli, register_stimuli
from .stimuli.tom import load_tom_localizer
from .units import LabeledUnits, UnitSet
from .evaluate.answers import answer_accuracy, score_answers
from .localize.attribution import iter_answer_attributions
from .pipelines.task import run_task
from .stimuli.prompts import PromptSet, load_prompts
from .stimuli.relations import load_relations
from .studies.tasks import culnig_select, effect_matrix

__all__ = [
    "PromptSet", "answer_accuracy", "culnig_select", "effect_matrix", "iter_answer_attributions", "load_prompts",
    "load_relations", "run_task", "score_answers",
    "BENCHMARKS", "BatchContext", "Benchmark", "BenchmarkOptions", "CONTROLS", "ControlData", "HookContext",
    "INTERVENTIONS", "InterventionKind", "LanguageConfig", "PosConfig", "STIMULI", "batch_context", "draw_control",
    "register_benchmark", "register_control", "register_intervention", "register_stimuli", "run_language",
    "Checkpoint", "DistContext", "MicroBatcher", "checkpoint_key", "collect_resumable", "lm_eval", "merge_across_ranks",
    "model_fingerprint", "shard_stimuli",
    "LanguageSelection", "MultilingualCorpus", "count_language", "deactivation_matrix", "load_corpus",
    "run_languages", "specific_related", "split_corpus", "steer",
    "AlignmentResult", "Features", "Recordings", "align", "extract_features", "read_recordings",
    "score_alignment", "simulate_recordings",
    "SCORES", "SITE_KINDS", "Design", "LabeledUnits", "Rows", "Scores", "StatsStore", "TokenStats", "collect", "encode",
    "register_score", "Intervention", "KeyNeurons", "LoadedModel", "Localizer", "Moments", "NeurolocError", "Recorder", "Site",
    "StimulusSet", "TaggedCorpus", "UnitSet", "align_words", "attribute", "build_benchmarks", "contrast_key_neurons", "control_labels",
    "evaluate_blimp", "evaluate_perplexity", "evaluate_probe", "evaluate_syntaxgym", "get_stimuli", "hooks",
    "intervene", "lesion", "load_blimp", "load_contrast_file", "load_language_localizer", "load_model",
    "load_suites", "load_texts", "load_tom_localizer", "magnitude_matched", "make_md_localizer", "make_probe",
    "random_matched", "read_conllu", "record", "register_family", "run_forward", "run_lesion_study",
    "run_localize", "run_pos", "select_key_neurons", "specificity", "summarize", "tag_texts", "token_logprobs", "wrap_model",
]
