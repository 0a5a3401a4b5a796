"""neuroloc: localize, lesion, probe and brain-align functionally selective units in language models.

Every public name is importable from here; each is imported the first time it is used, so `import neuroloc`
(and `neuroloc --help`) starts without loading torch, transformers or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name → the module that defines it
_WHERE: dict[str, str] = {
    "AlignmentResult": ".align", "Recordings": ".align", "read_recordings": ".align", "score_alignment": ".align",
    "simulate_recordings": ".align",
    "Config": ".config", "param": ".config",
    "MissingData": ".errors", "NeurolocError": ".errors",
    "answer_accuracy": ".evaluate.answers", "score_answers": ".evaluate.answers",
    "Benchmark": ".evaluate.benchmark", "BenchmarkOptions": ".evaluate.benchmark",
    "evaluate_blimp": ".evaluate.blimp", "load_blimp": ".evaluate.blimp",
    "CONTROLS": ".evaluate.controls", "ControlData": ".evaluate.controls", "draw_control": ".evaluate.controls",
    "magnitude_matched": ".evaluate.controls", "random_matched": ".evaluate.controls",
    "register_control": ".evaluate.controls", "summarize": ".evaluate.controls",
    "evaluate_perplexity": ".evaluate.perplexity", "load_texts": ".evaluate.perplexity",
    "BENCHMARKS": ".evaluate.registry", "BenchmarkSpec": ".evaluate.registry",
    "register_benchmark": ".evaluate.registry",
    "token_logprobs": ".evaluate.scoring",
    "evaluate_syntaxgym": ".evaluate.syntaxgym", "load_suites": ".evaluate.syntaxgym",
    "INTERVENTIONS": ".lesion", "Intervention": ".lesion", "InterventionKind": ".lesion", "intervene": ".lesion",
    "lesion": ".lesion", "register_intervention": ".lesion",
    "iter_answer_attributions": ".localize.attribution",
    "Localizer": ".localize.localizer",
    "SCORES": ".localize.score_functions", "Scores": ".localize.score_functions",
    "register_score": ".localize.score_functions",
    "MicroBatcher": ".models.batching",
    "BatchContext": ".models.hooks", "HookContext": ".models.hooks", "batch_context": ".models.hooks",
    "hooks": ".models.hooks", "record": ".models.hooks", "run_forward": ".models.hooks",
    "Site": ".models.layout", "register_family": ".models.layout",
    "LoadedModel": ".models.loading", "load_model": ".models.loading", "wrap_model": ".models.loading",
    "AlignConfig": ".pipelines.align", "align": ".pipelines.align",
    "LanguageConfig": ".pipelines.language", "run_language": ".pipelines.language",
    "LanguageNetworkConfig": ".pipelines.language_network",
    "run_languages": ".pipelines.languages",
    "MultilingualConfig": ".pipelines.multilingual",
    "LesionConfig": ".pipelines.lesion", "build_benchmarks": ".pipelines.lesion",
    "run_lesion_study": ".pipelines.lesion",
    "lm_eval": ".pipelines.lm_eval",
    "LocalizeConfig": ".pipelines.localize", "run_localize": ".pipelines.localize",
    "PosConfig": ".pipelines.pos", "run_pos": ".pipelines.pos",
    "config_from_manifest": ".pipelines.rerun",
    "run_task": ".pipelines.task",
    "control_labels": ".probe", "evaluate_probe": ".probe", "make_probe": ".probe",
    "Checkpoint": ".record.checkpoint", "checkpoint_key": ".record.checkpoint",
    "collect_resumable": ".record.checkpoint", "model_fingerprint": ".record.checkpoint",
    "collect": ".record.collect",
    "DistContext": ".record.distributed", "merge_across_ranks": ".record.distributed",
    "shard_stimuli": ".record.distributed",
    "Features": ".record.features", "extract_features": ".record.features",
    "Recorder": ".record.recorder",
    "Moments": ".record.stats", "Rows": ".record.stats", "StatsStore": ".record.stats",
    "TokenStats": ".record.stats",
    "RunOptions": ".runner", "StudyConfig": ".runner", "StudyResult": ".runner", "run": ".runner",
    "RunSettings": ".settings",
    "StimulusSet": ".stimuli.base",
    "MultilingualCorpus": ".stimuli.corpora", "load_corpus": ".stimuli.corpora", "split_corpus": ".stimuli.corpora",
    "load_contrast_file": ".stimuli.custom",
    "Design": ".stimuli.design",
    "load_language_localizer": ".stimuli.language",
    "make_md_localizer": ".stimuli.md",
    "PromptSet": ".stimuli.prompts", "load_prompts": ".stimuli.prompts",
    "STIMULI": ".stimuli.registry", "get_stimuli": ".stimuli.registry", "register_stimuli": ".stimuli.registry",
    "load_relations": ".stimuli.relations",
    "tag_texts": ".stimuli.spacy_tagging",
    "load_tom_localizer": ".stimuli.tom",
    "TaggedCorpus": ".stimuli.treebank", "read_conllu": ".stimuli.treebank",
    "LanguageSelection": ".studies.languages", "deactivation_matrix": ".studies.languages",
    "steer": ".studies.languages",
    "attribute": ".studies.pos.attribution",
    "KeyNeurons": ".studies.pos.key_neurons", "contrast_key_neurons": ".studies.pos.key_neurons",
    "select_key_neurons": ".studies.pos.key_neurons",
    "specificity": ".studies.pos.specificity",
    "culnig_select": ".studies.tasks", "effect_matrix": ".studies.tasks",
    "align_words": ".text.alignment",
    "encode": ".text.encoding",
    "LabeledUnits": ".units", "UnitSet": ".units",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'neuroloc' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
