"""UnitIndex: one layout of units for names, tables, flat positions and other tools' addresses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroloc import Localizer, NeurolocError, Site, StimulusSet, UnitIndex, UnitSet, wrap_model
from neuroloc.models.hooks import record
from tests.test_seams import NONWORDS, SENTENCES
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama"), tiny_tokenizer())


def test_names_table_and_flat_positions_agree(lm):
    index = UnitIndex.from_layout(lm.layout, ["residual", "mlp", "attn"])
    assert len(index) == 2 * (32 + 48 + 4)
    table = index.table()
    assert list(table.columns) == ["unit", "site", "layer", "index"] and len(table) == len(index)
    for flat in (0, 31, 32, 79, 80, 83, 84, len(index) - 1):
        site, unit = index.locate(flat)
        assert index.flat(site, unit) == flat
        assert table.unit[flat] == f"{site.name}[{unit}]"
        assert (table.site[flat], table.layer[flat], table["index"][flat]) == (site.kind, site.layer, unit)
    parts = index.split(np.arange(len(index)))
    assert [p[0] for p in parts.values()] == list(index.offsets[:-1])
    units = index.units([0, 40, 90])
    assert units.names() == [table.unit[0], table.unit[40], table.unit[90]]
    assert UnitIndex.of(units) == UnitIndex(units.sites, units.widths)
    with pytest.raises(NeurolocError, match="outside"):
        index.locate(len(index))
    with pytest.raises(NeurolocError, match="has 32 units"):
        index.flat(Site(0, "residual"), 32)


def test_scores_tables_are_built_from_the_index(lm):
    stimuli = StimulusSet("toy", tuple(SENTENCES + NONWORDS), tuple("S" * 6 + "N" * 6), ("S", "N"))
    fitted = Localizer(["residual", "mlp"], percent=10, batch_size=4).fit(lm, stimuli)
    frame = fitted.scores_frame()
    expected = UnitIndex(fitted.sites_, fitted.widths_).table()
    assert frame[["unit", "site", "layer", "index"]].equals(expected)


def test_module_paths_address_the_same_activations_as_neuroloc(lm):
    """A plain PyTorch hook on the module path (input or output, as the index says) sees what neuroloc
    records at the site."""
    index = UnitIndex.from_layout(lm.layout, ["residual", "mlp", "attn"], layers=[1])
    paths = index.module_paths(lm.model, lm.layout)
    assert paths[Site(1, "residual")] == ("model.layers.1", "output")
    assert paths[Site(1, "mlp")] == ("model.layers.1.mlp.down_proj", "input")
    assert paths[Site(1, "attn")] == ("model.layers.1.self_attn.o_proj", "input")
    ids = torch.tensor([[0, 5, 9, 14, 3]])
    seen = {}
    handles = []
    for site, (path, side) in paths.items():
        module = lm.model.get_submodule(path)
        if side == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, s=site: seen.__setitem__(s, a[0].clone())))
        else:
            handles.append(module.register_forward_hook(
                lambda m, a, out, s=site: seen.__setitem__(s, (out[0] if isinstance(out, tuple) else out).clone())))
    with torch.no_grad():
        lm.model(input_ids=ids)
    for handle in handles:
        handle.remove()
    with record(lm.layout, list(paths), stop_early=False) as recorded, torch.no_grad():
        lm.model(input_ids=ids)
    for site in paths:
        torch.testing.assert_close(recorded[site.name], seen[site])


def test_transformer_lens_names():
    index = UnitIndex([Site(12, "residual"), Site(3, "mlp"), Site(5, "attn"), Site(3, "mlp_gate")], [4, 4, 2, 4])
    assert index.transformer_lens_hooks() == {Site(12, "residual"): "blocks.12.hook_resid_post",
                                              Site(3, "mlp"): "blocks.3.mlp.hook_post",
                                              Site(5, "attn"): "blocks.5.attn.hook_z",
                                              Site(3, "mlp_gate"): None}
    assert isinstance(index.units([1]), UnitSet)
