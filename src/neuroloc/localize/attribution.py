"""Attribution of a log-probability to units: gradient × activation and integrated gradients.

The generic core shared by every attribution study (POS key neurons, task neurons):

* checks and the integration rule of integrated gradients (`ig_quadrature`), per-site baselines,
  the row plan of a pass (`row_plan`) and its hook edits and gradient bookkeeping (`AttributionRows`),
  the `Completeness` check (Σ attributions = f(x) − f(baseline), up to the quadrature error), and
  `frozen_parameters` (no weight-gradient graph);
* `iter_answer_attributions`: attribution of f = ln p(answer | prompt) — every answer token — to the
  units of `sites` at every position, reduced over positions by `max` or `sum`;
* `record_answer_attributions`: those attributions folded per label into the `attribution` statistic of a
  `StatsStore` (`localize.attribution_scores`), which the registered scores `gradxact` and `ig` read.

`gradxact` is gradient × (activation − baseline) of f, all sites in one backward pass (total
derivatives: paths through later sites included). `ig` is integrated gradients one site at a time:
that site's activation at every position becomes baseline + α (activation − baseline), and the
gradient of f is integrated over α ∈ [0, 1] (`midpoint`: α = (k + ½)/steps; `trapezoid`:
α = k/(steps − 1)). Per position and unit the attribution is summed over the hooked coordinates of
a unit (an attention head covers head_dim of them); positions are the prompt's tokens (BOS excluded)
and the answer's tokens that predict a later answer token. Sequences are right-padded with an
attention mask and position ids over real tokens, so padding and batch size change nothing beyond
float noise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..models.hooks import hooks
from ..models.layout import Site
from ..models.loading import LoadedModel
from ..progress import progress_bar
from ..record.recorder import takes_position_ids
from ..record.stats import StatsStore
from ..settings import RunSettings
from ..text.encoding import pad_id, prepends_bos
from ..stimuli.prompts import EncodedContinuation, PromptSet, encode_continuations

__all__ = ["ATTRIBUTION_METHODS", "IG_RULES", "POSITION_REDUCTIONS", "AnswerAttributionBatch", "AttributionRows",
           "Completeness", "check_attribution", "frozen_parameters", "ig_quadrature", "iter_answer_attributions",
           "record_answer_attributions", "row_plan", "site_baselines"]

ATTRIBUTION_METHODS = ("ig", "gradxact")
IG_RULES = ("midpoint", "trapezoid")
POSITION_REDUCTIONS = ("max", "sum")


# ------------------------------------------------------------------------------------ shared pieces
def check_attribution(method: str, steps: int, rule: str, batch_size: int) -> None:
    """Raise a one-line error for an unknown method or rule, or bad steps / batch size."""
    if method not in ATTRIBUTION_METHODS:
        raise NeurolocError(f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}")
    if rule not in IG_RULES:
        raise NeurolocError(f"unknown integration rule {rule!r}; choose one of {', '.join(IG_RULES)}")
    fewest = 2 if rule == "trapezoid" else 1
    if method == "ig" and (isinstance(steps, bool) or not isinstance(steps, int) or steps < fewest):
        raise NeurolocError(f"steps must be an int >= {fewest}, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurolocError(f"batch_size must be an int >= 1, got {batch_size!r}")


def ig_quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of the integration rule; weights sum to 1."""
    if rule == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    alphas = np.arange(steps) / (steps - 1)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] *= 0.5
    return alphas, weights


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the block (no weight-gradient graph), then are restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def site_baselines(lm: LoadedModel, sites: Sequence[Site], baseline) -> dict[Site, torch.Tensor]:
    """Per site, the baseline vector over the hooked coordinates (zeros unless given by site name)."""
    out = {}
    given = {} if baseline is None or (isinstance(baseline, str) and baseline == "zero") else baseline
    if isinstance(given, str):
        raise NeurolocError(f"unknown baseline {baseline!r}; use 'zero' or a mapping site name → vector")
    for site in sites:
        width = lm.layout.coordinate_width(site.kind)
        value = given.get(site.name) if isinstance(given, Mapping) else None
        if value is None:
            out[site] = torch.zeros(width, dtype=lm.dtype, device=lm.device)
            continue
        value = torch.as_tensor(value).flatten()
        if value.numel() != width:
            raise NeurolocError(f"baseline for {site.name} has {value.numel()} values; the site has {width} coordinates")
        out[site] = value.to(lm.device, lm.dtype)
    unknown = set(given) - {s.name for s in sites} if isinstance(given, Mapping) else set()
    if unknown:
        raise NeurolocError(f"baselines given for sites that are not attributed: {sorted(unknown)}")
    return out


