"""Recordings readers: brain-score netCDF, wide and long tables, and the errors users meet."""

import numpy as np
import pandas as pd
import pytest

from neuroloc.align import read_recordings
from neuroloc.align.metric import group_folds
from neuroloc.errors import NeurolocError

TEXTS = ["The dog barked.", "It ran away.", "A cat sat.", "She smiled.", "Rain fell.", "We left early."]
STORIES = ["s1", "s1", "s1", "s2", "s2", "s2"]


def brainscore_assembly(responses, subjects, rois):
    """An assembly as brainio writes it: MultiIndex presentation/neuroid dims, a singleton time_bin."""
    xr = pytest.importorskip("xarray")
    n_stim, n_neur = responses.shape
    presentation = pd.MultiIndex.from_arrays(
        [[f"id{i}" for i in range(n_stim)], TEXTS[:n_stim], STORIES[:n_stim], [10, 12, 11, 20, 21, 22][:n_stim]],
        names=["stimulus_id", "stimulus", "story", "sentence_num"])
    neuroid = pd.MultiIndex.from_arrays([subjects, [f"v{j}" for j in range(n_neur)], rois],
                                        names=["subject", "neuroid_id", "roi"])
    array = xr.DataArray(responses[:, :, None], dims=("presentation", "neuroid", "time_bin"),
                         coords={"time_bin": [0]})
    array = array.assign_coords(xr.Coordinates.from_pandas_multiindex(presentation, "presentation"))
    array = array.assign_coords(xr.Coordinates.from_pandas_multiindex(neuroid, "neuroid"))
    return array


@pytest.mark.parametrize("engine", ["scipy", "h5netcdf"])  # netCDF3, and netCDF4 (brainio's format)
def test_netcdf_in_brainscore_layout(tmp_path, engine):
    if engine == "h5netcdf":
        pytest.importorskip("h5netcdf")
    rng = np.random.default_rng(0)
    responses = rng.normal(size=(6, 4))
    subjects, rois = ["A", "A", "B", "B"], ["lang", "md", "lang", "md"]
    path = tmp_path / "assembly.nc"
    brainscore_assembly(responses, subjects, rois).reset_index(["presentation", "neuroid"]).to_netcdf(
        path, engine=engine)
    rec = read_recordings(path)
    np.testing.assert_allclose(rec.responses, responses)
    assert rec.texts == TEXTS
    assert rec.groups.tolist() == STORIES
    assert rec.stimuli.position.tolist() == [0, 2, 1, 0, 1, 2]  # global numbers → order within the story
    assert rec.neuroids.subject.tolist() == subjects and rec.neuroids.roi.tolist() == rois
    assert rec.subjects == ["A", "B"]
    # the in-memory DataArray (MultiIndex kept) reads the same
    again = read_recordings(brainscore_assembly(responses, subjects, rois).to_dataset(name="assembly"))
    np.testing.assert_allclose(again.responses, responses)
    assert again.neuroids.neuroid_id.tolist() == ["v0", "v1", "v2", "v3"]


def test_netcdf_errors_name_the_problem(tmp_path):
    xr = pytest.importorskip("xarray")
    array = xr.DataArray(np.zeros((3, 2)), dims=("presentation", "neuroid"),
                         coords={"words": ("presentation", ["a", "b", "c"])})
    array.to_netcdf(tmp_path / "notext.nc", engine="scipy")
    with pytest.raises(NeurolocError, match="no text column"):
        read_recordings(tmp_path / "notext.nc")
    wrong = xr.DataArray(np.zeros((3, 2)), dims=("stimulus", "voxel"))
    with pytest.raises(NeurolocError, match="presentation × neuroid"):
        read_recordings(wrong)
    with pytest.raises(NeurolocError, match="does not exist"):
        read_recordings(tmp_path / "absent.nc")


