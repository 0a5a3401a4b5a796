"""Figures and the HTML report: right panels and labels, atomic PNG writes, a safe self-contained page."""

from __future__ import annotations

import base64
import pathlib
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from neuroloc.errors import NeurolocError
from neuroloc.report.figures import (
    figure_to_png,
    plot_dose_response,
    plot_heatmap,
    plot_layer_distribution,
    plot_lesion,
    plot_probe,
    save_figure,
)
from neuroloc.report.html import PNG_SIGNATURE, Section, render_report, write_report

PERCENTS = (0.125, 0.25, 0.5, 1.0)


def _layers() -> pd.DataFrame:
    rows = [
        {"site": site, "layer": layer, "n_units": n, "n_selected": (layer + 1) * n // 50}
        for site, n in (("residual", 64), ("mlp", 256), ("attn", 4))
        for layer in range(4)
    ]
    return pd.DataFrame(rows)


def _lesion_results(percents=PERCENTS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for benchmark, metric, base in (("blimp", "accuracy", 0.8), ("wikitext", "perplexity", 20.0)):
        rows.append(dict(condition="intact", seed=0, percent=0.0, benchmark=benchmark, subset="overall",
                         metric=metric, value=base))
        for percent in percents:
            rows.append(dict(condition="target", seed=0, percent=percent, benchmark=benchmark, subset="overall",
                             metric=metric, value=base * (1 - 0.1 * percent)))
            for kind in ("random", "magnitude"):
                for seed in range(3):
                    rows.append(dict(condition=kind, seed=seed, percent=percent, benchmark=benchmark,
                                     subset="overall", metric=metric, value=base * (1 - rng.uniform(0, 0.02))))
        # per-subset rows must be ignored when an 'overall' row exists
        rows.append(dict(condition="target", seed=0, percent=percents[0], benchmark=benchmark, subset="part",
                         metric=metric, value=-5.0))
    return pd.DataFrame(rows)


def _probe() -> pd.DataFrame:
    rows = [
        {"neuron_set": ns, "seed": seed, "n_units": n, "split": split, "accuracy": acc - 0.01 * seed,
         "macro_f1": acc - 0.05, "selectivity": acc - 0.5}
        for ns, n in (("language", 100), ("random", 100))
        for split, acc in (("train", 0.9), ("test", 0.7))
        for seed in range(3)
    ]
    return pd.DataFrame(rows)


def _matrix() -> pd.DataFrame:
    labels = ["NOUN", "VERB", "ADJ"]
    return pd.DataFrame([[0.5, -0.2, 0.0], [0.1, 0.8, -0.4], [np.nan, 0.3, -0.9]],
                        index=pd.Index(labels, name="localized class"),
                        columns=pd.Index(labels, name="evaluated class"))


def _assert_labelled(fig: Figure, n_axes: int) -> None:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()


def test_layer_distribution_one_panel_with_totals_in_title():
    fig = plot_layer_distribution(_layers())
    _assert_labelled(fig, 1)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3
    total = int(_layers()["n_selected"].sum())
    assert f"{total:,} of" in ax.get_title()
    assert ax.get_legend() is not None
    residual = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(residual, [100 * ((i + 1) * 64 // 50) / 64 for i in range(4)])


def test_lesion_one_panel_per_benchmark_with_seed_statistics():
    fig = plot_lesion(_lesion_results(percents=(1.0,)))
    _assert_labelled(fig, 2)
    blimp = fig.axes[0]
    assert blimp.get_title() == "blimp"
    bars = [p for p in blimp.patches if p.get_width() > 0]
    assert len(bars) == 4  # intact, target, random, magnitude
    assert [t.get_text().split("\n")[0] for t in blimp.get_xticklabels()] == ["intact", "target", "random",
                                                                            "magnitude"]
    assert bars[1].get_height() == pytest.approx(0.8 * 0.9)  # the 'part' subset row was ignored
    assert len([c for c in blimp.collections if isinstance(c, PathCollection)]) == 2  # seed dots, 2 controls
    assert fig.legends


def test_lesion_requires_a_percent_when_several_and_filters_by_it():
    with pytest.raises(NeurolocError, match="plot_dose_response"):
        plot_lesion(_lesion_results())
    fig = plot_lesion(_lesion_results(), percent=0.5)
    target = [p for p in fig.axes[0].patches if p.get_width() > 0][1]
    assert target.get_height() == pytest.approx(0.8 * 0.95)
    with pytest.raises(NeurolocError, match="available"):
        plot_lesion(_lesion_results(), percent=3.0)


def test_lesion_log_scales_exploding_perplexity():
    results = _lesion_results(percents=(1.0,))
    results.loc[(results.metric == "perplexity") & (results.condition == "target"), "value"] = 900.0
    fig = plot_lesion(results)
    assert fig.axes[0].get_yscale() == "linear"
    assert fig.axes[1].get_yscale() == "log"
    assert "log scale" in fig.axes[1].get_ylabel()


def test_lesion_rejects_ambiguous_subsets_and_missing_columns():
    parts = _lesion_results(percents=(1.0,)).query("subset != 'overall'")
    results = pd.concat([parts, parts.assign(subset="other")])
    with pytest.raises(NeurolocError, match="overall"):
        plot_lesion(results)
    with pytest.raises(NeurolocError, match="value"):
        plot_lesion(_lesion_results().drop(columns="value"))


def test_dose_response_lines_bands_and_intact_reference():
    fig = plot_dose_response(_lesion_results())
    _assert_labelled(fig, 2)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.125", "0.25", "0.5", "1"]
    lines = ax.get_lines()
    assert len(lines) == 4  # target, random, magnitude, intact
    assert lines[-1].get_linestyle() == "--"
    assert len(ax.collections) == 2  # ± sd bands for the two controls
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "target" and "intact model" in labels and any("sd" in label for label in labels)


def test_probe_grouped_bars_with_error_bars():
    fig = plot_probe(_probe())
    _assert_labelled(fig, 1)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 4  # 2 neuron sets × 2 splits
    assert all(c.errorbar is not None for c in bars)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "test"]
    assert "100 units" in ax.get_xticklabels()[0].get_text()
    assert plot_probe(_probe(), metric="selectivity").axes[0].get_ylabel().startswith("Selectivity")
    with pytest.raises(NeurolocError, match="metric"):
        plot_probe(_probe(), metric="loss")


def test_heatmap_annotated_and_centred_at_zero():
    fig = plot_heatmap(_matrix(), "Effect", "Δ accuracy (points)")
    assert len(fig.axes) == 2  # matrix + colorbar
    ax, cbar = fig.axes
    assert ax.get_xlabel() == "evaluated class" and ax.get_ylabel() == "localized class"
    assert cbar.get_ylabel() == "Δ accuracy (points)"
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and "0.80" in texts and "n/a" in texts
    low, high = ax.images[0].get_clim()
    assert low == -high == pytest.approx(-0.9)


def test_save_figure_writes_png_and_closes_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    path = save_figure(plot_layer_distribution(_layers()), tmp_path / "sub" / "layers.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    save_figure(fig, tmp_path / "pyplot.png")
    assert not plt.fignum_exists(fig.number)


def test_save_figure_leaves_nothing_on_failure(tmp_path, monkeypatch):
    fig = plot_heatmap(_matrix(), "Effect", "Δ")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, tmp_path / "heat.png")
    assert list(tmp_path.iterdir()) == []


def _report_html() -> tuple[str, bytes]:
    png = figure_to_png(plot_layer_distribution(_layers()))
    table = pd.DataFrame({"unit": ["layers.1.mlp[7]", "<b>bold</b>"], "t": [5.25, 4.5]})
    sections = [
        Section("<script>alert('x')</script> units", text="First & foremost.\n\nSecond <i>part</i>.",
                figures=[png, plot_heatmap(_matrix(), "Effect", "Δ")], tables=[table], caption="Caption <here>"),
        Section("Lesions", figures=[plot_lesion(_lesion_results(percents=(1.0,)))]),
    ]
    manifest = {"model": "HuggingFaceTB/SmolLM2-135M", "source": "https://huggingface.co", "seed": 0}
    return render_report("Report <script>alert(1)</script>", sections, manifest), png


def test_html_escapes_text_and_embeds_everything():
    html, png = _report_html()
    assert "<script" not in html.lower()
    assert "<title>Report &lt;script&gt;alert(1)&lt;/script&gt;</title>" in html
    assert "<p>First &amp; foremost.</p>" in html and "Second &lt;i&gt;part&lt;/i&gt;." in html
    assert "Caption &lt;here&gt;" in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3
    assert base64.b64decode(images[0]) == png
    assert all(base64.b64decode(data)[:8] == PNG_SIGNATURE for data in images)
    assert "layers.1.mlp[7]" in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "<table" in html
    assert "<details><summary>Run manifest</summary>" in html
    assert "&quot;model&quot;: &quot;HuggingFaceTB/SmolLM2-135M&quot;" in html


def test_html_references_no_external_resources():
    html, _ = _report_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"url\(|@import|<link|<script", html, re.IGNORECASE)
    assert all(ref.startswith("#") for ref in re.findall(r'href="([^"]*)"', html))


def test_html_rejects_bytes_that_are_not_png():
    with pytest.raises(NeurolocError, match="PNG"):
        render_report("t", [Section("s", figures=[b"GIF89a..."])], None)


def test_write_report_is_atomic(tmp_path, monkeypatch):
    path = write_report(tmp_path / "report.html", "Title", [Section("Only", text="hi")], {"a": 1})
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    def half_write(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path / "other.html", "Title", [Section("Only", text="hi")], None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
