"""Feature matrices: for each stimulus, the model's pooled activations at chosen sites or units.

The one public way to get a stimuli × units matrix (for encoding models, probes, RSA). Texts stream
through `Recorder.iter_batches` (batched, length-sorted) and rows are put back in stimulus order.
With `context`, each stimulus is read after the preceding stimuli of its passage (brain-score reads
passages cumulatively) and only the current stimulus's tokens are pooled: its last token ("last")
or the mean over its own tokens ("mean"; a BOS token is never among them, with or without context).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..interrupts import Interrupted, protected
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..units import UnitSet
from .checkpoint import Checkpoint
from .recorder import Recorder

CONTEXT_SEPARATOR = " "
log = logging.getLogger(__name__)


@dataclass
class Features:
    """Pooled activations per site, (n_stimuli, width) float32 on the CPU, rows in stimulus order."""

    values: dict[Site, torch.Tensor]

    @property
    def sites(self) -> list[Site]:
        return list(self.values)

    @property
    def n_stimuli(self) -> int:
        return next(iter(self.values.values())).shape[0]

    def site(self, site: Site | str) -> torch.Tensor:
        site = site if isinstance(site, Site) else Site.parse(site)
        if site not in self.values:
            raise NeurolocError(f"site {site.name} was not recorded; recorded: {[s.name for s in self.values]}")
        return self.values[site]

    def layer(self, layer: int, kinds: Iterable[str] | None = None) -> torch.Tensor:
        """Every unit of one layer (the listed kinds, or all recorded ones), side by side."""
        picked = [s for s in self.values if s.layer == layer and (kinds is None or s.kind in kinds)]
        if not picked:
            raise NeurolocError(f"layer {layer} was not recorded")
        return torch.cat([self.values[s] for s in picked], dim=1)

    def units(self, units: UnitSet) -> torch.Tensor:
        """The columns of the units in `units` (sites in UnitSet order, units by index)."""
        columns = []
        for site, mask in units.masks.items():
            if not mask.any():
                continue
            values = self.site(site)
            if values.shape[1] != mask.numel():
                raise NeurolocError(f"site {site.name}: the UnitSet has width {mask.numel()} but the model "
                                    f"{values.shape[1]}; were the units localized in this model?")
            columns.append(values[:, mask])
        if not columns:
            raise NeurolocError("the UnitSet selects no units")
        return torch.cat(columns, dim=1)

    def all(self) -> torch.Tensor:
        return torch.cat(list(self.values.values()), dim=1)


def _context_texts(texts: Sequence[str], passages: Sequence[str], positions: Sequence[int] | None,
                   max_context: int | None) -> tuple[list[str], list[tuple[int, int]]]:
    """Each stimulus preceded by the earlier stimuli of its passage (the last `max_context` of them when
    given), and the character span of its own text."""
    order = sorted(range(len(texts)), key=lambda i: (positions[i] if positions is not None else i, i))
    read_so_far: dict[str, list[str]] = {}
    full, spans = [""] * len(texts), [(0, 0)] * len(texts)
    for i in order:
        earlier = read_so_far.setdefault(passages[i], [])
        kept = earlier if max_context is None else earlier[len(earlier) - max_context:] if max_context else []
        prefix = CONTEXT_SEPARATOR.join(kept + [""]) if kept else ""
        full[i] = prefix + texts[i]
        spans[i] = (len(prefix), len(full[i]))
        earlier.append(texts[i])
    return full, spans


class _Rows:
    """The feature rows filled so far, as a checkpointable statistic (`state_dict` / `load_state_dict`)."""

    def __init__(self, values: dict[Site, torch.Tensor]) -> None:
        self.values = values

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {site.name: value for site, value in self.values.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for site, value in self.values.items():
            value.copy_(state[site.name])


def extract_features(lm: LoadedModel, texts: Sequence[str], sites: Site | str | Sequence[Site | str] | UnitSet, *,
                     pooling: str = "last", passages: Sequence[str] | None = None,
                     positions: Sequence[int] | None = None, max_context: int | None = None, batch_size: int,
                     bos: str, max_tokens: int | None = None, progress: bool = False,
                     checkpoint: Checkpoint | None = None) -> Features:
    """Pooled activations of `sites` (a Site, its name, a list, a kind such as "residual" for every
    layer, or a UnitSet's sites) for each text; with `passages`, each text is read in the context of
    the earlier texts of its passage (ordered by `positions`, else by appearance). With a `checkpoint`,
    rows already recorded are restored and the rest are saved as they come (and when interrupted)."""
    if pooling not in ("last", "mean"):
        raise NeurolocError(f"feature pooling must be 'last' or 'mean', got {pooling!r}")
    if isinstance(sites, UnitSet):
        wanted = sites.sites
    elif isinstance(sites, str) and "." not in sites:
        wanted = lm.layout.sites(sites)
    else:
        wanted = [sites] if isinstance(sites, (Site, str)) else list(sites)
        wanted = [s if isinstance(s, Site) else Site.parse(s) for s in wanted]
    texts = list(texts)
    spans = [[(0, len(text))] for text in texts]  # pool the text's own tokens (never a BOS) in every mode
    if passages is not None:
        if len(passages) != len(texts) or (positions is not None and len(positions) != len(texts)):
            raise NeurolocError(f"{len(texts)} texts but {len(passages)} passages/positions")
        if max_tokens is not None:
            raise NeurolocError("max_tokens would cut the current stimulus off its context; leave it unset")
        if max_context is not None and max_context < 0:
            raise NeurolocError(f"max_context must be ≥ 0, got {max_context}")
        texts, own = _context_texts(texts, [str(p) for p in passages], positions, max_context)
        spans = [[span] for span in own]
    recorder = Recorder(lm, wanted, pooling=f"word-{pooling}", batch_size=batch_size,
                        max_tokens=max_tokens, bos=bos, progress=progress, description="features")
    values = {s: torch.zeros(len(texts), lm.layout.width(s), dtype=torch.float32) for s in recorder.sites}
    seen = np.zeros(len(texts), dtype=bool)
    rows_so_far = _Rows(values)
    if checkpoint is not None:  # resume: the rows of the stimuli done before are restored
        seen = checkpoint.restore(rows_so_far, len(texts)).numpy().copy()
        if checkpoint.resumed_from:
            log.warning("%s: resuming from %d/%d stimuli (checkpoint %s)", recorder.description,
                        checkpoint.resumed_from, len(texts), checkpoint.path)
    pending = [i for i in range(len(texts)) if not seen[i]]
    try:
        batches = recorder.iter_batches([texts[i] for i in pending], [spans[i] for i in pending],
                                        completed=len(texts) - len(pending), total=len(texts)) if pending else []
        for batch in batches:
            with protected():  # a batch's rows are stored and marked done, or neither
                rows = torch.tensor([pending[text] for text, _ in batch.rows])
                seen[rows.numpy()] = True
                for site, pooled in batch.features.items():
                    values[site][rows] = pooled.float().cpu()
                if checkpoint is not None:
                    checkpoint.step(rows_so_far, sorted(set(rows.tolist())))
    except Interrupted:
        if checkpoint is not None and checkpoint.done.any():
            with protected():
                checkpoint.save(rows_so_far)
        raise
    if checkpoint is not None and pending:
        with protected():
            checkpoint.save(rows_so_far)
    if not seen.all():
        raise NeurolocError(f"stimulus {int(np.flatnonzero(~seen)[0])} produced no features")
    return Features(values)
