"""`neuroloc localize`: fit a Localizer and write units, scores, a per-layer figure and a manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, build_manifest, staged_output
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..report.figures import plot_layer_distribution, save_figure
from ..stimuli.base import StimulusSet
from ..units import LabeledUnits


def layer_table(localizer: Localizer) -> pd.DataFrame:
    """Per site and layer: units there and units selected (for several labels: selected for any)."""
    units = localizer.units_
    return pd.DataFrame((units.union() if isinstance(units, LabeledUnits) else units).per_layer_counts())


def selection_summary(localizer: Localizer) -> dict:
    """How many units were selected, overall, per site and per label."""
    units = localizer.units_
    if isinstance(units, LabeledUnits):
        union = units.union()
        return {"n_selected": len(union), "per_site": union.counts(),
                "per_label": {label: len(u) for label, u in units.items()}}
    return {"n_selected": len(units), "per_site": units.counts()}


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
            design=localizer.design_.to_dict(),
            mlp_gate=lm.layout.describe()["mlp_gate"],
            results=selection_summary(localizer),
        ))
    return localizer