def row_plan(n: int, n_sites: int, method: str, rule: str, alphas: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The rows of an attribution pass over `n` items: per row its item (`slot`), its site (−1: the
    plain, unedited row, which gives f(x) and the activations), `alpha` and the quadrature `weight`.
    Integrated gradients adds, per site, one row per α — and with the midpoint rule one α = 0 row of
    weight 0, which gives f(baseline)."""
    slot, site, alpha, weight = [np.arange(n)], [np.full(n, -1)], [np.ones(n)], [np.zeros(n)]
    if method == "ig":
        a, w = alphas, weights
        if rule == "midpoint":
            a, w = np.concatenate([a, [0.0]]), np.concatenate([w, [0.0]])
        for j in range(n_sites):
            slot.append(np.repeat(np.arange(n), len(a)))
            site.append(np.full(n * len(a), j))
            alpha.append(np.tile(a, n))
            weight.append(np.tile(w, n))
    return {"slot": np.concatenate(slot), "site": np.concatenate(site), "alpha": np.concatenate(alpha),
            "weight": np.concatenate(weight)}


class AttributionRows:
    """One forward/backward batch of `row_plan` rows, for every attribution engine: the hook edits that
    expose each site's activation to autograd (`gradxact`: every row) or replace it by
    baseline + α (activation − baseline) on that site's rows (`ig`), and the bookkeeping after the
    target is computed (`finish`). `acts` and `grads` map each site to (items, positions, coordinates)
    float64 CPU tensors that the plain rows' activations and the weighted gradients go into."""

    def __init__(self, part: dict[str, np.ndarray], method: str, base: Mapping[Site, torch.Tensor],
                 dtype: torch.dtype, device: torch.device | str, acts: dict[Site, torch.Tensor],
                 grads: dict[Site, torch.Tensor]) -> None:
        self.part, self.method, self.base, self.dtype, self.device = part, method, base, dtype, device
        self.acts, self.grads = acts, grads
        self.slot = torch.as_tensor(part["slot"])
        self.site_of_row = torch.as_tensor(part["site"])
        self.n_rows = self.slot.numel()
        self.plain = torch.nonzero(self.site_of_row < 0).flatten()
        self.leaves: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}  # site → (delta leaf, its rows)

    def editors(self, sites: Sequence[Site]) -> dict[Site, Callable[[torch.Tensor], torch.Tensor]]:
        """The `hooks(edit=...)` mapping for `sites` (in row-plan site order)."""
        return {site: self._editor(j, site) for j, site in enumerate(sites)}

    def _editor(self, j: int, site: Site) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.method == "gradxact":
            chosen, alpha = torch.arange(self.n_rows), None
        else:
            chosen = torch.nonzero(self.site_of_row == j).flatten()
            alpha = torch.as_tensor(self.part["alpha"][chosen.numpy()], dtype=self.dtype, device=self.device)
        base = self.base[site]

        def edit(x: torch.Tensor) -> torch.Tensor:
            view = x.reshape(self.n_rows, -1, x.shape[-1])  # some models flatten tokens (OPT's fc2)
            if self.plain.numel():
                self.acts[site].index_copy_(0, self.slot[self.plain],
                                            view[self.plain.to(x.device)].detach().double().cpu())
            if not chosen.numel():
                return x
            rows_on = chosen.to(x.device)
            current = view[rows_on]
            value = current if alpha is None else base + alpha[:, None, None] * (current - base)
            delta = torch.zeros_like(value, requires_grad=True)
            self.leaves[site] = (delta, chosen)
            out = view.clone()
            out[rows_on] = value + delta
            return out.reshape(x.shape)
        return edit

    def finish(self, logprob: torch.Tensor, sites: Sequence[Site], f_x: np.ndarray, f_base: np.ndarray) -> None:
        """Backpropagate the rows' targets (`logprob`, one per row): weighted gradients into `grads`,
        the plain rows' values into `f_x`, the α = 0 rows' into `f_base` (items × sites)."""
        order = [s for s in sites if s in self.leaves]
        gradients = torch.autograd.grad(logprob.sum(), [self.leaves[s][0] for s in order]) if order else []
        values = logprob.detach().double().cpu().numpy()
        plain = self.plain.numpy()
        f_x[self.part["slot"][plain]] = values[plain]
        for site, gradient in zip(order, gradients):
            chosen = self.leaves[site][1]
            weight = torch.ones(chosen.numel(), dtype=torch.float64) if self.method == "gradxact" else \
                torch.as_tensor(self.part["weight"][chosen.numpy()], dtype=torch.float64)
            self.grads[site].index_add_(0, self.slot[chosen], gradient.detach().double().cpu() * weight[:, None, None])
        if self.method == "ig":
            is_base = (self.part["site"] >= 0) & (self.part["alpha"] == 0.0)
            f_base[self.part["slot"][is_base], self.part["site"][is_base]] = values[is_base]


