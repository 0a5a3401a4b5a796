"""Score functions: from streamed statistics and a design to one score per (compared label, unit).

The selector's score is a parameter, as in scikit-learn's `SelectKBest(score_func)`. Registered scores
have stable names (`welch`, `cohen_d`, `one_vs_rest_welch`, `activation_probability`, `lape`,
`average_precision`, and the attribution scores `gradxact`, `ig`); any callable `(stats, design) -> Scores`
works too. Each registered score says which statistics it needs (`moments`, `tokens`, `rows` recorded from
activations, see `neuroloc.record.stats`; `attribution`, recorded by the attribution engine). The registry is
the one namespace of scores for every study; `SCORE_ALIASES` keeps a few short names (`ap`, `contrast`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import NeurolocError
from ..models.layout import Site
from ..record.stats import StatsStore
from ..stimuli.design import Design
from .scores import cohens_d, lape_scores, lape_select, welch_t_test
from .selection import select_top

__all__ = ["SCORES", "SCORE_ALIASES", "ScoreFunction", "Scores", "average_precision", "get_score", "ordered_sites",
           "register_score", "score_name"]


@dataclass
class Scores:
    """One row per compared label (a contrast has one row), one column per unit (sites in order).

    `pvalues` where the score has a test; `larger_is_better` says which end is selective; `columns`
    holds further per-(row, unit) tables for the scores table (Cohen's d, condition means, activation
    probabilities, entropy). `support(percent, count)` is a score's own selection rule, when it has
    one (LAPE: the lowest-entropy units, each assigned to every label above the probability bar).
    `eligible` (rows × units, bool) is the score's own filter (the culture-neuron recipe's z-score bar and
    nuisance units): other units are never selected. `tiebreak` names the column that orders units of
    equal score (average precision saturates at 1: its Welch t decides); the lower unit index decides last.
    """

    values: np.ndarray
    labels: tuple[str, ...]
    pvalues: np.ndarray | None = None
    larger_is_better: bool = True
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    support: Callable[[float | None, int | None], np.ndarray] | None = None
    eligible: np.ndarray | None = None
    tiebreak: str | None = None

    def __post_init__(self) -> None:
        self.values = np.atleast_2d(np.asarray(self.values, dtype=np.float64))
        if self.values.shape[0] != len(self.labels):
            raise NeurolocError(f"scores have {self.values.shape[0]} rows but {len(self.labels)} labels")
        if self.eligible is not None:
            self.eligible = np.broadcast_to(np.asarray(self.eligible, dtype=bool), self.values.shape)
        if self.tiebreak is not None and self.tiebreak not in self.columns:
            raise NeurolocError(f"scores break ties by column {self.tiebreak!r}, which they do not have")

    def row(self, label: str) -> int:
        """The row of `label`."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise NeurolocError(f"no scores for label {label!r}; labels: {', '.join(self.labels)}") from None

    def ranking_key(self, row: int, largest: bool = True) -> np.ndarray:
        """One number per unit whose order is the selection order of row `row` (larger first when
        `largest`): the score with its selective end up, ties broken by the `tiebreak` column (then, in
        `select_top`, by the lower index); NaN where the score is NaN."""
        values = self.values[row]
        key = values if self.larger_is_better else -values
        if self.tiebreak is None:
            return key
        second = self.columns[self.tiebreak][row]
        second = second if self.larger_is_better else -second
        finite = ~np.isnan(key)
        order = np.lexsort((np.arange(key.size), second, key)) if not largest else \
            np.lexsort((np.arange(key.size), -second, -key))
        order = order[finite[order]]
        ranks = np.full(key.size, np.nan)
        ranks[order] = (np.arange(order.size, 0, -1) if largest else np.arange(order.size)).astype(np.float64)
        return ranks

    def top(self, row: int, *, percent: float | None = None, count: int | None = None,
            groups: np.ndarray | None = None, eligible: np.ndarray | None = None, largest: bool = True,
            allow_fewer: bool = False) -> np.ndarray:
        """The one selection rule every study uses: a boolean mask of row `row`'s most (or, with
        `largest=False`, least) selective units — `percent` of each group's units or `count` per group
        (`groups`: an integer per unit; None: all units together), among the units the score itself deems
        `eligible` and the caller's `eligible` (e.g. FDR-significant units); ties by `tiebreak`, then the
        lower index. With a filter, fewer units than asked may come back (`allow_fewer` in any case)."""
        mask = None if self.eligible is None else self.eligible[row]
        if eligible is not None:
            mask = eligible if mask is None else mask & eligible
        if mask is not None and mask.all():
            mask = None
        return select_top(self.ranking_key(row, largest), percent=percent, count=count, groups=groups,
                          per_group=groups is not None, eligible=mask, largest=largest,
                          allow_fewer=allow_fewer or self.eligible is not None)


