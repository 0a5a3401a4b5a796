"""`neuroloc localize`: fit a Localizer and write units, scores, a per-layer figure and a manifest.

The recording checkpoints its statistics every few batches into `out/.checkpoints/` (a rerun with the
same model, data and parameters resumes, or reuses a finished recording), and under `torchrun` /
`accelerate launch` each rank records a shard of the stimuli and rank 0 merges the statistics and writes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, build_manifest, staged_output
from ..localize.localizer import Localizer
from ..models.loading import LoadedModel
from ..record.checkpoint import Checkpoint, checkpoint_key, model_fingerprint
from ..record.distributed import DistContext, merge_across_ranks, shard_stimuli
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


def recording_checkpoint(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out_dir: str | Path,
                         ctx: DistContext, every: int) -> Checkpoint:
    """This rank's checkpoint, keyed by the content of everything the statistics depend on."""
    parameters = {k: v for k, v in localizer.get_params().items() if k != "progress"}
    key = checkpoint_key(model=model_fingerprint(lm.model), identity=lm.identity, data=stimuli.content_hash(),
                         parameters=parameters, world=[ctx.rank, ctx.world_size])
    return Checkpoint(out_dir, key, every=every, name=f"stats-rank{ctx.rank}")


def run_localize(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out_dir: str | Path,
                 *, seed: int = 0, extra_parameters: dict | None = None, checkpoint_every: int | None = 20,
                 dist: DistContext | None = None) -> Localizer:
    """Fit `localizer` on `stimuli` and write its outputs into `out_dir` (all or nothing). With several
    ranks each records a share of the stimuli, every rank gets the same fitted localizer, rank 0 writes.
    `checkpoint_every` batches the statistics are saved (None: never)."""
    ctx = dist or DistContext.from_env()
    checkpoint = (recording_checkpoint(lm, stimuli, localizer, out_dir, ctx, checkpoint_every)
                  if checkpoint_every else None)
    stats = merge_across_ranks(localizer.record(lm, shard_stimuli(stimuli, ctx), checkpoint=checkpoint), ctx)
    localizer.fit_recorded(lm, stimuli, stats)  # on every rank: the next stage may shard lesion conditions
    if ctx.is_main:
        _write(lm, stimuli, localizer, out_dir, seed, extra_parameters, world_size=ctx.world_size)
    ctx.barrier()
    return localizer


def _write(lm: LoadedModel, stimuli: StimulusSet, localizer: Localizer, out_dir: str | Path, seed: int,
           extra_parameters: dict | None, world_size: int) -> None:
    with staged_output(out_dir) as staging:
        localizer.save(staging)
        counts = layer_table(localizer)
        title = f"{stimuli.name} localizer: top units per layer ({lm.identity.get('spec')})"
        save_figure(plot_layer_distribution(counts, title=title), staging / "layers.png")
        atomic_write_json(staging / "manifest.json", build_manifest(
            "localize",
            {**localizer.get_params(), "seed": seed, "world_size": world_size, **(extra_parameters or {})},
            model=lm.identity,
            stimuli=localizer.stimuli_ | {"metadata": stimuli.metadata},
            design=localizer.design_.to_dict(),
            mlp_gate=lm.layout.describe()["mlp_gate"],
            results=selection_summary(localizer),
        ))
