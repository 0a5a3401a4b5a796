"""`neuroloc localize`: fit a Localizer and write units, scores, a per-layer figure and a manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, build_manifest, staged_output
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..report.figures import plot_layer_distribution, save_figure
from ..stimuli.base import StimulusSet


def layer_table(localizer: Localizer) -> pd.DataFrame:
    """Per site and layer: units there and units selected."""
    return pd.DataFrame(localizer.units_.per_layer_counts())


def run_localize(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out_dir: str | Path,
                 *, seed: int = 0, extra_parameters: dict | None = None) -> Localizer:
    """Fit `localizer` on `stimuli` and write its outputs into `out_dir` (all or nothing)."""
    localizer.fit(lm, stimuli)
    with staged_output(out_dir) as staging:
        localizer.save(staging)
        counts = layer_table(localizer)
        title = f"{stimuli.name} localizer: top units per layer ({lm.identity.get('spec')})"
        save_figure(plot_layer_distribution(counts, title=title), staging / "layers.png")
        atomic_write_json(staging / "manifest.json", build_manifest(
            "localize",
            {**localizer.get_params(), "seed": seed, **(extra_parameters or {})},
            model=lm.identity,
            stimuli=localizer.stimuli_ | {"metadata": stimuli.metadata},
            results={"n_selected": len(localizer.units_), "per_site": localizer.units_.counts()},
        ))
    return localizer
