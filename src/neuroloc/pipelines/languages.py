"""Deprecated: the multilingual study is `neuroloc.pipelines.multilingual` (`neuroloc multilingual`,
`neuroloc.run(neuroloc.MultilingualConfig(...), out)`); `run_languages` stays for one release."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from ..models.loading import LoadedModel
from ..runner import RunOptions, run
from ..settings import RunSettings
from ..stimuli.corpora import MultilingualCorpus
from .multilingual import MultilingualConfig, MultilingualResult

__all__ = ["run_languages"]


def run_languages(lm: LoadedModel, corpus: MultilingualCorpus, out_dir: str | Path, *, method: str = "lape",
                  percent: float = 1.0, quantile: float = 0.95, n_identify: int = 300, n_heldout: int = 100,
                  deactivate: bool = True, n_deactivation: int | None = None, n_controls: int = 1,
                  steering: bool = True, steer_mode: str = "mean", n_steer_prompts: int = 8, steer_tokens: int = 24,
                  steer_pairs: Sequence[tuple[str, str]] | None = None, response_only: bool = False,
                  bos: str = "prepend", batch_size: int = 16, seed: int = 0, max_unknown_share: float = 0.05,
                  progress: bool = True, parameters: dict | None = None) -> MultilingualResult:
    """Deprecated (use `neuroloc.run(MultilingualConfig(...), out)`): the multilingual study on `corpus`,
    written into `out_dir` (its counts kept in `out_dir/.checkpoints/` for a rerun, as this function's
    statistics cache did). `parameters` is ignored: the manifest records the config."""
    warnings.warn("run_languages is deprecated; use neuroloc.run(neuroloc.MultilingualConfig(...), out)",
                  DeprecationWarning, stacklevel=2)
    config = MultilingualConfig(
        model=lm.identity.get("spec", "in-memory"), score=method, percent=percent, quantile=quantile,
        n_identify=n_identify, n_heldout=n_heldout, deactivation=deactivate, deactivation_texts=n_deactivation,
        n_controls=n_controls, steering=steering, steer_mode=steer_mode, steer_prompts=n_steer_prompts,
        steer_tokens=steer_tokens, steer_pairs=steer_pairs, response_only=response_only,
        max_unknown_share=max_unknown_share, seed=seed,
        settings=RunSettings(bos=bos, batch_size=batch_size, progress=progress))
    return run(config, out_dir, lm=lm, inputs=config.prepare(corpus),
               options=RunOptions(overwrite=True, keep_checkpoints=True))
