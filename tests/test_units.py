"""UnitSet conversions, set algebra, persistence and model checks."""

import json

import numpy as np
import pytest
import torch

from neuroloc import NeurolocError, Site, UnitSet
from neuroloc.models.loading import wrap_model
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def layout():
    return wrap_model(tiny_model("gpt2"), tiny_tokenizer()).layout


def test_names_round_trip_and_flat_indices(layout):
    names = ["layers.1.residual[31]", "layers.0.mlp[0]", "layers.0.residual[3]", "layers.1.attn[2]"]
    units = UnitSet.from_names(names, layout)
    assert sorted(units.names()) == sorted(names)
    assert len(units) == 4 and "layers.1.attn[2]" in units and "layers.1.attn[1]" not in units
    # site order: (layer, kind) with kinds alphabetical: attn(4) mlp(48) residual(32) per layer
    assert units.sites[:3] == [Site(0, "attn"), Site(0, "mlp"), Site(0, "residual")]
    expected = [4 + 0, 4 + 48 + 3, 84 + 2, 84 + 4 + 48 + 31]
    np.testing.assert_array_equal(units.flat_indices(), expected)
    again = UnitSet.from_flat(expected, units.sites, units.widths)
    assert again == units


def test_counts_and_per_layer_counts(layout):
    units = UnitSet.from_names(["layers.0.residual[1]", "layers.0.residual[2]", "layers.1.residual[0]"], layout)
    assert units.counts() == {"layers.0.residual": 2, "layers.1.residual": 1}
    assert units.per_layer_counts() == [
        {"site": "residual", "layer": 0, "n_units": 32, "n_selected": 2},
        {"site": "residual", "layer": 1, "n_units": 32, "n_selected": 1},
    ]


def test_set_algebra(layout):
    a = UnitSet.from_names(["layers.0.residual[1]", "layers.0.residual[2]"], layout)
    b = UnitSet.from_names(["layers.0.residual[2]", "layers.1.mlp[5]"], layout)
    assert sorted((a | b).names()) == ["layers.0.residual[1]", "layers.0.residual[2]", "layers.1.mlp[5]"]
    assert (a & b).names() == ["layers.0.residual[2]"]
    assert (a - b).names() == ["layers.0.residual[1]"]
    assert a.jaccard(b) == pytest.approx(1 / 3)


def test_save_and_load(tmp_path, layout):
    units = UnitSet.from_names(["layers.0.residual[1]", "layers.1.attn[3]"], layout, model={"spec": "tiny"})
    units.save(tmp_path)
    loaded = UnitSet.load(tmp_path)
    assert loaded == units and loaded.model == {"spec": "tiny"}
    index = json.loads((tmp_path / "units.json").read_text())
    assert index["n_units"] == 2 and index["names"] == units.names()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_names_and_other_models(tmp_path, layout):
    with pytest.raises(NeurolocError, match="cannot parse unit name"):
        UnitSet.from_names(["residual[3]"], layout)
    with pytest.raises(NeurolocError, match="index 99"):
        UnitSet.from_names(["layers.0.residual[99]"], layout)
    foreign = UnitSet({Site(0, "residual"): torch.zeros(64, dtype=torch.bool)}, model={"spec": "big"})
    with pytest.raises(NeurolocError, match="does not fit this model.*big"):
        foreign.check_compatible(layout)
    with pytest.raises(NeurolocError, match="no UnitSet"):
        UnitSet.load(tmp_path / "missing")
