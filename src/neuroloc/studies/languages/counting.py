"""Token-level activation counts per language: how often each unit's activation is > 0, and its mean when
it is, streamed over every token of a language's texts (the input of LAPE and of steering values).

Only the texts' own tokens count: padding never does, nor the BOS the encoding prepends (it is the same
in every language). Counts are integers and sums float64, so statistics merge exactly and batch size or
padding never change them. `count_language` runs one language through the hooked model, stopping after
the last layer needed; with `prompts`, it counts the full texts minus their prompt prefixes (response
tokens only, as Zhang et al. do).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ...errors import NeurolocError
from ...models.hooks import hooks, run_forward
from ...models.layout import Site
from ...models.loading import LoadedModel
from ...progress import progress_bar
from ...record.recorder import takes_position_ids
from ...text.encoding import batches, encode, pad_id

__all__ = ["ActivationCounts", "count_language"]


class ActivationCounts:
    """Per site: tokens seen (`n`), per-unit counts of activation > 0 (`positive`) and sums of the positive
    activations (`positive_sum`). Implements update / merge / state_dict / load_state_dict / to."""

    def __init__(self, widths: Mapping[Site, int], device: torch.device | str | None = None) -> None:
        self.n = 0
        self.positive = {s: torch.zeros(w, dtype=torch.int64, device=device) for s, w in sorted(widths.items())}
        self.positive_sum = {s: torch.zeros(w, dtype=torch.float64, device=device) for s, w in sorted(widths.items())}

    @property
    def sites(self) -> list[Site]:
        return list(self.positive)

    def update(self, site: Site, values: torch.Tensor, token_mask: torch.Tensor) -> None:
        """Add a (batch, tokens, units) activation whose counted tokens are `token_mask` (batch, tokens).
        Call `add_tokens` once per batch for the token count."""
        positive = values.clamp(min=0) * token_mask.to(values.device, values.dtype)[..., None]
        self.positive[site] += (positive > 0).sum((0, 1)).to(self.positive[site].device)
        self.positive_sum[site] += positive.sum((0, 1), dtype=torch.float64).to(self.positive_sum[site].device)

    def add_tokens(self, n: int) -> None:
        self.n += int(n)

    def merge(self, other: "ActivationCounts", sign: int = 1) -> "ActivationCounts":
        """Add (or, with sign=-1, subtract: full texts minus their prompts) another count exactly."""
        if set(other.positive) != set(self.positive):
            raise NeurolocError("cannot merge activation counts of different sites")
        self.n += sign * other.n
        for site in self.positive:
            self.positive[site] += sign * other.positive[site].to(self.positive[site].device)
            self.positive_sum[site] += sign * other.positive_sum[site].to(self.positive_sum[site].device)
        return self

    def probability(self, site: Site) -> torch.Tensor:
        """Fraction of counted tokens on which each unit is > 0."""
        if self.n <= 0:
            raise NeurolocError("no tokens were counted; give the language some text")
        return self.positive[site].double() / self.n

    def mean_when_active(self, site: Site) -> torch.Tensor:
        """Mean activation over the tokens where the unit is > 0 (0 for a unit never active)."""
        return self.positive_sum[site] / self.positive[site].clamp(min=1).double()

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"n": torch.tensor(self.n, dtype=torch.int64)}
        for site in self.positive:
            state[f"{site.name}.positive"] = self.positive[site]
            state[f"{site.name}.positive_sum"] = self.positive_sum[site]
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.n = int(state["n"])
        for site in self.positive:
            self.positive[site] = state[f"{site.name}.positive"].clone().to(self.positive[site].device)
            self.positive_sum[site] = state[f"{site.name}.positive_sum"].clone().to(self.positive_sum[site].device)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "ActivationCounts":
        widths = {Site.parse(k.rsplit(".", 1)[0]): v.numel() for k, v in state.items() if k.endswith(".positive")}
        counts = cls(widths)
        counts.load_state_dict(state)
        return counts

    def to(self, device: torch.device | str) -> "ActivationCounts":
        self.positive = {s: v.to(device) for s, v in self.positive.items()}
        self.positive_sum = {s: v.to(device) for s, v in self.positive_sum.items()}
        return self


def _count(lm: LoadedModel, texts: Sequence[str], sites: Sequence[Site], batch_size: int, bos: str,
           advance) -> ActivationCounts:
    layout = lm.layout
    counts = ActivationCounts({s: layout.width(s.kind) for s in sites}, device=lm.device)
    encoded = encode(lm.tokenizer, texts, bos=bos)
    takes_positions = takes_position_ids(lm.model)
    with torch.inference_mode():
        for batch in batches(encoded, batch_size, pad=pad_id(lm.tokenizer)):
            own = batch.own.to(lm.device)

            def observer(site: Site):
                return lambda value: counts.update(site, value, own)

            with hooks(layout, observe={s: observer(s) for s in sites}, stop_after_layer=max(s.layer for s in sites)):
                run_forward(lm.model, **batch.inputs(lm.device, position_ids=takes_positions))
            counts.add_tokens(int(own.sum()))
            advance(len(batch.example_ids))
    return counts


def count_language(lm: LoadedModel, texts: Sequence[str], sites: Sequence[Site], *, prompts: Sequence[str] | None = None,
                   batch_size: int = 16, bos: str = "prepend", progress: bool = False,
                   description: str = "counting") -> ActivationCounts:
    """Activation counts of `sites` over every token of `texts` (minus their `prompts`' tokens when given)."""
    texts = list(texts)
    if not texts:
        raise NeurolocError(f"{description}: no texts to count")
    if not sites:
        raise NeurolocError("no sites to count")
    sites = sorted(lm.layout.check(s) for s in sites)
    total = len(texts) * (2 if prompts is not None else 1)
    with progress_bar(description, total, progress) as advance:
        counts = _count(lm, texts, sites, batch_size, bos, advance)
        if prompts is not None:
            prompts = list(prompts)
            if len(prompts) != len(texts):
                raise NeurolocError(f"{description}: {len(prompts)} prompts for {len(texts)} texts")
            bad = [i for i, (p, t) in enumerate(zip(prompts, texts)) if not t.startswith(p)]
            if bad:
                raise NeurolocError(f"{description}: prompt {bad[0]} is not a prefix of its text")
            nonempty = [i for i, p in enumerate(prompts) if p.strip()]
            if nonempty:
                counts.merge(_count(lm, [prompts[i] for i in nonempty], sites, batch_size, bos, advance), sign=-1)
            advance(len(texts) - len(nonempty))
    return counts
