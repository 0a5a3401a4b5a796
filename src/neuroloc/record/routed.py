"""Reduce `expert` sites, which see only the tokens routed to their expert, all experts of a layer at once.

During the forward pass each expert site leaves its routed rows (and their flat token positions); after
the pass the rows of every expert of a layer are pooled and summed together — a handful of tensor
operations per layer instead of per expert (a layer can have 128 experts). A pooled row is the mean over
the routed tokens of its span (its plan weights renormalised over them); a row no routed token reaches is
absent (`PooledBatch.present`). Token statistics count the texts' own routed tokens (`routed_counts`).
"""

from __future__ import annotations

import torch

from ..models.layout import Site
from .pooling import PoolPlan


class RoutedRows:
    """Routed rows left by expert sites during one forward pass."""

    def __init__(self) -> None:
        self.rows: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, site: Site, value: torch.Tensor, routed: torch.Tensor) -> None:
        """Keep `value`'s rows (batch, tokens, width) at the tokens `routed` (batch, tokens) marks."""
        tokens = routed.reshape(-1).nonzero().flatten()
        self.rows[site] = (value.reshape(-1, value.shape[-1]).index_select(0, tokens), tokens)

    def add_rows(self, site: Site, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Keep routed `rows` (n, width) given with their flat token positions (batch × tokens)."""
        self.rows[site] = (rows, tokens)

    def reduce(self, reduced, plan: PoolPlan | None, own: torch.Tensor, token_stats: bool) -> None:
        """Pooled rows (`features`, `present`) and token statistics of every expert site into `reduced`."""
        groups: dict[tuple, list[Site]] = {}
        for site, (rows, _) in self.rows.items():
            groups.setdefault((site.layer, rows.device, rows.shape[-1]), []).append(site)
        for group in groups.values():
            self._reduce_group(group, reduced, plan, own, token_stats)

    def _reduce_group(self, sites: list[Site], reduced, plan: PoolPlan | None, own: torch.Tensor,
                      token_stats: bool) -> None:
        rows = torch.cat([self.rows[s][0] for s in sites])
        tokens = torch.cat([self.rows[s][1] for s in sites])
        device, width, n_sites = rows.device, rows.shape[-1], len(sites)
        counts = torch.tensor([len(self.rows[s][1]) for s in sites], device=device)
        owner = torch.repeat_interleave(torch.arange(n_sites, device=device), counts)
        batch, length = own.shape
        if token_stats:
            real = own.to(device).reshape(-1)[tokens]
            key = owner * batch + tokens // length
            positive = torch.zeros(n_sites * batch, width, dtype=torch.int64, device=device)
            positive.index_add_(0, key, ((rows > 0) & real[:, None]).long())
            sums = torch.zeros(n_sites * batch, width, dtype=torch.float64, device=device)
            sums.index_add_(0, key, rows.double() * real[:, None])
            positive_sums = torch.zeros(n_sites * batch, width, dtype=torch.float64, device=device)
            positive_sums.index_add_(0, key, rows.double().clamp(min=0) * real[:, None])
            routed = torch.zeros(n_sites * batch, dtype=torch.int64, device=device).index_add_(0, key, real.long())
            for i, site in enumerate(sites):
                part = slice(i * batch, (i + 1) * batch)
                reduced.token_positive[site], reduced.token_sums[site] = positive[part], sums[part]
                reduced.token_positive_sums[site] = positive_sums[part]
                reduced.routed_counts[site] = routed[part]
        if plan is None:
            return
        plan = plan.to(device)
        where = torch.full((n_sites, batch * length), -1, dtype=torch.long, device=device)
        where[owner, tokens] = torch.arange(len(rows), device=device)
        site_of, entry = (where[:, plan.token_rows] >= 0).nonzero(as_tuple=True)
        source = where[site_of, plan.token_rows[entry]]
        key = site_of * plan.n_outputs + plan.output_rows[entry]
        weights = plan.weights[entry]
        pooled = torch.zeros(n_sites * plan.n_outputs, width, dtype=torch.float32, device=device)
        pooled.index_add_(0, key, rows.index_select(0, source).float() * weights[:, None])
        share = torch.zeros(n_sites * plan.n_outputs, dtype=torch.float32, device=device).index_add_(0, key, weights)
        for i, site in enumerate(sites):
            part = slice(i * plan.n_outputs, (i + 1) * plan.n_outputs)
            present = share[part] > 0
            reduced.present[site] = present
            reduced.features[site] = pooled[part][present] / share[part][present, None]