def test_wide_table_detects_text_and_numeric_responses(tmp_path):
    frame = pd.DataFrame({"Sentence": TEXTS, "Story": STORIES, "lang_roi": np.arange(6.0), "md_roi": np.ones(6),
                          "note": list("abcdef")})
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    rec = read_recordings(path)
    assert rec.texts == TEXTS and rec.groups.tolist() == STORIES
    assert rec.neuroids.neuroid_id.tolist() == ["lang_roi", "md_roi"]
    np.testing.assert_allclose(rec.responses[:, 0], np.arange(6.0))
    one = read_recordings(path, response_columns=["lang_roi"])
    assert one.responses.shape == (6, 1)
    parquet = tmp_path / "table.parquet"
    frame.to_parquet(parquet)
    np.testing.assert_allclose(read_recordings(parquet).responses, rec.responses)


def test_wide_with_subjects_and_long_form_agree():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 2, 3))  # stimulus × subject × voxel
    wide = pd.DataFrame([{"text": TEXTS[i], "story": STORIES[i], "subject": f"S{s}",
                          **{f"v{j}": values[i, s, j] for j in range(3)}} for s in range(2) for i in range(6)])
    long = pd.DataFrame([{"stimulus": TEXTS[i], "story": STORIES[i], "subject": f"S{s}", "neuroid": f"v{j}",
                          "value": values[i, s, j]} for i in range(6) for s in range(2) for j in range(3)])
    a, b = read_recordings(wide), read_recordings(long)
    assert a.subjects == b.subjects == ["S0", "S1"]
    for rec in (a, b):
        for s in range(2):
            for j in range(3):
                column = np.flatnonzero((rec.neuroids.subject == f"S{s}").to_numpy()
                                        & rec.neuroids.neuroid_id.str.endswith(f"v{j}").to_numpy())
                np.testing.assert_allclose(rec.responses[:, column[0]], values[:, s, j])
        assert rec.texts == TEXTS


def test_missing_text_column_is_one_clear_error():
    with pytest.raises(NeurolocError, match="no text column.*--text-column"):
        read_recordings(pd.DataFrame({"words": TEXTS, "r": np.ones(6)}))
    with pytest.raises(NeurolocError, match="no text column 'sent'"):
        read_recordings(pd.DataFrame({"text": TEXTS, "r": np.ones(6)}), text="sent")


def test_nan_responses_dropped_with_counts_or_refused_when_strict():
    responses = np.arange(18.0).reshape(6, 3)
    responses[2, :] = np.nan  # a stimulus nobody saw
    responses[4, 1] = np.nan  # one neuroid with a gap
    frame = pd.DataFrame({"text": TEXTS, "story": STORIES, **{f"v{j}": responses[:, j] for j in range(3)}})
    with pytest.warns(UserWarning, match="1 stimuli without any response and 1 neuroids with some NaN"):
        rec = read_recordings(frame)
    assert rec.responses.shape == (5, 2) and not np.isnan(rec.responses).any()
    assert TEXTS[2] not in rec.texts and rec.neuroids.neuroid_id.tolist() == ["v0", "v2"]
    with pytest.raises(NeurolocError, match="NaN.*--strict"):
        read_recordings(frame, strict=True)


def test_repeated_stimuli_with_different_texts_are_refused():
    frame = pd.DataFrame({"stimulus_id": ["a", "b", "a"], "text": ["One.", "Two.", "Other."], "r": [1.0, 2.0, 3.0]})
    with pytest.raises(NeurolocError, match="'a' repeats with different texts"):
        read_recordings(frame)


def test_repeated_presentations_are_averaged():
    frame = pd.DataFrame({"text": ["One.", "Two.", "One."], "r": [1.0, 2.0, 3.0]})
    with pytest.warns(UserWarning, match="1 repeated presentations averaged"):
        rec = read_recordings(frame)
    assert rec.texts == ["One.", "Two."]
    np.testing.assert_allclose(rec.responses[:, 0], [2.0, 2.0])


def test_fewer_stimuli_than_folds_and_single_group_are_refused():
    with pytest.raises(NeurolocError, match="6 stimuli but 10 folds"):
        group_folds(STORIES, 10)
    with pytest.raises(NeurolocError, match="one passage"):
        group_folds(["p"] * 12, 3)