@dataclass
class Completeness:
    """Completeness of integrated gradients: per (item, site), Σ attributions vs f(x) − f(baseline)."""

    sites: list[str] = field(default_factory=list)
    totals: list[np.ndarray] = field(default_factory=list)
    deltas: list[np.ndarray] = field(default_factory=list)

    def update(self, totals: np.ndarray, deltas: np.ndarray) -> None:
        """Add (items, sites) arrays of summed attributions and of f(x) − f(baseline)."""
        self.totals.append(np.asarray(totals, dtype=np.float64).reshape(-1, max(len(self.sites), 1)))
        self.deltas.append(np.asarray(deltas, dtype=np.float64).reshape(-1, max(len(self.sites), 1)))

    def merge(self, other: "Completeness") -> "Completeness":
        """The statistics protocol (`neuroloc.record.stats`): concatenation, exact."""
        if other.sites != self.sites:
            raise NeurolocError(f"cannot merge completeness over sites {other.sites} into {self.sites}")
        self.totals.extend(other.totals)
        self.deltas.extend(other.deltas)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        width = max(len(self.sites), 1)
        stack = lambda parts: torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, width)))  # noqa: E731
        return {"totals": stack(self.totals), "deltas": stack(self.deltas)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.totals = [state["totals"].double().cpu().numpy()] if state["totals"].shape[0] else []
        self.deltas = [state["deltas"].double().cpu().numpy()] if state["deltas"].shape[0] else []

    def to(self, device: torch.device | str) -> "Completeness":
        """Per-pair sums live in host memory (a few numbers per item and site)."""
        return self

    @staticmethod
    def _stats(total: np.ndarray, delta: np.ndarray, floor: float) -> dict:
        error = np.abs(total - delta)
        big = np.abs(delta) > floor
        per_pair = error[big] / np.abs(delta[big])
        denominator = np.abs(delta).sum()
        return {
            "n_pairs": int(total.size),
            "relative_error": float(error.sum() / denominator) if denominator > 0 else None,
            "median_relative_error": float(np.median(per_pair)) if per_pair.size else None,
            "p95_relative_error": float(np.percentile(per_pair, 95)) if per_pair.size else None,
            "max_abs_error": float(error.max()) if error.size else None,
            "mean_abs_delta": float(np.abs(delta).mean()) if delta.size else None,
        }

    def summary(self, floor: float = 1e-3) -> dict:
        """`relative_error` = Σ|total − delta| / Σ|delta| over all (item, site) pairs; the median and
        95th percentile of per-pair relative errors over pairs with |delta| > `floor` nats; the largest
        absolute error (nats); and `by_site`, the relative error of each site alone."""
        if not self.totals:
            return {"n_pairs": 0, "relative_error": None, "median_relative_error": None,
                    "p95_relative_error": None, "max_abs_error": None, "mean_abs_delta": None, "by_site": {}}
        total, delta = np.concatenate(self.totals), np.concatenate(self.deltas)
        out = self._stats(total.ravel(), delta.ravel(), floor)
        out["by_site"] = {name: self._stats(total[:, j], delta[:, j], floor)["relative_error"]
                          for j, name in enumerate(self.sites)}
        return out


# --------------------------------------------------------------------- log p(answer | prompt) targets
@dataclass
class AnswerAttributionBatch:
    """Attributions of a batch of items (rows), units flat over the sites in site order.

    `scores[i]` holds the position-reduced attribution of item i's ln p(answer | prompt) (`logprob[i]`);
    `site_totals[i, j]` is the attribution summed over every unit and position of site j; for `ig`,
    `site_deltas[i, j]` = f(x) − f(baseline at site j), what the totals should equal.
    """

    items: list[int]
    logprob: np.ndarray
    scores: torch.Tensor
    site_totals: np.ndarray
    site_deltas: np.ndarray | None = None


class _AnswerEngine:
    def __init__(self, lm: LoadedModel, sites: Sequence[Site], method: str, steps: int, rule: str, baseline,
                 batch_size: int, reduce: str) -> None:
        check_attribution(method, steps, rule, batch_size)
        if reduce not in POSITION_REDUCTIONS:
            raise NeurolocError(f"unknown position reduction {reduce!r}; choose one of {', '.join(POSITION_REDUCTIONS)}")
        if not sites:
            raise NeurolocError("no sites to attribute")
        self.lm, self.method, self.steps, self.rule = lm, method, steps, rule
        self.batch_size, self.reduce = batch_size, reduce
        self.sites = sorted(lm.layout.check(s) for s in sites)
        self.base = site_baselines(lm, self.sites, baseline)
        self.positions = takes_position_ids(lm.model)
        self.alphas, self.weights = ig_quadrature(steps, rule) if method == "ig" else (None, None)

    def group(self, encoded: Sequence[EncodedContinuation], items: list[int], skip_first: bool
              ) -> AnswerAttributionBatch:
        lm = self.lm
        n, width = len(encoded), max(len(e.ids) for e in encoded)
        pad = pad_id(lm.tokenizer)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.bool)
        answer = torch.zeros((n, width), dtype=torch.bool)  # positions whose NEXT token is an answer token
        positions = torch.zeros((n, width), dtype=torch.bool)  # positions attributed to
        for b, e in enumerate(encoded):
            ids[b, :len(e.ids)] = torch.tensor(e.ids)
            mask[b, :len(e.ids)] = True
            answer[b, e.start - 1:len(e.ids) - 1] = True
            positions[b, int(skip_first):len(e.ids) - 1] = True
        coord = {s: lm.layout.coordinate_width(s.kind) for s in self.sites}
        grads = {s: torch.zeros(n, width, coord[s], dtype=torch.float64) for s in self.sites}
        acts = {s: torch.zeros(n, width, coord[s], dtype=torch.float64) for s in self.sites}
        f_x, f_base = np.full(n, np.nan), np.full((n, len(self.sites)), np.nan)
        plan = row_plan(n, len(self.sites), self.method, self.rule, self.alphas, self.weights)
        for start in range(0, len(plan["slot"]), self.batch_size):
            part = {key: value[start:start + self.batch_size] for key, value in plan.items()}
            self._run(part, ids, mask, answer, grads, acts, f_x, f_base)
        scores, totals = [], []
        keep = positions[..., None].double()
        for site in self.sites:
            per = (acts[site] - self.base[site].double().cpu()) * grads[site]  # (items, positions, coords)
            if site.kind == "attn":
                per = per.unflatten(-1, (lm.layout.n_heads, -1)).sum(-1)
            totals.append((per * keep).sum((1, 2)).numpy())
            if self.reduce == "sum":
                scores.append((per * keep).sum(1))
            else:
                scores.append(per.masked_fill(~positions[..., None], -torch.inf).amax(1))
        deltas = (f_x[:, None] - f_base) if self.method == "ig" else None
        return AnswerAttributionBatch(items, f_x, torch.cat(scores, 1).float(), np.stack(totals, 1), deltas)

    def _run(self, part, ids, mask, answer, grads, acts, f_x, f_base) -> None:
        lm, device = self.lm, self.lm.device
        rows = AttributionRows(part, self.method, self.base, lm.dtype, device, acts, grads)
        row_mask = mask[rows.slot]
        batch = {"input_ids": ids[rows.slot].to(device), "attention_mask": row_mask.long().to(device),
                 "use_cache": False}
        if self.positions:
            batch["position_ids"] = (row_mask.long().cumsum(-1) - 1).clamp(min=0).to(device)
        with frozen_parameters(lm.model), torch.enable_grad():
            with hooks(lm.layout, edit=rows.editors(self.sites)):
                logits = lm.model(**batch).logits[:, :-1]
            logits = logits if logits.dtype == torch.float64 else logits.float()
            targets = batch["input_ids"][:, 1:]
            token_lp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
            logprob = (token_lp * answer[rows.slot][:, :-1].to(token_lp.device)).sum(-1)
            rows.finish(logprob, self.sites, f_x, f_base)


