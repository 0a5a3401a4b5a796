"""Mergeable sufficient statistics per unit: memory stays flat however many stimuli stream through.

`Moments` keeps count, mean and M2 of x and of |x| (Welford updates, Chan et al. merges) and the count
of x > 0; `ConditionStats` keeps one `Moments` per (condition, site) and saves/restores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import load_file, save_file

from ..errors import NeurolocError
from ..io import atomic_path

_FIELDS = ("mean", "m2", "abs_mean", "abs_m2", "positive")


class Moments:
    """Streaming per-unit statistics of a (rows, units) activation stream, in float64."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = torch.zeros(width, dtype=torch.float64)
        self.m2 = torch.zeros(width, dtype=torch.float64)
        self.abs_mean = torch.zeros(width, dtype=torch.float64)
        self.abs_m2 = torch.zeros(width, dtype=torch.float64)
        self.positive = torch.zeros(width, dtype=torch.int64)

    @property
    def width(self) -> int:
        return self.mean.numel()

    @staticmethod
    def _chan(n_a: int, mean_a, m2_a, n_b: int, mean_b, m2_b):
        n = n_a + n_b
        delta = mean_b - mean_a
        return mean_a + delta * (n_b / n), m2_a + m2_b + delta.square() * (n_a * n_b / n)

    def update(self, values: torch.Tensor) -> None:
        """Add a batch of rows (rows, width)."""
        if values.ndim != 2 or values.shape[1] != self.width:
            raise ValueError(f"expected (rows, {self.width}) activations, got {tuple(values.shape)}")
        if values.shape[0] == 0:
            return
        x = values.detach().to("cpu", torch.float64)
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).any(0).sum())
            raise NeurolocError(
                f"non-finite activations (NaN or inf) in {bad} units: the model overflowed; try --dtype float32"
            )
        self._merge_batch(x.shape[0], x.mean(0), (x - x.mean(0)).square().sum(0),
                          x.abs().mean(0), (x.abs() - x.abs().mean(0)).square().sum(0), (x > 0).sum(0))

    def _merge_batch(self, n_b, mean_b, m2_b, abs_mean_b, abs_m2_b, positive_b) -> None:
        if self.n == 0:
            self.mean, self.m2 = mean_b.clone(), m2_b.clone()
            self.abs_mean, self.abs_m2 = abs_mean_b.clone(), abs_m2_b.clone()
        else:
            self.mean, self.m2 = self._chan(self.n, self.mean, self.m2, n_b, mean_b, m2_b)
            self.abs_mean, self.abs_m2 = self._chan(self.n, self.abs_mean, self.abs_m2, n_b, abs_mean_b, abs_m2_b)
        self.positive = self.positive + positive_b
        self.n += n_b

    def merge(self, other: "Moments") -> "Moments":
        """Fold another accumulator in (exact up to float64 rounding); returns self."""
        if other.width != self.width:
            raise ValueError(f"cannot merge accumulators of widths {self.width} and {other.width}")
        if other.n:
            self._merge_batch(other.n, other.mean, other.m2, other.abs_mean, other.abs_m2, other.positive)
        return self

    def variance(self, absolute: bool = False) -> torch.Tensor:
        """Unbiased variance per unit."""
        return (self.abs_m2 if absolute else self.m2) / max(self.n - 1, 1)

    def activation_probability(self) -> torch.Tensor:
        """Fraction of rows with activation > 0 (the quantity LAPE is built on)."""
        return self.positive.double() / max(self.n, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor(self.n), **{f: getattr(self, f) for f in _FIELDS}}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "Moments":
        moments = cls(state["mean"].numel())
        moments.n = int(state["n"])
        for f in _FIELDS:
            setattr(moments, f, state[f].clone())
        return moments


class ConditionStats:
    """One `Moments` per (condition, site name); the localizer's whole memory."""

    def __init__(self) -> None:
        self.moments: dict[str, dict[str, Moments]] = {}

    def update(self, condition: str, site: str, values: torch.Tensor) -> None:
        per_site = self.moments.setdefault(condition, {})
        if site not in per_site:
            per_site[site] = Moments(values.shape[-1])
        per_site[site].update(values)

    def get(self, condition: str, site: str) -> Moments:
        try:
            return self.moments[condition][site]
        except KeyError:
            raise NeurolocError(f"no statistics for condition {condition!r} at site {site}") from None

    @property
    def conditions(self) -> list[str]:
        return list(self.moments)

    def sites(self, condition: str) -> list[str]:
        return list(self.moments.get(condition, {}))

    def count(self, condition: str) -> int:
        per_site = self.moments.get(condition, {})
        return next(iter(per_site.values())).n if per_site else 0

    def merge(self, other: "ConditionStats") -> "ConditionStats":
        for condition, per_site in other.moments.items():
            for site, moments in per_site.items():
                mine = self.moments.setdefault(condition, {})
                if site in mine:
                    mine[site].merge(moments)
                else:
                    mine[site] = Moments.from_state_dict(moments.state_dict())
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{condition}|{site}|{key}": value
            for condition, per_site in self.moments.items()
            for site, moments in per_site.items()
            for key, value in moments.state_dict().items()
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "ConditionStats":
        grouped: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            condition, site, field = key.split("|")
            grouped.setdefault((condition, site), {})[field] = value
        stats = cls()
        for (condition, site), fields in grouped.items():
            stats.moments.setdefault(condition, {})[site] = Moments.from_state_dict(fields)
        return stats

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "ConditionStats":
        return cls.from_state_dict(load_file(str(path)))

    @classmethod
    def merged(cls, parts: Iterable["ConditionStats"]) -> "ConditionStats":
        total = cls()
        for part in parts:
            total.merge(part)
        return total
