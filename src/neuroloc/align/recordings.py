"""Brain recordings as one matrix: stimuli × neuroids, with stimulus and neuroid tables beside it.

Readers accept brain-score's netCDF layout (an xarray DataArray `presentation × neuroid` with coords
`stimulus_id`, `stimulus`, a passage/story coord, `subject`, `neuroid_id`, an ROI label) and plain
CSV/Parquet tables in wide form (a text column and one column per response) or long form
(stimulus, neuroid, value). Nothing here depends on brain-score itself.
"""

from __future__ import annotations

import hashlib

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import NeurolocError

TEXT_CANDIDATES = ("text", "stimulus", "sentence")
GROUP_CANDIDATES = ("story", "passage", "passage_label", "passage_index", "group", "experiment")
SUBJECT_CANDIDATES = ("subject", "subject_uid", "subject_id", "participant")
ROI_CANDIDATES = ("roi", "froi_area", "region", "atlas")
ID_CANDIDATES = ("stimulus_id",)
POSITION_CANDIDATES = ("stimulus_num", "sentence_num", "position")


@dataclass
class Recordings:
    """Responses (n_stimuli × n_neuroids, float64), one row of `stimuli` per stimulus (columns
    `stimulus_id`, `text`, `group`, `position` = order within its group) and one row of `neuroids`
    per response column (`neuroid_id`, `subject`, `roi`)."""

    responses: np.ndarray
    stimuli: pd.DataFrame
    neuroids: pd.DataFrame
    source: str = "in-memory"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.responses = np.asarray(self.responses, dtype=np.float64)
        if self.responses.ndim != 2:
            raise NeurolocError(f"{self.source}: responses must be stimuli × neuroids, got {self.responses.shape}")
        if self.responses.shape != (len(self.stimuli), len(self.neuroids)):
            raise NeurolocError(f"{self.source}: {self.responses.shape} responses for {len(self.stimuli)} stimuli "
                                f"and {len(self.neuroids)} neuroids")
        self.stimuli = self.stimuli.reset_index(drop=True)
        self.neuroids = self.neuroids.reset_index(drop=True)

    @property
    def texts(self) -> list[str]:
        return self.stimuli["text"].tolist()

    def content_hash(self) -> str:
        """SHA-256 of the responses, the stimuli and the neuroids (what a checkpoint of them depends on)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.responses).tobytes())
        for table in (self.stimuli, self.neuroids):
            digest.update(table.to_csv(index=False).encode())
        return digest.hexdigest()

    @property
    def groups(self) -> np.ndarray:
        return self.stimuli["group"].astype(str).to_numpy()

    @property
    def subjects(self) -> list[str]:
        return sorted(self.neuroids["subject"].astype(str).unique())

    @property
    def n_stimuli(self) -> int:
        return self.responses.shape[0]

    @property
    def n_neuroids(self) -> int:
        return self.responses.shape[1]

    def select_neuroids(self, keep: np.ndarray) -> "Recordings":
        keep = np.asarray(keep, dtype=bool)
        return Recordings(self.responses[:, keep], self.stimuli, self.neuroids[keep], self.source, list(self.notes))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "n_stimuli": self.n_stimuli, "n_neuroids": self.n_neuroids,
                "n_groups": int(self.stimuli["group"].nunique()), "subjects": self.subjects,
                "rois": sorted(self.neuroids["roi"].astype(str).unique()), "notes": self.notes}


# --------------------------------------------------------------------------------------------- checks
def _pick(columns: Sequence[str], explicit: str | None, candidates: Sequence[str], what: str, where: str,
          required: bool = False) -> str | None:
    """The column named `explicit`, else the first candidate present (any case)."""
    by_lower = {str(c).lower(): str(c) for c in columns}
    if explicit is not None:
        if explicit in columns:
            return explicit
        if explicit.lower() in by_lower:
            return by_lower[explicit.lower()]
        raise NeurolocError(f"{where}: no {what} column {explicit!r}; columns are {list(columns)}")
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    if required:
        raise NeurolocError(f"{where}: no {what} column (looked for {', '.join(candidates)} in any case); "
                            f"name it with --{what}-column; columns are {list(columns)}")
    return None


def finalize(responses: np.ndarray, stimuli: pd.DataFrame, neuroids: pd.DataFrame, source: str,
             *, strict: bool = False) -> Recordings:
    """Check texts, ids and NaNs, fill missing group/position/subject/roi, and build Recordings.

    NaN handling follows brain-score: stimuli with no response at all are dropped, then neuroids
    with any NaN left (e.g. a subject who missed an experiment); both with a warning and a count,
    or an error with `strict`.
    """
    stimuli = stimuli.reset_index(drop=True).copy()
    neuroids = neuroids.reset_index(drop=True).copy()
    responses = np.asarray(responses, dtype=np.float64)
    texts = stimuli["text"]
    if texts.isna().any():
        raise NeurolocError(f"{source}: stimulus {int(np.flatnonzero(texts.isna())[0])} has no text")
    stimuli["text"] = texts.astype(str)
    empty = stimuli["text"].str.strip() == ""
    if empty.any():
        raise NeurolocError(f"{source}: stimulus {int(np.flatnonzero(empty)[0])} has an empty text")
    if "stimulus_id" not in stimuli:
        stimuli["stimulus_id"] = [f"stim{i}" for i in range(len(stimuli))]
    stimuli["stimulus_id"] = stimuli["stimulus_id"].astype(str)
    texts_per_id = stimuli.groupby("stimulus_id")["text"].nunique()
    if (texts_per_id > 1).any():
        bad = texts_per_id[texts_per_id > 1].index[0]
        shown = stimuli.loc[stimuli.stimulus_id == bad, "text"].unique()[:2].tolist()
        raise NeurolocError(f"{source}: stimulus {bad!r} repeats with different texts {shown}; give each text "
                            "its own stimulus id")
    if stimuli["stimulus_id"].duplicated().any():
        raise NeurolocError(f"{source}: stimulus {stimuli.stimulus_id[stimuli.stimulus_id.duplicated()].iloc[0]!r} "
                            "appears twice; average repetitions before aligning")
    notes: list[str] = []
    if "group" not in stimuli or stimuli["group"].isna().all():
        stimuli["group"] = stimuli["stimulus_id"]
        notes.append("no passage/story column: every stimulus is its own cross-validation group")
    stimuli["group"] = stimuli["group"].astype(str)
    if "position" in stimuli:  # any order key (e.g. a global sentence number) → rank within the passage
        stimuli["position"] = stimuli.groupby("group", sort=False)["position"].rank(method="first").astype(int) - 1
    else:
        stimuli["position"] = stimuli.groupby("group", sort=False).cumcount()
    for column, default in (("subject", "subject"), ("roi", "all")):
        if column not in neuroids:
            neuroids[column] = default
        neuroids[column] = neuroids[column].fillna(default).astype(str)
    if "neuroid_id" not in neuroids:
        neuroids["neuroid_id"] = [f"n{i}" for i in range(len(neuroids))]
    neuroids["neuroid_id"] = neuroids["neuroid_id"].astype(str)

    missing = np.isnan(responses)
    if missing.any():
        empty_rows = missing.all(1)
        partial_cols = missing[~empty_rows].any(0)
        message = (f"{source}: {int(missing.sum())} NaN responses: {int(empty_rows.sum())} stimuli without any "
                   f"response and {int(partial_cols.sum())} neuroids with some NaN")
        if strict:
            raise NeurolocError(message + " (run without --strict to drop them)")
        warnings.warn(message + "; dropping them", stacklevel=2)
        notes.append(message + "; dropped")
        responses, stimuli = responses[~empty_rows], stimuli[~empty_rows]
        responses, neuroids = responses[:, ~partial_cols], neuroids[~partial_cols]
    if responses.shape[1] == 0 or responses.shape[0] == 0:
        raise NeurolocError(f"{source}: no responses left after dropping NaN")
    return Recordings(responses, stimuli, neuroids, source, notes)


# --------------------------------------------------------------------------------------------- xarray
def from_xarray(array: Any, *, text: str | None = None, group: str | None = None, subject: str | None = None,
                roi: str | None = None, strict: bool = False, source: str = "xarray") -> Recordings:
    """Recordings from a brain-score style DataArray (`presentation × neuroid`, extra singleton dims
    such as `time_bin` are squeezed; MultiIndex coords are flattened)."""
    extra = [d for d in array.dims if d not in ("presentation", "neuroid")]
    if "presentation" not in array.dims or "neuroid" not in array.dims:
        raise NeurolocError(f"{source}: expected dims presentation × neuroid (brain-score layout), got {array.dims}")
    for dim in extra:
        if array.sizes[dim] != 1:
            raise NeurolocError(f"{source}: extra dimension {dim!r} of size {array.sizes[dim]}; select or average "
                                f"it first (e.g. array.mean({dim!r}))")
    array = array.squeeze(extra, drop=True) if extra else array
    indexes = [name for name, index in array.indexes.items() if isinstance(index, pd.MultiIndex)]
    if indexes:
        array = array.reset_index(indexes)
    array = array.transpose("presentation", "neuroid")

    def coords_on(dim: str) -> dict[str, np.ndarray]:
        return {str(n): np.asarray(c.values) for n, c in array.coords.items() if c.dims == (dim,) and n != dim}

    pres, neur = coords_on("presentation"), coords_on("neuroid")
    text_col = _pick(list(pres), text, TEXT_CANDIDATES, "text", source, required=True)
    stimuli = pd.DataFrame({"text": pres[text_col]})
    id_col = _pick(list(pres), None, ID_CANDIDATES, "stimulus id", source)
    if id_col:
        stimuli["stimulus_id"] = pres[id_col]
    group_col = _pick(list(pres), group, GROUP_CANDIDATES, "group", source)
    if group_col:
        stimuli["group"] = pres[group_col]
    position_col = _pick(list(pres), None, POSITION_CANDIDATES, "position", source)
    if position_col:
        stimuli["position"] = pres[position_col]
    neuroids = pd.DataFrame(index=range(array.sizes["neuroid"]))
    for column, explicit, candidates in (("subject", subject, SUBJECT_CANDIDATES), ("roi", roi, ROI_CANDIDATES),
                                         ("neuroid_id", None, ("neuroid_id",))):
        found = _pick(list(neur), explicit, candidates, column, source)
        if found:
            neuroids[column] = neur[found]
    return finalize(np.asarray(array.values, dtype=np.float64), stimuli, neuroids, source, strict=strict)


def read_netcdf(path: str | Path, **kwargs: Any) -> Recordings:
    """Read a brain-score assembly saved as netCDF (netCDF3 via scipy, netCDF4 via h5netcdf)."""
    try:
        import xarray as xr
    except ImportError:
        raise NeurolocError("reading netCDF recordings needs xarray: pip install 'neuroloc[align]'") from None
    path = Path(path)
    try:
        dataset = xr.open_dataset(path)
    except (ValueError, OSError) as error:
        raise NeurolocError(f"{path}: cannot open as netCDF ({error}); netCDF4 files need h5netcdf "
                            "(pip install 'neuroloc[align]')") from None
    with dataset:
        variables = list(dataset.data_vars)
        if len(variables) != 1:
            raise NeurolocError(f"{path}: expected one data variable (the assembly), found {variables}")
        return from_xarray(dataset[variables[0]].load(), source=str(path), **kwargs)


# --------------------------------------------------------------------------------------------- tables
def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    raise NeurolocError(f"{path}: unknown table format {suffix!r}; use .csv, .tsv or .parquet")


def from_table(frame: pd.DataFrame, *, text: str | None = None, response_columns: Sequence[str] | None = None,
               group: str | None = None, subject: str | None = None, roi: str | None = None,
               strict: bool = False, source: str = "table") -> Recordings:
    """Recordings from a wide table (text, optional group/subject columns, one column per response) or
    a long one (columns `neuroid` and `value`, plus the stimulus text and optional subject/roi)."""
    if frame.empty:
        raise NeurolocError(f"{source}: the table has no rows")
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    text_col = _pick(columns, text, TEXT_CANDIDATES, "text", source, required=True)
    id_col = _pick(columns, None, ID_CANDIDATES, "stimulus id", source)
    group_col = _pick(columns, group, GROUP_CANDIDATES, "group", source)
    subject_col = _pick(columns, subject, SUBJECT_CANDIDATES, "subject", source)
    position_col = _pick(columns, None, POSITION_CANDIDATES, "position", source)
    key = id_col or text_col
    long_form = "neuroid" in columns and "value" in columns
    if long_form:
        roi_col = _pick(columns, roi, ROI_CANDIDATES, "roi", source)
        neuroid_keys = [c for c in (subject_col, "neuroid") if c]
        wide = frame.pivot_table(index=key, columns=neuroid_keys, values="value", aggfunc="mean", sort=False)
        neuroids = wide.columns.to_frame(index=False).rename(columns={subject_col: "subject"} if subject_col else {})
        neuroids["neuroid_id"] = ["/".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in wide.columns]
        if roi_col:
            roi_of = frame.drop_duplicates(neuroid_keys).set_index(neuroid_keys)[roi_col]
            neuroids["roi"] = roi_of.reindex(wide.columns).to_numpy()
        responses = wide.to_numpy(dtype=np.float64)
        order = wide.index
    else:
        meta = {c for c in (text_col, id_col, group_col, subject_col, position_col) if c}
        if response_columns is None:
            response_columns = [c for c in columns if c not in meta and pd.api.types.is_numeric_dtype(frame[c])]
        else:
            absent = [c for c in response_columns if c not in columns]
            if absent:
                raise NeurolocError(f"{source}: response columns {absent} not found; columns are {columns}")
            non_numeric = [c for c in response_columns if not pd.api.types.is_numeric_dtype(frame[c])]
            if non_numeric:
                raise NeurolocError(f"{source}: response columns {non_numeric} are not numeric")
        if not response_columns:
            raise NeurolocError(f"{source}: no numeric response columns; choose them with --response-columns")
        if subject_col:  # one row per (stimulus, subject): each subject gets its own neuroids
            wide = frame.pivot_table(index=key, columns=subject_col, values=list(response_columns),
                                     aggfunc="mean", sort=False)
            neuroids = pd.DataFrame({"roi": wide.columns.get_level_values(0).astype(str),
                                     "subject": wide.columns.get_level_values(1).astype(str)})
            neuroids["neuroid_id"] = neuroids["subject"] + "/" + neuroids["roi"]
            responses, order = wide.to_numpy(dtype=np.float64), wide.index
        else:
            grouped = frame.groupby(key, sort=False)[list(response_columns)].mean()
            neuroids = pd.DataFrame({"neuroid_id": list(response_columns), "roi": list(response_columns)})
            responses, order = grouped.to_numpy(dtype=np.float64), grouped.index
    firsts = frame.drop_duplicates(key).set_index(key)
    if id_col:
        texts_per_id = frame.groupby(id_col)[text_col].nunique()
        if (texts_per_id > 1).any():
            bad = texts_per_id[texts_per_id > 1].index[0]
            shown = frame.loc[frame[id_col] == bad, text_col].unique()[:2].tolist()
            raise NeurolocError(f"{source}: stimulus {bad!r} repeats with different texts {shown}; give each text "
                                "its own stimulus id")
    stimuli = pd.DataFrame({"text": firsts.loc[order, text_col].to_numpy() if id_col else np.asarray(order)})
    stimuli["stimulus_id"] = np.asarray(order).astype(str) if id_col else [f"stim{i}" for i in range(len(order))]
    if group_col:
        stimuli["group"] = firsts.loc[order, group_col].to_numpy()
    if position_col:
        stimuli["position"] = firsts.loc[order, position_col].to_numpy()
    keys = [key] + [c for c in (subject_col, "neuroid" if long_form else None) if c]
    repeats = int(frame.duplicated(keys).sum())
    if repeats:
        warnings.warn(f"{source}: {repeats} repeated presentations averaged", stacklevel=2)
    return finalize(responses, stimuli, neuroids, source, strict=strict)


def read_table(path: str | Path, **kwargs: Any) -> Recordings:
    """Read a CSV/TSV/Parquet table of responses (see `from_table`)."""
    path = Path(path)
    if not path.is_file():
        raise NeurolocError(f"recordings file {path} does not exist")
    return from_table(_read_frame(path), source=str(path), **kwargs)


def read_recordings(source: Any, **kwargs: Any) -> Recordings:
    """Recordings from a path (.nc netCDF, .csv/.tsv/.parquet table), a DataFrame, a DataArray, or
    Recordings (returned as is)."""
    if isinstance(source, Recordings):
        return source
    if isinstance(source, pd.DataFrame):
        return from_table(source, **kwargs)
    if hasattr(source, "dims") and hasattr(source, "coords"):
        if hasattr(source, "data_vars"):  # a Dataset holding the assembly
            if len(source.data_vars) != 1:
                raise NeurolocError(f"expected one data variable (the assembly), found {list(source.data_vars)}")
            source = source[next(iter(source.data_vars))]
        return from_xarray(source, **{k: v for k, v in kwargs.items() if k != "response_columns"})
    path = Path(source)
    if path.suffix.lower() in (".nc", ".netcdf", ".nc4", ".cdf"):
        if not path.is_file():
            raise NeurolocError(f"recordings file {path} does not exist")
        return read_netcdf(path, **{k: v for k, v in kwargs.items() if k != "response_columns"})
    return read_table(path, **kwargs)
