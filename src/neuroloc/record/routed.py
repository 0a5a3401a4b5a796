"""Reduce `expert` sites, which see only the tokens routed to their expert, all experts of a layer at once.

During the forward pass each expert site leaves its routed rows (and their flat token positions); after
the pass the rows of many experts — every expert of every layer, up to `GROUP_UNITS` units side by side —
are pooled and summed together into one `RoutedGroup`: a handful of tensor operations per group instead of
per expert (a layer can have 128 experts), which the store takes side by side
(`StatsStore.update_stacked`). Memory stays that of the routed rows and of a group's units. A pooled row is the mean over the routed tokens
of its span; a row no routed token reaches is unseen
(`RoutedGroup.seen`, `PooledBatch.present`). Token statistics count the texts' own routed tokens
(`RoutedGroup.routed`, `PooledBatch.routed_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.layout import Site
from .pooling import PoolPlan


GROUP_UNITS = 2**17  # units (sites × width) reduced together: a small model's experts all at once


@dataclass
class RoutedGroup:
    """One batch of expert sites (one width, one device) side by side. `pooled` (sites, rows,
    width): each pooled row's mean over the expert's routed tokens of its span, 0 where `seen` (sites,
    rows) is False; per text j of the batch, `positive`, `sums`, `positive_sums` (sites, texts, width)
    over its counted tokens routed to the expert, `routed` (sites, texts) their count."""

    sites: list[Site]
    pooled: torch.Tensor | None = None
    seen: torch.Tensor | None = None
    positive: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    positive_sums: torch.Tensor | None = None
    routed: torch.Tensor | None = None


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
        """Every expert site's pooled rows and token statistics into `reduced`: its `routed` groups, and
        per site `features` (the seen rows only), `present` and the token statistics."""
        groups: dict[tuple, list[list[Site]]] = {}
        for site in sorted(self.rows):
            rows = self.rows[site][0]
            chunks = groups.setdefault((rows.device, rows.shape[-1]), [[]])
            if (len(chunks[-1]) + 1) * rows.shape[-1] > GROUP_UNITS and chunks[-1]:
                chunks.append([])
            chunks[-1].append(site)
        for sites in (chunk for chunks in groups.values() for chunk in chunks):
            group = self._reduce_group(sites, plan, own, token_stats)
            reduced.routed.append(group)
            for i, site in enumerate(sites):
                if token_stats:
                    reduced.token_positive[site], reduced.token_sums[site] = group.positive[i], group.sums[i]
                    reduced.token_positive_sums[site] = group.positive_sums[i]
                    reduced.routed_counts[site] = group.routed[i]
                if plan is not None:
                    reduced.present[site] = group.seen[i]
                    reduced.features[site] = group.pooled[i][group.seen[i]]

    def _reduce_group(self, sites: list[Site], plan: PoolPlan | None, own: torch.Tensor,
                      token_stats: bool) -> RoutedGroup:
        """Segment sums over the group's rows, each routed to one (site, text) and one (site, pooled row)
        bucket or to a dump bucket (a token not counted, not pooled): no copy of the rows. Per-text
        partial sums are float32 (a text's routed tokens; exact merges in float64 follow)."""
        rows = torch.cat([self.rows[s][0] for s in sites]).float()
        tokens = torch.cat([self.rows[s][1] for s in sites])
        device, width, n_sites = rows.device, rows.shape[-1], len(sites)
        counts = torch.tensor([len(self.rows[s][1]) for s in sites], device=device)
        owner = torch.repeat_interleave(torch.arange(n_sites, device=device), counts)
        batch, length = own.shape
        group = RoutedGroup(sites)
        if token_stats:
            dump = n_sites * batch
            real = own.to(device).reshape(-1)[tokens]
            key = torch.where(real, owner * batch + tokens // length, dump)
            group.positive = _segment(key, (rows > 0).float(), dump).long().view(n_sites, batch, width)
            group.sums = _segment(key, rows, dump).double().view(n_sites, batch, width)
            group.positive_sums = _segment(key, rows.clamp(min=0), dump).double().view(n_sites, batch, width)
            group.routed = torch.bincount(key, minlength=dump + 1)[:dump].view(n_sites, batch)
        if plan is None:
            return group
        plan = plan.to(device)
        outputs = n_sites * plan.n_outputs
        if _one_row_per_token(plan):  # text pooling, most word poolings: each token feeds ≤ 1 pooled row
            pooled_row = torch.full((batch * length,), -1, dtype=torch.long, device=device)
            pooled_row[plan.token_rows] = plan.output_rows
            target = pooled_row[tokens]
            key = torch.where(target >= 0, owner * plan.n_outputs + target, outputs)
            sums = _segment(key, rows, outputs)
        else:  # overlapping spans: every (row, pooled row) pair
            row, entry = _join(tokens, plan.token_rows)
            key = owner[row] * plan.n_outputs + plan.output_rows[entry]
            sums = _segment(key, rows.index_select(0, row), outputs)
        count = torch.bincount(key, minlength=outputs + 1)[:outputs]
        group.pooled = (sums / count.clamp(min=1)[:, None]).view(n_sites, plan.n_outputs, width)
        group.seen = (count > 0).view(n_sites, plan.n_outputs)
        return group


def _segment(key: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Sums of `values` rows by `key` in [0, n]; key n is the dump bucket, dropped."""
    return torch.zeros(n + 1, values.shape[-1], dtype=values.dtype, device=values.device).index_add_(
        0, key, values)[:n]


def _one_row_per_token(plan: PoolPlan) -> bool:
    if plan.token_rows.numel() < 2:
        return True
    ordered = torch.sort(plan.token_rows).values
    return bool((ordered[1:] != ordered[:-1]).all())


def _join(tokens: torch.Tensor, plan_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (row, plan entry) pair whose tokens are equal — a token can feed several pooled rows (word
    spans) or none (padding, a BOS) — in O(rows + entries), whatever the number of sites."""
    sorted_tokens, order = torch.sort(plan_tokens, stable=True)
    low = torch.searchsorted(sorted_tokens, tokens, right=False)
    count = torch.searchsorted(sorted_tokens, tokens, right=True) - low
    row = torch.repeat_interleave(torch.arange(len(tokens), device=tokens.device), count)
    first = torch.repeat_interleave(low - (count.cumsum(0) - count), count)
    return row, order[first + torch.arange(len(row), device=tokens.device)]
