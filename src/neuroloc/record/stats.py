"""Streaming statistics behind one protocol, composed in one store keyed by (kind, label, site).

Every statistic implements `update`, an exact `merge`, `state_dict` / `load_state_dict` and `to(device)`,
so the same objects serve batching, resuming a run and merging the work of several processes. They stay
on the device they are computed on until read. Kinds:

- `moments`: count, mean and M2 of pooled rows (x and |x|; Welford updates, Chan et al. merges) and the
  count of rows with x > 0, in float64;
- `tokens`: over every counted token (every real token, or a text's part: a response after its prompt),
  the token count, the count of activations > 0 (LAPE's activation probability), the activation sum (unit
  means for mean lesions) and the sum of positive parts (means when active: steering values);
- `rows`: the pooled rows themselves, for scores that are not functions of sums (average precision);
  bounded by `ROWS_LIMIT_BYTES` with an error that says how to stay under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import torch
from safetensors.torch import load_file, save_file

from ..errors import NeurolocError
from ..io import atomic_path

ROWS_LIMIT_BYTES = 4 * 2**30


@runtime_checkable
class Stat(Protocol):
    """The protocol every streaming statistic follows."""

    def merge(self, other: "Stat") -> "Stat": ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def to(self, device: torch.device | str) -> "Stat": ...


def _chan(n_a: int, mean_a: torch.Tensor, m2_a: torch.Tensor, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor):
    """Chan et al.'s exact merge of two (n, mean, M2) summaries."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta.square() * (n_a * n_b / n)


def _same_n(parts: Sequence) -> None:
    if len({p.n for p in parts}) > 1:
        raise ValueError(f"cannot put side by side statistics of {sorted({p.n for p in parts})} observations")


def concat_fields(cls: type, parts: Sequence):
    """`concat` of a statistic made of a count `n` and per-unit tensors named in `cls.FIELDS`."""
    _same_n(parts)
    joined = cls(0)
    joined.n = parts[0].n
    device = getattr(parts[0], cls.FIELDS[0]).device
    for f in cls.FIELDS:
        setattr(joined, f, torch.cat([getattr(p, f).to(device) for p in parts]))
    return joined


def split_fields(stat, widths: Sequence[int]) -> list:
    """`split` of such a statistic: one per block of `widths` units, each with its own memory."""
    parts = [type(stat)(0) for _ in widths]
    for f in stat.FIELDS:
        for part, piece in zip(parts, getattr(stat, f).split(list(widths))):
            setattr(part, f, piece.clone())
    for part in parts:
        part.n = stat.n
    return parts


class NonFiniteActivations(NeurolocError):
    """Activations with NaN or inf: never averaged in silently."""


def _check_finite(x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(-1, x.shape[-1]).any(0).sum())
        raise NonFiniteActivations(
            f"non-finite activations (NaN or inf) in {bad} units: the model overflowed; try --dtype float32"
        )


def _name_sites(error: NonFiniteActivations, sites: Sequence[str], widths: Sequence[int], values) -> NeurolocError:
    """The same error, naming the sites whose units were not finite."""
    bad = []
    for value in values:
        if torch.is_tensor(value) and value.is_floating_point() and value.shape[-1] == sum(widths):
            for site, part in zip(sites, value.split(list(widths), dim=-1)):
                count = int((~torch.isfinite(part)).reshape(-1, part.shape[-1]).any(0).sum())
                if count and site not in [b for b, _ in bad]:
                    bad.append((site, count))
    where = ", ".join(f"{site} ({count} unit{'s' if count != 1 else ''})" for site, count in bad) or "?"
    return NonFiniteActivations(f"non-finite activations (NaN or inf) at {where}: the model overflowed or emits "
                                "NaN; they are never averaged in; try --dtype float32")


