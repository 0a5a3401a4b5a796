"""From a `LanguageSelection` over flat unit indices to named units and tables: unit sets per language
and per category, the per-layer distribution per language, and the per-unit scores table."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...models.layout import Site
from ...units import LabeledUnits, UnitSet, unit_name
from .selection import CATEGORIES, LanguageSelection

__all__ = ["category_units", "language_units", "per_layer_distribution", "scores_table"]


def _site_index(sites: Sequence[Site], widths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    site_of = np.repeat(np.arange(len(sites)), widths)
    index = np.concatenate([np.arange(w) for w in widths])
    return site_of, index


def language_units(selection: LanguageSelection, sites: Sequence[Site], widths: Sequence[int], *,
                   model: dict | None = None, include_agnostic: bool = False) -> LabeledUnits:
    """Language → the units serving it (agnostic units left out unless `include_agnostic`)."""
    keep = selection.category != ""
    if not include_agnostic:
        keep &= selection.category != "agnostic"
    return LabeledUnits({lang: UnitSet.from_flat(selection.assignment[k] & keep, list(sites), list(widths), model=model)
                         for k, lang in enumerate(selection.languages)})


def category_units(selection: LanguageSelection, sites: Sequence[Site], widths: Sequence[int], *,
                   model: dict | None = None) -> LabeledUnits:
    """'specific' / 'related' / 'agnostic' → their units."""
    return LabeledUnits({c: UnitSet.from_flat(selection.category == c, list(sites), list(widths), model=model)
                         for c in CATEGORIES})


def per_layer_distribution(selection: LanguageSelection, sites: Sequence[Site], widths: Sequence[int]) -> pd.DataFrame:
    """Long table: language, category, site, layer, n_units (units at the site), n_selected."""
    site_of, _ = _site_index(sites, widths)
    rows = []
    for k, lang in enumerate(selection.languages):
        for category in CATEGORIES:
            chosen = selection.assignment[k] & (selection.category == category)
            counts = np.bincount(site_of[chosen], minlength=len(sites))
            rows.extend({"language": lang, "category": category, "site": s.kind, "layer": s.layer,
                         "n_units": int(w), "n_selected": int(c)} for s, w, c in zip(sites, widths, counts))
    return pd.DataFrame(rows)


def scores_table(selection: LanguageSelection, sites: Sequence[Site], widths: Sequence[int]) -> pd.DataFrame:
    """One row per unit: unit, site, layer, index, p_<lang> per language, entropy, score, languages it is
    assigned to (comma-separated), category, selected."""
    site_of, index = _site_index(sites, widths)
    frame = pd.DataFrame({
        "unit": [unit_name(sites[s], int(i)) for s, i in zip(site_of, index)],
        "site": [sites[s].kind for s in site_of],
        "layer": np.array([sites[s].layer for s in site_of], dtype=np.int64),
        "index": index.astype(np.int64),
    })
    for k, lang in enumerate(selection.languages):
        frame[f"p_{lang}"] = selection.probability[k]
    frame["entropy"] = selection.entropy
    frame["score"] = selection.score
    languages = np.asarray(selection.languages, dtype=object)
    frame["languages"] = [",".join(languages[selection.assignment[:, u]]) if selection.category[u] else ""
                          for u in range(selection.assignment.shape[1])]
    frame["category"] = selection.category.astype(str)
    frame["selected"] = selection.category != ""
    return frame
