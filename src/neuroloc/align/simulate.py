"""Simulated recordings with known structure, for tests, power analyses and checking a pipeline.

Every subject's neuroid j responds with the same signal sⱼ = (standardised features) · wⱼ (a hidden
linear map, sⱼ scaled to unit variance) plus independent Gaussian noise of variance 1/snr. Then
the best any model can reach — and the inter-subject ceiling extrapolated to infinitely many
subjects — is r* = √(snr / (1 + snr)).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError
from .recordings import Recordings


def oracle_r(snr: float) -> float:
    """Correlation between a neuroid's response and its noise-free signal."""
    return float(np.sqrt(snr / (1.0 + snr)))


def simulate_recordings(features: np.ndarray, texts: Sequence[str], groups: Sequence[str] | None = None, *,
                        n_subjects: int = 4, n_neuroids: int = 20, snr: float = 1.0, n_rois: int = 1,
                        seed: int = 0) -> Recordings:
    """Recordings of `n_subjects` × `n_neuroids` neuroids driven by a hidden linear map of `features`
    (stimuli × units), with noise at signal-to-noise variance ratio `snr`; neuroids are split evenly
    over `n_rois` ROIs named roi0, roi1, …"""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != len(texts):
        raise NeurolocError(f"features {features.shape} must have one row per text ({len(texts)})")
    if snr <= 0:
        raise NeurolocError(f"snr must be positive, got {snr}")
    rng = np.random.default_rng(seed)
    sd = features.std(0)
    z = (features - features.mean(0)) / np.where(sd > 0, sd, 1.0)
    signal = z @ rng.normal(size=(features.shape[1], n_neuroids))
    signal = (signal - signal.mean(0)) / signal.std(0)
    blocks, rows = [], []
    for s in range(n_subjects):
        blocks.append(signal + rng.normal(scale=1.0 / np.sqrt(snr), size=signal.shape))
        rows += [{"subject": f"sub{s}", "neuroid_id": f"sub{s}.{j}", "roi": f"roi{j * n_rois // n_neuroids}"}
                 for j in range(n_neuroids)]
    stimuli = pd.DataFrame({"stimulus_id": [f"s{i}" for i in range(len(texts))], "text": list(texts)})
    stimuli["group"] = [str(g) for g in groups] if groups is not None else stimuli["stimulus_id"]
    stimuli["position"] = stimuli.groupby("group", sort=False).cumcount()
    return Recordings(np.concatenate(blocks, axis=1), stimuli, pd.DataFrame(rows),
                      source=f"simulated (snr {snr}, {n_subjects} subjects)")