class Moments:
    """Per-unit count, mean and M2 of x and of |x|, and the count of x > 0, over pooled rows."""

    FIELDS = ("mean", "m2", "abs_mean", "abs_m2", "positive")

    def __init__(self, width: int, device: torch.device | str | None = None) -> None:
        self.n = 0
        zeros = lambda dtype: torch.zeros(width, dtype=dtype, device=device)  # noqa: E731
        self.mean, self.m2 = zeros(torch.float64), zeros(torch.float64)
        self.abs_mean, self.abs_m2 = zeros(torch.float64), zeros(torch.float64)
        self.positive = zeros(torch.int64)

    @property
    def width(self) -> int:
        return self.mean.numel()

    def update(self, values: torch.Tensor) -> "Moments":
        """Add a batch of rows (rows, width), on the device they come from."""
        if values.ndim != 2 or values.shape[1] != self.width:
            raise ValueError(f"expected (rows, {self.width}) activations, got {tuple(values.shape)}")
        if values.shape[0] == 0:
            return self
        x = values.detach().to(self.mean.device, torch.float64)
        _check_finite(x)
        mean, absolute = x.mean(0), x.abs()
        abs_mean = absolute.mean(0)
        self._fold(x.shape[0], mean, (x - mean).square().sum(0), abs_mean, (absolute - abs_mean).square().sum(0),
                   (x > 0).sum(0))
        return self

    def _fold(self, n_b, mean_b, m2_b, abs_mean_b, abs_m2_b, positive_b) -> None:
        if self.n == 0:
            self.mean, self.m2 = mean_b.clone(), m2_b.clone()
            self.abs_mean, self.abs_m2 = abs_mean_b.clone(), abs_m2_b.clone()
        else:
            self.mean, self.m2 = _chan(self.n, self.mean, self.m2, n_b, mean_b, m2_b)
            self.abs_mean, self.abs_m2 = _chan(self.n, self.abs_mean, self.abs_m2, n_b, abs_mean_b, abs_m2_b)
        self.positive = self.positive + positive_b.to(self.positive.device)
        self.n += n_b

    def merge(self, other: "Moments") -> "Moments":
        """Fold another accumulator in (exact up to float64 rounding); returns self."""
        if other.width != self.width:
            raise ValueError(f"cannot merge accumulators of widths {self.width} and {other.width}")
        if other.n:
            device = self.mean.device
            self._fold(other.n, *(getattr(other, f).to(device) for f in self.FIELDS))
        return self

    @classmethod
    def concat(cls, parts: Sequence["Moments"]) -> "Moments":
        """Side by side (one accumulator over every part's units); the parts must have seen the same rows."""
        return concat_fields(cls, parts)

    def split(self, widths: Sequence[int]) -> list["Moments"]:
        """The inverse of `concat`: one accumulator per block of `widths` units (own memory each)."""
        return split_fields(self, widths)

    def variance(self, absolute: bool = False) -> torch.Tensor:
        """Unbiased variance per unit."""
        return (self.abs_m2 if absolute else self.m2) / max(self.n - 1, 1)

    def activation_probability(self) -> torch.Tensor:
        """Fraction of pooled rows with activation > 0."""
        return self.positive.double() / max(self.n, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor(self.n), **{f: getattr(self, f) for f in self.FIELDS}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.n = int(state["n"])
        for f in self.FIELDS:
            setattr(self, f, state[f].clone().to(self.mean.device))

    def to(self, device: torch.device | str) -> "Moments":
        for f in self.FIELDS:
            setattr(self, f, getattr(self, f).to(device))
        return self


class TokenStats:
    """Over every counted token of the texts seen: the token count, per unit the count of activations > 0
    (LAPE's activation probability), the sum of activations (unit means for mean lesions) and the sum of
    their positive parts (with the count, each unit's mean activation when active: steering values)."""

    FIELDS = ("positive", "sum", "positive_sum")

    def __init__(self, width: int, device: torch.device | str | None = None) -> None:
        self.n = 0
        self.positive = torch.zeros(width, dtype=torch.int64, device=device)
        self.sum = torch.zeros(width, dtype=torch.float64, device=device)
        self.positive_sum = torch.zeros(width, dtype=torch.float64, device=device)

    @property
    def width(self) -> int:
        return self.sum.numel()

    def update(self, n_tokens: int, positive: torch.Tensor, sums: torch.Tensor,
               positive_sums: torch.Tensor) -> "TokenStats":
        """Add `n_tokens` tokens whose per-unit counts of x > 0, sums of x and sums of max(x, 0) are given
        (width,)."""
        if any(v.shape != (self.width,) for v in (positive, sums, positive_sums)):
            raise ValueError(f"expected per-unit vectors of width {self.width}, got {tuple(positive.shape)}, "
                             f"{tuple(sums.shape)} and {tuple(positive_sums.shape)}")
        _check_finite(sums)
        self.n += int(n_tokens)
        self.positive += positive.to(self.positive.device, torch.int64)
        self.sum += sums.to(self.sum.device, torch.float64)
        self.positive_sum += positive_sums.to(self.positive_sum.device, torch.float64)
        return self

    def merge(self, other: "TokenStats") -> "TokenStats":
        """Counts and sums add exactly."""
        return self.update(other.n, other.positive, other.sum, other.positive_sum)

    @classmethod
    def concat(cls, parts: Sequence["TokenStats"]) -> "TokenStats":
        """Side by side; the parts must have seen the same tokens."""
        return concat_fields(cls, parts)

    def split(self, widths: Sequence[int]) -> list["TokenStats"]:
        return split_fields(self, widths)

    def activation_probability(self) -> torch.Tensor:
        """Fraction of tokens on which each unit's activation is > 0 (Tang et al.'s LAPE input)."""
        return self.positive.double() / max(self.n, 1)

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)

    def mean_when_active(self) -> torch.Tensor:
        """Each unit's mean activation over the tokens where it is > 0 (0 for a unit never active)."""
        return self.positive_sum / self.positive.clamp(min=1).double()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor(self.n), **{f: getattr(self, f) for f in self.FIELDS}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict()`; statistics saved before neuroloc summed positive parts have NaN
        there (unknown, never a silent zero)."""
        self.n = int(state["n"])
        self.positive = state["positive"].clone().to(self.sum.device)
        self.sum = state["sum"].clone().to(self.sum.device)
        self.positive_sum = (state["positive_sum"].clone().to(self.sum.device) if "positive_sum" in state
                             else torch.full_like(self.sum, float("nan")))

    def to(self, device: torch.device | str) -> "TokenStats":
        for f in self.FIELDS:
            setattr(self, f, getattr(self, f).to(device))
        return self


class Rows:
    """The pooled rows themselves (float32), for scores that need every stimulus's value.

    Not a sufficient statistic: memory grows with the stimuli, so it is bounded by `limit_bytes` over all
    `Rows` of a store (checked by the store) and raises a clear error beyond it.
    """

    def __init__(self, width: int, device: torch.device | str | None = None) -> None:
        self.parts: list[torch.Tensor] = []
        self._width = width
        self._device = device

    @property
    def width(self) -> int:
        return self._width

    @property
    def n(self) -> int:
        return sum(p.shape[0] for p in self.parts)

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parts)

    def update(self, values: torch.Tensor) -> "Rows":
        if values.ndim != 2 or values.shape[1] != self.width:
            raise ValueError(f"expected (rows, {self.width}) activations, got {tuple(values.shape)}")
        _check_finite(values)
        self.parts.append(values.detach().to(self._device or values.device, torch.float32))
        return self

    def values(self) -> torch.Tensor:
        """All rows, in the order they arrived: (n, width)."""
        return torch.cat(self.parts) if self.parts else torch.zeros(0, self.width)

    @classmethod
    def concat(cls, parts: Sequence["Rows"]) -> "Rows":
        """Side by side; the parts must hold the same rows."""
        _same_n(parts)
        joined = cls(sum(p.width for p in parts), parts[0]._device)
        if parts[0].n:
            joined.parts = [torch.cat([p.values().to(parts[0].parts[0].device) for p in parts], dim=1)]
        return joined

    def split(self, widths: Sequence[int]) -> list["Rows"]:
        parts = [Rows(w, self._device) for w in widths]
        if self.n:
            for part, piece in zip(parts, self.values().split(list(widths), dim=1)):
                part.parts = [piece.clone()]
        return parts

    def merge(self, other: "Rows") -> "Rows":
        """Concatenation: exact."""
        self.parts.extend(p.to(self._device or p.device) for p in other.parts)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rows": self.values()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.parts = [state["rows"].clone()] if state["rows"].shape[0] else []

    def to(self, device: torch.device | str) -> "Rows":
        self._device = device
        self.parts = [p.to(device) for p in self.parts]
        return self


class _Stacked:
    """Per-site statistics of one kind (`PART`) side by side: a count per site `n` (sites,) and each of
    `PART.FIELDS` as (sites, width); `of` stacks per-site accumulators, `split` gives them back."""

    PART: type
    FIELDS: tuple[str, ...]

    @classmethod
    def of(cls, parts: Sequence[Any]) -> "_Stacked":
        """Per-site accumulators stacked (their own memory stays theirs)."""
        device = getattr(parts[0], cls.FIELDS[0]).device
        stacked = cls(0, 0)
        stacked.n = torch.tensor([p.n for p in parts], dtype=torch.int64, device=device)
        for f in cls.FIELDS:
            setattr(stacked, f, torch.stack([getattr(p, f).to(device) for p in parts]))
        return stacked

    def split(self, widths: Sequence[int]) -> list[Any]:
        parts = []
        for i, count in enumerate(self.n.tolist()):
            part = self.PART(0)
            part.n = count
            for f in self.FIELDS:
                setattr(part, f, getattr(self, f)[i].clone())
            parts.append(part)
        return parts


class StackedMoments(_Stacked):
    """`Moments` of several sites of one width side by side, each over its own rows — expert sites, each of
    which sees only its routed tokens: a count per site (sites,) and fields (sites, width); updated with
    all sites' rows at once and merged exactly (Chan et al., per site); `split` gives each site's `Moments`."""

    PART = Moments
    FIELDS = Moments.FIELDS

    def __init__(self, n_sites: int, width: int, device: torch.device | str | None = None) -> None:
        self.n = torch.zeros(n_sites, dtype=torch.int64, device=device)
        zeros = lambda dtype: torch.zeros(n_sites, width, dtype=dtype, device=device)  # noqa: E731
        self.mean, self.m2 = zeros(torch.float64), zeros(torch.float64)
        self.abs_mean, self.abs_m2 = zeros(torch.float64), zeros(torch.float64)
        self.positive = zeros(torch.int64)

    def update(self, values: torch.Tensor, seen: torch.Tensor) -> "StackedMoments":
        """Add rows (sites, rows, width) of which `seen` (sites, rows) marks each site's own. The batch's
        own moments (a few rows per site) are taken in float32, then merged in float64, exactly per site."""
        seen = seen.to(values.device)
        x = torch.where(seen[..., None], values.detach().float(), 0.0)
        count = seen.sum(1)
        per = count.clamp(min=1).to(torch.float32)[:, None]
        weight = seen[..., None].to(torch.float32)
        mean = x.sum(1) / per
        absolute = x.abs()
        abs_mean = absolute.sum(1) / per
        m2 = ((x - mean[:, None]) * weight).square().sum(1)
        abs_m2 = ((absolute - abs_mean[:, None]) * weight).square().sum(1)
        _check_finite(m2)  # a NaN or inf among the rows reaches their sums
        device = self.mean.device
        count = count.to(device)
        mean, m2, abs_mean, abs_m2 = (v.to(device, torch.float64) for v in (mean, m2, abs_mean, abs_m2))
        n = self.n + count
        share = (count.to(torch.float64) / n.clamp(min=1))[:, None]
        cross = (self.n.to(torch.float64) * count / n.clamp(min=1))[:, None]
        delta, abs_delta = mean - self.mean, abs_mean - self.abs_mean
        self.mean, self.m2 = self.mean + delta * share, self.m2 + m2 + delta.square() * cross
        self.abs_mean, self.abs_m2 = self.abs_mean + abs_delta * share, self.abs_m2 + abs_m2 + abs_delta.square() * cross
        self.positive = self.positive + (x > 0).sum(1).to(device)
        self.n = n
        return self

class StackedTokens(_Stacked):
    """`TokenStats` of several sites of one width side by side, each over its own tokens (expert sites):
    counts (sites,), fields (sites, width); `split` gives each site's `TokenStats`."""

    PART = TokenStats
    FIELDS = TokenStats.FIELDS

    def __init__(self, n_sites: int, width: int, device: torch.device | str | None = None) -> None:
        self.n = torch.zeros(n_sites, dtype=torch.int64, device=device)
        self.positive = torch.zeros(n_sites, width, dtype=torch.int64, device=device)
        self.sum = torch.zeros(n_sites, width, dtype=torch.float64, device=device)
        self.positive_sum = torch.zeros(n_sites, width, dtype=torch.float64, device=device)

    def update(self, n_tokens: torch.Tensor, positive: torch.Tensor, sums: torch.Tensor,
               positive_sums: torch.Tensor) -> "StackedTokens":
        """Add per site (sites,) token counts and (sites, width) counts of x > 0, sums and positive sums."""
        _check_finite(sums)
        device = self.sum.device
        self.n = self.n + n_tokens.to(device, torch.int64)
        self.positive = self.positive + positive.to(device, torch.int64)
        self.sum = self.sum + sums.to(device, torch.float64)
        self.positive_sum = self.positive_sum + positive_sums.to(device, torch.float64)
        return self

STACKED_KINDS: dict[str, type] = {"moments": StackedMoments, "tokens": StackedTokens}


STAT_KINDS: dict[str, type] = {"moments": Moments, "tokens": TokenStats, "rows": Rows}


def _stat_class(kind: str) -> type:
    if kind not in STAT_KINDS:
        raise NeurolocError(f"unknown statistic kind {kind!r}; choose from {', '.join(STAT_KINDS)}")
    return STAT_KINDS[kind]


class StatsStore:
    """Every statistic of a recording, keyed by (kind, label, site name); itself a `Stat`.

    Labels are the stimulus conditions (sentences / non-words; languages; relations), listed sorted, so
    the order never depends on how batches arrived. `update_sites` takes one batch of many sites at once
    and keeps them in one side-by-side statistic ("block"), so a recording of 30 layers costs a handful
    of tensor operations per batch instead of hundreds (on a GPU, kernel launches dominate a small
    model's step); blocks are split into per-site statistics whenever the store is read, saved or merged.
    """

    def __init__(self, rows_limit_bytes: int = ROWS_LIMIT_BYTES) -> None:
        self._entries: dict[tuple[str, str, str], Moments | TokenStats | Rows] = {}
        self._blocks: dict[tuple[str, str, tuple[str, ...]], tuple[tuple[int, ...], Moments | TokenStats | Rows]] = {}
        self.rows_limit_bytes = rows_limit_bytes

    @property
    def entries(self) -> dict[tuple[str, str, str], Moments | TokenStats | Rows]:
        """(kind, label, site) → statistic."""
        self._split_blocks()
        return self._entries

    # -- updating ------------------------------------------------------------------------------------
    def entry(self, kind: str, label: str, site: str, width: int, device: torch.device | str | None = None):
        """The statistic at a key, created empty on first use."""
        key = (kind, label, site)
        entries = self.entries
        if key not in entries:
            entries[key] = _stat_class(kind)(width, device)
        return entries[key]

    def update(self, kind: str, label: str, site: str, *values) -> None:
        """Route a batch to the statistic at (kind, label, site)."""
        first = values[-1]
        try:
            self.entry(kind, label, site, first.shape[-1], first.device).update(*values)
        except NonFiniteActivations as error:
            raise _name_sites(error, [site], [first.shape[-1]], values) from None
        if kind == "rows":
            self._check_rows()

    def update_sites(self, kind: str, label: str, sites: Sequence[str], widths: Sequence[int], *values) -> None:
        """Route one batch of several sites at once: `values` hold the sites' units side by side (in
        `sites` order, `widths` units each), as `update` takes them for one site."""
        key = (kind, label, tuple(sites))
        if key not in self._blocks:
            if any(k == kind and lab == label and set(other) & set(sites) for k, lab, other in self._blocks):
                self._split_blocks()  # another block holds some of these sites
            present = [(kind, label, site) in self._entries for site in sites]
            if any(present):  # resumed, read before, or recorded with other sites
                if not all(present) or len({self._entries[(kind, label, s)].n for s in sites}) > 1:
                    self._update_each(kind, label, sites, widths, values)  # cannot go side by side
                    return
                parts = [self._entries.pop((kind, label, site)) for site in sites]
                block = _stat_class(kind).concat(parts)
            else:
                block = _stat_class(kind)(sum(widths), values[-1].device)
            self._blocks[key] = (tuple(widths), block)
        try:
            self._blocks[key][1].update(*values)
        except NonFiniteActivations as error:
            raise _name_sites(error, sites, widths, values) from None
        if kind == "rows":
            self._check_rows()

    def update_stacked(self, kind: str, label: str, sites: Sequence[str], *values) -> None:
        """Route one batch of several sites of one width, each seeing its own rows or tokens (expert sites):
        `values` as `StackedMoments.update` (rows (sites, rows, width) and which are each site's) or
        `StackedTokens.update` (per-site counts and sums) take them. Kept stacked until the store is read."""
        if kind not in STACKED_KINDS:
            raise NeurolocError(f"statistic kind {kind!r} cannot be stacked; choose from {', '.join(STACKED_KINDS)}")
        key = (kind, label, tuple(sites))
        if key not in self._blocks:
            if any(k == kind and lab == label and set(other) & set(sites) for k, lab, other in self._blocks):
                self._split_blocks()
            like = values[0] if kind == "moments" else values[-1]  # (sites, ..., width)
            width, device = like.shape[-1], like.device
            parts = [self._entries.pop((kind, label, site), None) for site in sites]
            if any(p is not None for p in parts):  # resumed, read before: carried on side by side
                parts = [p if p is not None else _stat_class(kind)(width, device) for p in parts]
                block = STACKED_KINDS[kind].of(parts)
            else:
                block = STACKED_KINDS[kind](len(sites), width, device)
            self._blocks[key] = ((width,) * len(sites), block)
        try:
            self._blocks[key][1].update(*values)
        except NonFiniteActivations as error:
            raise NonFiniteActivations(f"{error} (at one of {', '.join(sites[:3])}{', ...' if len(sites) > 3 else ''})") \
                from None

    def _update_each(self, kind: str, label: str, sites: Sequence[str], widths: Sequence[int], values) -> None:
        pieces = [v.split(list(widths), dim=-1) if torch.is_tensor(v) else [v] * len(sites) for v in values]
        for i, site in enumerate(sites):
            self.update(kind, label, site, *(piece[i] for piece in pieces))

    def _split_blocks(self) -> None:
        for (kind, label, sites), (widths, block) in self._blocks.items():
            for site, part in zip(sites, block.split(widths)):
                self._entries[(kind, label, site)] = part
        self._blocks = {}

    def _check_rows(self) -> None:
        stats = list(self._entries.values()) + [block for _, block in self._blocks.values()]
        used = sum(e.nbytes for e in stats if isinstance(e, Rows))
        if used > self.rows_limit_bytes:
            raise NeurolocError(
                f"the per-stimulus rows needed by this score take {used / 2**30:.1f} GiB, above the "
                f"{self.rows_limit_bytes / 2**30:.1f} GiB limit: restrict --site or --layers, or use fewer stimuli"
            )

    def restricted(self, sites: Iterable[str]) -> "StatsStore":
        """A store with only the statistics of `sites` (shared, not copied)."""
        keep = set(sites)
        kept = StatsStore(self.rows_limit_bytes)
        kept._entries = {key: entry for key, entry in self.entries.items() if key[2] in keep}
        return kept

    # -- reading -------------------------------------------------------------------------------------
    def get(self, kind: str, label: str, site: str):
        try:
            return self.entries[(kind, label, site)]
        except KeyError:
            raise NeurolocError(f"no {kind} statistics for condition {label!r} at site {site}") from None

    def has(self, kind: str) -> bool:
        return any(k[0] == kind for k in self.entries)

    def labels(self, kind: str | None = None) -> list[str]:
        return sorted({label for k, label, _ in self.entries if kind is None or k == kind})

    def sites(self, kind: str | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for k, _, site in self.entries:
            if kind is None or k == kind:
                seen.setdefault(site)
        return list(seen)

    def count(self, label: str, kind: str = "moments") -> int:
        """Rows (or tokens) of `label` seen by the first site of `kind`."""
        for (k, lab, _), entry in self.entries.items():
            if k == kind and lab == label:
                return entry.n
        return 0

    def pooled(self, kind: str, labels: Iterable[str], site: str):
        """One statistic merged over several labels (e.g. 'every label but this one')."""
        labels = list(labels)
        first = self.get(kind, labels[0], site)
        total = STAT_KINDS[kind](first.width)
        for label in labels:
            total.merge(self.get(kind, label, site))
        return total

    def mean_abs(self, labels: Iterable[str], site: str) -> torch.Tensor:
        """Mean |activation| of every unit at `site` over `labels` (float64), from whichever activation
        statistic the store holds there: moments (their |x| mean), rows, or token sums (|x| = 2·max(x, 0) − x,
        so the mean is (2·Σ max(x, 0) − Σ x) / n). What magnitude-matched controls match."""
        labels = list(labels)
        for kind in ("moments", "rows", "tokens"):
            if all((kind, label, site) in self.entries for label in labels):
                pooled = self.pooled(kind, labels, site)
                if kind == "moments":
                    return pooled.abs_mean.double()
                if kind == "rows":
                    return pooled.values().abs().double().mean(0)
                return (2 * pooled.positive_sum - pooled.sum) / max(pooled.n, 1)
        raise NeurolocError(f"no activation statistics (moments, rows or token sums) of {', '.join(labels)} at site "
                            f"{site}: the units' mean |activation| is unknown")

    # -- the Stat protocol -----------------------------------------------------------------------------
    def merge(self, other: "StatsStore") -> "StatsStore":
        """Fold another store in, key by key (exact)."""
        for (kind, label, site), entry in other.entries.items():
            self.entry(kind, label, site, entry.width).merge(entry)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{kind}|{label}|{site}|{field}": value.contiguous()
                for (kind, label, site), entry in self.entries.items()
                for field, value in entry.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict()`; also reads neuroloc 0.1's `condition|site|field` moments."""
        grouped: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            parts = key.split("|")
            if len(parts) == 3:
                parts = ["moments", *parts]
            if len(parts) != 4:
                raise NeurolocError(f"unreadable statistics key {key!r}")
            grouped.setdefault(tuple(parts[:3]), {})[parts[3]] = value
        self._entries, self._blocks = {}, {}
        for (kind, label, site), fields in grouped.items():
            width = next(v for f, v in fields.items() if f != "n").shape[-1]
            self.entry(kind, label, site, width).load_state_dict(fields)

    def to(self, device: torch.device | str) -> "StatsStore":
        for entry in self.entries.values():
            entry.to(device)
        return self

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            save_file({k: v.cpu() for k, v in self.state_dict().items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "StatsStore":
        store = cls()
        try:
            store.load_state_dict(load_file(str(path)))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own types for damaged files
            raise NeurolocError(f"{path} is not a readable statistics file: {error}") from None
        return store

    @classmethod
    def merged(cls, parts: Iterable["StatsStore"]) -> "StatsStore":
        total = cls()
        for part in parts:
            total.merge(part)
        return total