ScoreCallable = Callable[..., Scores]


@dataclass(frozen=True)
class ScoreFunction:
    """A registered score: its function, the statistics it needs and the designs it supports."""

    name: str
    function: ScoreCallable
    needs: tuple[str, ...]
    designs: tuple[str, ...]
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options the score takes (e.g. `absolute`, `quantile`)."""
        parameters = list(inspect.signature(self.function).parameters.values())[2:]
        return tuple(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse options the score does not take (never drop them silently)."""
        refused = sorted(set(options) - set(self.options))
        if refused:
            takes = ", ".join(self.options) or "none"
            raise NeurolocError(f"score {self.name!r} takes no option {', '.join(refused)} (its options: {takes}); "
                                "leave it out or choose a score that takes it")

    def __call__(self, stats: StatsStore, design: Design, **options) -> Scores:
        if design.kind not in self.designs:
            raise NeurolocError(f"score {self.name!r} does not take a {design.kind} design; "
                                f"use one of: {', '.join(self.designs)}")
        self.check_options(options)
        return self.function(stats, design, **options)


SCORES: dict[str, ScoreFunction] = {}
# Short names kept for the studies that used them (`neuroloc task --score ap`, `neuroloc pos --method contrast`).
SCORE_ALIASES: dict[str, str] = {"ap": "average_precision", "contrast": "one_vs_rest_welch"}


def score_name(name: str) -> str:
    """The registered name of a score given by name or alias (`ap` → `average_precision`); other names are
    returned unchanged (for the caller's check to refuse)."""
    return SCORE_ALIASES.get(name.strip(), name.strip())


def register_score(name: str, *, needs: Sequence[str], designs: Sequence[str], description: str):
    """Decorator adding a score function `(stats, design, **options) -> Scores` to the registry."""
    def add(function: ScoreCallable) -> ScoreCallable:
        SCORES[name] = ScoreFunction(name, function, tuple(needs), tuple(designs), description)
        return function
    return add


def get_score(score: str | ScoreCallable | ScoreFunction) -> ScoreFunction:
    """A registered score by name, or a user callable wrapped as one (needing moments)."""
    if isinstance(score, ScoreFunction):
        return score
    if callable(score):
        name = getattr(score, "__name__", "custom")
        return ScoreFunction(name, score, ("moments",), ("contrast", "one_vs_rest", "groups"), "user score")
    try:
        return SCORES[score_name(score)]
    except KeyError:
        raise NeurolocError(f"unknown score {score!r}; choose one of {', '.join(SCORES)} or pass a callable") from None


def ordered_sites(stats: StatsStore, kind: str) -> list[str]:
    """The store's sites for a statistic kind, by (layer, site kind): the flat unit order."""
    return [s.name for s in sorted(Site.parse(name) for name in stats.sites(kind))]


def _stat(stats: StatsStore, kind: str, labels: Sequence[str], site: str):
    return stats.get(kind, labels[0], site) if len(labels) == 1 else stats.pooled(kind, labels, site)


