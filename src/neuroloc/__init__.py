"""neuroloc: localize, lesion, probe and brain-align functionally selective units in language models.

Every public name is importable from here; each is imported the first time it is used, so `import neuroloc`
(and `neuroloc --help`) starts without loading torch, transformers or matplotlib.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name → the module that defines it
_WHERE: dict[str, str] = {
    "Condition": ".evaluate.conditions",
    "evaluate_conditions": ".evaluate.conditions",
    "trunk_cache": ".evaluate.trunk_cache",
    "prefix_sharing": ".evaluate.scoring",
    "score_sequences": ".evaluate.scoring",
    "Footprint": ".models.footprint",
    "declared": ".models.footprint",
    "hook_state": ".models.footprint",
    "SITE_KINDS": ".models.layout",
    "PermutationNull": ".localize.permutation",
    "permutation_null": ".localize.permutation",
    "Reliability": ".localize.reliability",
    "ReliabilityConfig": ".localize.reliability",
    "assess": ".localize.reliability",
    "held_out": ".localize.reliability",
    "split_half": ".localize.reliability",
    "stability": ".localize.reliability",
    "untrained_null": ".localize.reliability",
    "untrained_model": ".models.untrained",
    "FoldStats": ".record.folds",
    "StimulusRows": ".record.folds",
    "record_folds": ".record.folds",
    "reliability_figures": ".report.reliability_figures",
    "FoldAssignment": ".stimuli.folds",
    "assign_folds": ".stimuli.folds",
    "above_chance": ".evaluate.chance",
    "score_choices": ".evaluate.choice",
    "summarize_choices": ".evaluate.choice",
    "tally_choices": ".evaluate.choice",
    "ReasoningConfig": ".evaluate.reasoning",
    "evaluate_reasoning": ".evaluate.reasoning",
    "TheoryOfMindConfig": ".evaluate.theory_of_mind",
    "evaluate_theory_of_mind": ".evaluate.theory_of_mind",
    "last_location_pattern": ".evaluate.theory_of_mind",
    "ChoiceItem": ".stimuli.choice_items",
    "ChoiceSet": ".stimuli.choice_items",
    "load_choice_items": ".stimuli.choice_items",
    "render_prompt": ".stimuli.choice_items",
    "make_false_belief_items": ".stimuli.false_belief",
    "make_reasoning_items": ".stimuli.reasoning_items",
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
    "iter_answer_attributions": ".localize.attribution", "record_answer_attributions": ".localize.attribution",
    "Localizer": ".localize.localizer",
    "SCORES": ".localize.score_functions", "SCORE_ALIASES": ".localize.score_functions",
    "Scores": ".localize.score_functions",
    "register_score": ".localize.score_functions",
    "MicroBatcher": ".models.batching",
    "BatchContext": ".models.hooks", "HookContext": ".models.hooks", "batch_context": ".models.hooks",
    "hooks": ".models.hooks", "record": ".models.hooks", "run_forward": ".models.hooks",
    "Site": ".models.layout", "register_family": ".models.layout",
    "LoadedModel": ".models.loading", "load_model": ".models.loading", "wrap_model": ".models.loading",
    "AlignConfig": ".pipelines.align", "align": ".pipelines.align",
    "AtlasConfig": ".pipelines.atlas", "AtlasResult": ".pipelines.atlas", "atlas": ".pipelines.atlas",
    "LanguageConfig": ".pipelines.language", "run_language": ".pipelines.language",
    "LanguageNetworkConfig": ".pipelines.language_network",
    "run_languages": ".pipelines.languages",
    "MultilingualConfig": ".pipelines.multilingual",
    "LesionConfig": ".pipelines.lesion", "build_benchmarks": ".pipelines.lesion",
    "run_lesion_study": ".pipelines.lesion",
    "lm_eval": ".pipelines.lm_eval",
    "LocalizeConfig": ".pipelines.localize", "run_localize": ".pipelines.localize",
    "PosConfig": ".pipelines.pos", "PosInputs": ".pipelines.pos", "run_pos": ".pipelines.pos",
    "config_from_manifest": ".pipelines.rerun",
    "TaskConfig": ".pipelines.task", "TaskInputs": ".pipelines.task", "run_task": ".pipelines.task",
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
    "LabeledUnits": ".units", "UnitIndex": ".units", "UnitSet": ".units",
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


class _Package(types.ModuleType):
    """Some public names are also subpackages (`lesion`, `record`, `align`): importing the subpackage must
    not replace the function of that name (the import system sets the attribute on the package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
