"""Brain alignment: encoding models from units to recordings, with ceilings, baselines and controls."""

from .alignment import AlignmentResult, score_alignment
from .baselines import matched_random_units, permutation_pvalue, position_features
from .ceiling import Ceiling, intersubject_ceiling
from .metric import CVScores, cross_validate, group_folds
from .recordings import Recordings, from_table, from_xarray, read_netcdf, read_recordings, read_table
from .ridge import DEFAULT_ALPHAS, fit_predict
from .simulate import oracle_r, simulate_recordings

__all__ = [
    "DEFAULT_ALPHAS", "AlignmentResult", "CVScores", "Ceiling", "Recordings", "cross_validate", "fit_predict",
    "from_table", "from_xarray", "group_folds", "intersubject_ceiling", "matched_random_units",
    "oracle_r", "permutation_pvalue", "position_features", "read_netcdf", "read_recordings", "read_table",
    "score_alignment", "simulate_recordings",
]