# ---------------------------------------------------------------------------------- t tests and d
def _welch_rows(stats: StatsStore, design: Design, absolute: bool) -> Scores:
    comparisons = design.comparisons(stats.labels("moments"))
    fields = ("abs_mean", "abs_m2") if absolute else ("mean", "m2")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "p", "d", "df", "mean_a", "mean_b")}
    for target, others in comparisons:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in rows}
        for site in ordered_sites(stats, "moments"):
            a, b = stats.get("moments", target, site), _stat(stats, "moments", others, site)
            routed = Site.parse(site).kind == "expert"  # an expert sees only the rows routed to it
            for name, n in ((target, a.n), ("+".join(others), b.n)):
                if n < 2 and not routed:
                    raise NeurolocError(f"condition {name!r} has {n} item(s); a t test needs at least 2")
            mean_a, m2_a = (getattr(a, f).cpu().numpy() for f in fields)
            mean_b, m2_b = (getattr(b, f).cpu().numpy() for f in fields)
            if min(a.n, b.n) < 2:  # an expert too rarely routed to test: t is NaN (never selected), p is 1
                nan = np.full(mean_a.shape, np.nan)
                scored = (("t", nan), ("p", np.ones(mean_a.shape)), ("df", nan), ("mean_a", mean_a),
                          ("mean_b", mean_b), ("d", nan))
            else:
                result = welch_t_test(a.n, mean_a, m2_a, b.n, mean_b, m2_b)
                scored = (("t", result.t), ("p", result.p), ("df", result.df), ("mean_a", mean_a),
                          ("mean_b", mean_b), ("d", cohens_d(a.n, mean_a, m2_a, b.n, mean_b, m2_b)))
            for key, value in scored:
                parts[key].append(value)
        for key in rows:
            rows[key].append(np.concatenate(parts[key]))
    table = {k: np.stack(v) for k, v in rows.items()}
    return Scores(table["t"], tuple(t for t, _ in comparisons), pvalues=table["p"],
                  columns={k: table[k] for k in ("d", "df", "mean_a", "mean_b")})


@register_score("welch", needs=("moments",), designs=("contrast", "one_vs_rest"),
                description="Welch t of the target label against the others (AlKhamissi et al. 2025)")
def welch(stats: StatsStore, design: Design, *, absolute: bool = False) -> Scores:
    return _welch_rows(stats, design, absolute)


@register_score("one_vs_rest_welch", needs=("moments",), designs=("one_vs_rest", "groups", "contrast"),
                description="Welch t of every label against all other texts")
def one_vs_rest_welch(stats: StatsStore, design: Design, *, absolute: bool = False) -> Scores:
    return _welch_rows(stats, design if design.kind == "contrast" else Design.one_vs_rest(design.labels), absolute)


@register_score("cohen_d", needs=("moments",), designs=("contrast", "one_vs_rest"),
                description="Cohen's d (pooled SD); p from Welch's test")
def cohen_d(stats: StatsStore, design: Design, *, absolute: bool = False) -> Scores:
    welch_scores = _welch_rows(stats, design, absolute)
    columns = dict(welch_scores.columns, t=welch_scores.values)
    return Scores(columns.pop("d"), welch_scores.labels, pvalues=welch_scores.pvalues, columns=columns)


# ------------------------------------------------------------------------- activation probabilities
def activation_probabilities(stats: StatsStore, labels: Sequence[str]) -> np.ndarray:
    """(labels, units): share of tokens (when token statistics were recorded) or pooled rows with
    activation > 0, per label."""
    kind = "tokens" if stats.has("tokens") else "moments"
    sites = ordered_sites(stats, kind)
    return np.stack([np.concatenate([stats.get(kind, label, site).activation_probability().cpu().numpy()
                                     for site in sites]) for label in labels])


def _group_labels(stats: StatsStore, design: Design) -> tuple[str, ...]:
    kind = "tokens" if stats.has("tokens") else "moments"
    return design.resolve(stats.labels(kind)).labels


@register_score("activation_probability", needs=("tokens",), designs=("one_vs_rest", "groups", "contrast"),
                description="activation probability of the label minus the highest among the other labels")
def activation_probability(stats: StatsStore, design: Design) -> Scores:
    labels = _group_labels(stats, design)
    prob = activation_probabilities(stats, labels)
    rows = labels[:1] if design.kind == "contrast" else labels
    margins = [prob[i] - np.delete(prob, i, axis=0).max(0) for i in range(len(rows))]
    return Scores(np.stack(margins), tuple(rows), columns={"probability": prob[:len(rows)]})


@register_score("lape", needs=("tokens",), designs=("groups", "one_vs_rest"),
                description="language activation probability entropy with the percentile filter (Tang et al. 2024)")