def iter_answer_attributions(
    lm: LoadedModel,
    encoded: Sequence[EncodedContinuation],
    *,
    method: str = "gradxact",
    sites: Sequence[Site] | None = None,
    reduce: str = "max",
    steps: int = 16,
    rule: str = "midpoint",
    baseline: str | Mapping[str, torch.Tensor] | None = "zero",
    batch_size: int,
    items_per_group: int,
    skip_first: bool,
    progress: bool = False,
) -> Iterator[AnswerAttributionBatch]:
    """Yield attributions of ln p(answer | prompt) for `encoded` items (from
    `stimuli.prompts.encode_continuations`), `items_per_group` at a time, in order.

    `sites` default to every layer's `mlp` site. `batch_size` is the number of sequences per
    forward/backward pass (IG needs 1 + sites × (steps + 1) of them per item with the midpoint rule).
    `skip_first` leaves position 0 out of the positions attributed to: pass True when the items were encoded
    with a prepended BOS (the BOS policy `prepend`), so the BOS token gets no attribution.
    """
    sites = list(sites) if sites is not None else lm.layout.sites("mlp")
    engine = _AnswerEngine(lm, sites, method, steps, rule, baseline, batch_size, reduce)
    if isinstance(items_per_group, bool) or not isinstance(items_per_group, int) or items_per_group < 1:
        raise NeurolocError(f"items_per_group must be an int >= 1, got {items_per_group!r}")
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].ids), i))  # little padding per group
    with progress_bar(f"attributing ({method})", len(encoded), progress) as advance:
        for start in range(0, len(order), items_per_group):
            chosen = sorted(order[start:start + items_per_group])
            if isinstance(limit, int) and max(len(encoded[i].ids) for i in chosen) > limit:
                raise NeurolocError(f"a prompt with its answer is longer than the model's {limit} positions")
            yield engine.group([encoded[i] for i in chosen], chosen, skip_first)
            advance(len(chosen))


