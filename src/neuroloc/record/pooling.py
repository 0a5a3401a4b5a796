"""Pool a site's (batch, tokens, units) activations into one row per text or per word.

Pooling reads the attention mask, never positions, so padding side and batch size cannot change
a result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NeurolocError

TEXT_POOLINGS = ("last", "mean")
WORD_POOLINGS = ("word-first", "word-last", "word-mean", "word-predict")
POOLINGS = TEXT_POOLINGS + WORD_POOLINGS + ("tokens",)


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise NeurolocError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


@dataclass
class PoolPlan:
    """Per-batch gather plan: flat token rows (b * T + t) feeding each output row."""

    token_rows: torch.Tensor  # (n_gathered,) flat token indices
    output_rows: torch.Tensor  # (n_gathered,) which output row each gathered token adds to
    weights: torch.Tensor  # (n_gathered,) 1 / tokens in that output row
    n_outputs: int
    single: bool  # one token per output row: a plain gather suffices

    def to(self, device: torch.device) -> "PoolPlan":
        """The plan on the hooked tensor's device (layers of one model can live on several devices)."""
        if self.token_rows.device == torch.device(device):
            return self
        return PoolPlan(self.token_rows.to(device), self.output_rows.to(device), self.weights.to(device),
                        self.n_outputs, self.single)


def text_plan(attention_mask: torch.Tensor, pooling: str) -> PoolPlan:
    """Last real token, or the mean over real tokens, of each row."""
    batch, length = attention_mask.shape
    mask = attention_mask.bool()
    if not mask.any(1).all():
        raise NeurolocError("a text tokenized to zero tokens; remove empty texts")
    positions = torch.arange(length, device=mask.device)
    if pooling == "last":
        last = torch.where(mask, positions, -1).amax(1)
        rows = torch.arange(batch, device=mask.device) * length + last
        return PoolPlan(rows, torch.arange(batch, device=mask.device), torch.ones(batch, device=mask.device), batch, True)
    flat = torch.nonzero(mask.flatten()).flatten()
    owner = flat // length
    counts = mask.sum(1).to(torch.float32)
    return PoolPlan(flat, owner, 1.0 / counts[owner], batch, False)


def word_plan(spans_per_row: list[list[tuple[int, int]]], length: int, device: torch.device) -> PoolPlan:
    """One output row per (first, last) token span, in row order."""
    rows, owners, weights = [], [], []
    n = 0
    single = True
    for b, spans in enumerate(spans_per_row):
        for first, last in spans:
            size = last - first + 1
            single &= size == 1
            rows.extend(range(b * length + first, b * length + last + 1))
            owners.extend([n] * size)
            weights.extend([1.0 / size] * size)
            n += 1
    as_tensor = lambda values, dtype: torch.tensor(values, dtype=dtype, device=device)  # noqa: E731
    return PoolPlan(as_tensor(rows, torch.long), as_tensor(owners, torch.long), as_tensor(weights, torch.float32), n, single)


def pool(values: torch.Tensor, plan: PoolPlan) -> torch.Tensor:
    """Apply a plan to (batch, tokens, units) values → (n_outputs, units) in float32."""
    flat = values.reshape(-1, values.shape[-1])
    gathered = flat.index_select(0, plan.token_rows).float()
    if plan.single:
        return gathered
    out = torch.zeros(plan.n_outputs, flat.shape[-1], dtype=torch.float32, device=values.device)
    return out.index_add_(0, plan.output_rows, gathered * plan.weights[:, None])


def head_norms(values: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Per-head output magnitude: (…, heads × head_dim) → (…, heads), the scalar an attention-head
    unit contributes to statistics."""
    return values.unflatten(-1, (n_heads, -1)).float().norm(dim=-1)
