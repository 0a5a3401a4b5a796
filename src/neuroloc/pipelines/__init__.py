"""The studies: one config class each (`neuroloc.runner.StudyConfig`), run by `neuroloc.runner.run`.

`STUDIES` names every study's command, the config class that defines it and a one-line summary, without
importing the study modules (so `neuroloc --help` starts fast); `study_config(command)` imports one.
"""

from __future__ import annotations

import importlib

__all__ = ["DEPRECATED_COMMANDS", "STUDIES", "study_config"]

STUDIES: dict[str, tuple[str, str]] = {
    "localize": ("neuroloc.pipelines.localize:LocalizeConfig",
                 "Localize selective units: score every unit on a design, keep the most selective."),
    "lesion": ("neuroloc.pipelines.lesion:LesionConfig",
               "Lesion units and matched controls; evaluate benchmarks."),
    "language-network": ("neuroloc.pipelines.language_network:LanguageNetworkConfig",
                         "The language network end to end: localize, lesion against controls, report."),
    "align": ("neuroloc.pipelines.align:AlignConfig",
              "Brain alignment: encoding scores of units vs matched random units, layers, confounds, ceiling."),
    "task": ("neuroloc.pipelines.task:TaskConfig",
             "Task neurons: score units per label of prompt–answer data, intervene, build the effect matrix."),
    "pos": ("neuroloc.pipelines.pos:PosConfig",
            "Key neurons for parts of speech: attribute, select per class, probe on fresh text, lesion."),
    "multilingual": ("neuroloc.pipelines.multilingual:MultilingualConfig",
                     "Language-specific, -related and -agnostic units; deactivation matrix; steering."),
    "atlas": ("neuroloc.pipelines.atlas:AtlasConfig",
              "Every network on one model: localize each, their overlaps, the double-dissociation matrix."),
}

# Old command names kept for one release: old name → new name.
DEPRECATED_COMMANDS: dict[str, str] = {"run language": "language-network", "languages": "multilingual"}


def study_config(command: str):
    """The config class of a study command (imports its module)."""
    module, _, name = STUDIES[command][0].partition(":")
    return getattr(importlib.import_module(module), name)