def record_answer_attributions(lm: LoadedModel, items: PromptSet, sites: Sequence[Site], *, method: str,
                               settings: RunSettings, reduce: str = "max", weight_by_p: bool = False, steps: int = 16,
                               label: str | None = None, store: StatsStore | None = None, progress: bool = False
                               ) -> tuple[StatsStore, np.ndarray, Completeness | None]:
    """Attribute ln p(answer | prompt) of every item of `items` (encoded under `settings.bos`, `settings.batch_size`
    sequences per pass) and fold the position-reduced attributions (× p(answer | prompt) with `weight_by_p`)
    into `store`'s `attribution` statistic per label (every item under `label` when given: a control or
    nuisance set). Returns (the store, each item's ln p(answer | prompt), IG's completeness or None)."""
    from .attribution_scores import AttributionStats  # noqa: F401  (registers the statistic kind)

    if not len(items):
        raise NeurolocError(f"{items.name}: no items to attribute")
    sites = sorted(sites)
    names = [s.name for s in sites]
    widths = [lm.layout.width(s.kind) for s in sites]
    store = store if store is not None else StatsStore()
    labels = [label] * len(items) if label is not None else list(items.labels)
    encoded = encode_continuations(lm.tokenizer, items.prompts, items.answers, bos=settings.bos)
    logprob = np.full(len(items), np.nan)
    completeness = Completeness(names) if method == "ig" else None
    for batch in iter_answer_attributions(lm, encoded, method=method, sites=sites, reduce=reduce, steps=steps,
                                          batch_size=settings.batch_size, items_per_group=settings.batch_size,
                                          skip_first=prepends_bos(settings.bos), progress=progress):
        scores = batch.scores.double()
        if weight_by_p:
            scores = scores * torch.from_numpy(np.exp(batch.logprob))[:, None]
        of_batch = [labels[i] for i in batch.items]
        for name in dict.fromkeys(of_batch):
            rows = torch.tensor([j for j, other in enumerate(of_batch) if other == name])
            store.update_sites("attribution", name, names, widths, scores.index_select(0, rows))
        logprob[batch.items] = batch.logprob
        if completeness is not None and batch.site_deltas is not None:
            completeness.update(batch.site_totals, batch.site_deltas)
    return store, logprob, completeness
