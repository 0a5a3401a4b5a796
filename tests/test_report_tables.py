"""Report tables read as tables: no row counter (even after rows were filtered out), no `<NA>` or NaN (a dash),
no column without a single value, and labels kept when the index holds them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from neuroloc.report.html import _table


def test_tables_hide_row_counters_and_missing_values():
    frame = pd.DataFrame({"features": ["units", "all", "position"], "layer": pd.array([None, 3, None], "Int64"),
                          "score": [0.1, np.nan, -0.3], "ceiling": [np.nan] * 3}, index=[0, 2, 3])
    html = _table(frame)
    assert "<NA>" not in html and "NaN" not in html and "nan" not in html
    assert "ceiling" not in html  # a column with no value says nothing
    assert "<th>0</th>" not in html and "<th>2</th>" not in html  # the filtered row counter is not shown
    assert html.count("–") == 3  # two missing layers and one missing score
    labelled = _table(frame.set_index("features"))
    assert "<th>units</th>" in labelled


def test_the_lesion_caption_names_the_units_the_options_chose():
    from types import SimpleNamespace

    from neuroloc.pipelines.lesion import LesionResult

    rows = [("intact", None, 0), ("target", 5.0, 8), ("target", 10.0, 16), ("target", 10.0, 16), ("random", 5.0, 8)]
    sized = pd.DataFrame(rows, columns=["condition", "percent", "n_units"])
    one_set = SimpleNamespace(units=[0])
    assert LesionResult._units_text(SimpleNamespace(results=sized, inputs=one_set)) == \
        "the units at each size (5%: 8 units, 10%: 16 units)"
    unsized = sized.assign(percent=None)
    assert LesionResult._units_text(SimpleNamespace(results=unsized, inputs=one_set)) == "1 unit"
    config = SimpleNamespace(control_kinds=("random", "magnitude"))
    assert "magnitude: similar mean |activation|" in LesionResult._controls_text(SimpleNamespace(config=config))
