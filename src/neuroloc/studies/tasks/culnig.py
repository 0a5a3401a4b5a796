"""The culture-neuron recipe (CULNIG; Yamamoto et al.) on a table of mean attributions.

The recipe itself is the registered attribution score (`localize.attribution_scores.culnig_scores`, read by
`gradxact` and `ig`): the label's mean attribution minus a control set's, a nuisance set's top units removed,
a z-score bar across labels. `culnig_select` applies it and the one selection rule (`Scores.top`) to a
(labels, units) table in memory — for tables computed elsewhere and for checking the recipe by hand.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import NeurolocError
from ...localize.attribution_scores import culnig_scores, label_zscores

__all__ = ["culnig_select", "label_zscores"]


def culnig_select(label_scores: np.ndarray, label_names: Sequence[str], k: int, *, control: np.ndarray | None = None,
                  nuisance: np.ndarray | None = None, nuisance_percent: float = 1.0, z0: float | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per label the selected flat unit indices (best first; at most `k`; ties to the lower index) and the
    tables `score` (after the control), `z`, `nuisance` (bool per unit) and `selected` (labels × units)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeurolocError(f"k must be an int >= 1, got {k!r}")
    scores = culnig_scores(label_scores, label_names, control=control, nuisance=nuisance,
                           nuisance_percent=nuisance_percent, z0=z0)
    n_units = scores.values.shape[1]
    selected = np.stack([scores.top(r, count=min(k, n_units)) for r in range(len(label_names))])
    chosen = {}
    for r, label in enumerate(label_names):
        index = np.flatnonzero(selected[r])
        chosen[label] = index[np.lexsort((index, -scores.values[r, index]))]
    return chosen, {"score": scores.values, "z": scores.columns["z"], "nuisance": scores.columns["nuisance"][0],
                    "selected": selected}