def lape(stats: StatsStore, design: Design, *, quantile: float = 0.95) -> Scores:
    labels = _group_labels(stats, design)
    prob = activation_probabilities(stats, labels)
    entropy = lape_scores(prob)
    bar = np.quantile(prob, quantile)
    values = np.where(prob > bar, entropy[None, :], np.nan)

    def support(percent: float | None, count: int | None) -> np.ndarray:
        share = percent if percent is not None else 100.0 * count / prob.shape[1]
        return lape_select(prob, entropy_percent=share, min_probability_quantile=quantile)

    return Scores(values, labels, larger_is_better=False, support=support,
                  columns={"probability": prob, "entropy": np.broadcast_to(entropy, prob.shape).copy()})


# ---------------------------------------------------------------------------------- average precision
def average_precision(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Average precision of every column of `scores` (n, units) as a ranking of the `positive` rows,
    equal to `sklearn.metrics.average_precision_score` per column (tied scores share one threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        raise NeurolocError("average precision needs both positive and negative stimuli")
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0)
    hits = positive[order].astype(np.float64)
    true_pos = np.cumsum(hits, axis=0)
    depth = np.arange(1, scores.shape[0] + 1, dtype=np.float64)[:, None]
    # A threshold ends where the next score differs (or at the bottom): precision and recall there.
    ends = np.ones_like(ranked, dtype=bool)
    ends[:-1] = ranked[:-1] != ranked[1:]
    precision = np.where(ends, true_pos / depth, 0.0)
    recall_at_end = np.where(ends, true_pos, 0.0)
    # Recall gained at each threshold end = true positives since the previous end.
    previous = np.maximum.accumulate(np.vstack([np.zeros((1, scores.shape[1])), recall_at_end[:-1]]), axis=0)
    gained = np.where(ends, true_pos - previous, 0.0)
    return (gained * precision).sum(0) / n_pos


@register_score("average_precision", needs=("rows",), designs=("one_vs_rest", "contrast", "groups"),
                description="unit activation as a classifier of one label vs the rest (Liu et al. 2025); ties "
                            "broken by the one-vs-rest Welch t")
def average_precision_score(stats: StatsStore, design: Design, *, negate: bool = False) -> Scores:
    """Average precision of each unit's pooled activation (of its negation with `negate`: units whose
    activation drops for the label) as a ranking of the label's texts. AP saturates at 1 for every unit that
    separates a label perfectly (e.g. one template per label), so the Welch t of the same rows (column `t`)
    breaks ties."""
    present = stats.labels("rows")
    comparisons = design.comparisons(present) if design.kind != "groups" else \
        Design.one_vs_rest(design.labels).comparisons(present)
    sites = ordered_sites(stats, "rows")
    sign = -1.0 if negate else 1.0
    rows, ties = [], []
    for target, others in comparisons:
        parts, t_parts = [], []
        for site in sites:
            values = [stats.get("rows", label, site).values() for label in (target, *others)]
            stacked = sign * np.concatenate([v.cpu().numpy() for v in values]).astype(np.float64)
            positive = np.zeros(stacked.shape[0], dtype=bool)
            positive[:values[0].shape[0]] = True
            parts.append(average_precision(stacked, positive))
            t_parts.append(_welch_of_rows(stacked[positive], stacked[~positive]))
        rows.append(np.concatenate(parts))
        ties.append(np.concatenate(t_parts))
    return Scores(np.stack(rows), tuple(t for t, _ in comparisons), columns={"t": np.stack(ties)}, tiebreak="t")


def _welch_of_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Welch t of rows `a` against rows `b` (two-pass moments in float64); NaN (no tie-break) when a side
    has fewer than two rows."""
    if min(len(a), len(b)) < 2:
        return np.full(a.shape[1], np.nan)
    m2 = lambda v: ((v - v.mean(0)) ** 2).sum(0)  # noqa: E731
    return welch_t_test(len(a), a.mean(0), m2(a), len(b), b.mean(0), m2(b)).t


# The attribution scores (gradxact, ig) register themselves from their module; imported last, as it uses
# `register_score` and `Scores` from this one.
from . import attribution_scores  # noqa: E402,F401
