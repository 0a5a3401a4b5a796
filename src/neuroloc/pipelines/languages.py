"""`neuroloc languages`: language-specific, -related and -agnostic units end to end.

1. Split every language's texts into identification and held-out texts by id (parallel data: the same
   sentences in every language).
2. Count, per language, how often each `mlp_gate` unit is > 0 over every token (statistics cached under
   `statistics/`, keyed by the content hash of model, texts and settings, so a rerun reuses them).
3. Select units with LAPE or the specific/related method; write unit sets, scores, per-layer counts and
   the language × language overlap.
4. Deactivation matrix: zero each language's units, NLL per token on every language's held-out text,
   against matched random units.
5. Steering: continue held-out prompts of one language with another language's units enhanced, and
   measure the share of output in the enhanced language (langid), against random units.

Outputs in `out_dir`: units/languages/ and units/categories/ (LabeledUnits folders: `LabeledUnits.load`),
scores.parquet, layers.csv, overlap.csv, selection.json, deactivation.csv, deactivation_summary.csv,
steering.csv, steering_generations.csv, layers.png, overlap.png, deactivation.png, steering.png,
report.html, manifest.json (all written at once at the end), and statistics/ (written as counted).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..errors import NeurolocError
from ..io import atomic_path, atomic_write_json, atomic_write_with, build_manifest, staged_output
from ..models.loading import LoadedModel
from ..report.figures import save_figure
from ..report.html import Section, write_report
from ..report.language_figures import (deactivation_matrix_frame, plot_language_layers, plot_language_matrix,
                                       steering_matrix_frame)
from ..stimuli.corpora import MultilingualCorpus, split_corpus, unknown_token_shares
from ..studies.languages import (METHODS, ActivationCounts, activation_probability, category_units, count_language,
                                 deactivation_matrix, deactivation_summary, language_units, lape, overlap_table,
                                 per_layer_distribution, prompt_prefix, scores_table, specific_related, steer)
from ..text.encoding import check_bos

__all__ = ["LanguagesResult", "count_corpus", "run_languages"]

SITE_KIND = "mlp_gate"
_COUNTING_VERSION = "neuroloc.languages.counts/1"


@dataclass
class LanguagesResult:
    """What `run_languages` found; `summary` (also in manifest.json) holds the headline numbers."""

    out_dir: Path
    counts: dict
    units: dict
    deactivation: pd.DataFrame | None
    steering: pd.DataFrame | None
    summary: dict


def _weights_fingerprint(lm: LoadedModel) -> str | None:
    """SHA-256 of the parameters of a model with no file identity (built in memory), else None."""
    if lm.identity.get("sha256") or lm.identity.get("config_sha256") or lm.identity.get("revision"):
        return None
    digest = hashlib.sha256()
    for name, tensor in lm.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _statistics_key(lm: LoadedModel, corpus: MultilingualCorpus, lang: str, bos: str, response_only: bool,
                    weights: str | None) -> str:
    payload = {"version": _COUNTING_VERSION, "model": {k: lm.identity.get(k) for k in sorted(lm.identity)},
               "weights": weights,
               "dtype": str(lm.dtype), "site": SITE_KIND, "bos": bos, "response_only": response_only,
               "texts": corpus.content_hash(lang)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def count_corpus(lm: LoadedModel, corpus: MultilingualCorpus, statistics_dir: str | Path | None = None, *,
                 bos: str = "prepend", response_only: bool = False, batch_size: int = 16,
                 progress: bool = False) -> tuple[dict[str, ActivationCounts], dict[str, bool]]:
    """Activation counts per language on every `mlp_gate` site, reusing cached statistics whose key (model,
    texts, settings) matches. Returns (counts, reused per language)."""
    if response_only and corpus.prompts is None:
        raise NeurolocError("response-only counting needs a prompt per text: give a CSV/JSONL with a 'prompt' column")
    sites = lm.layout.sites(SITE_KIND)
    counts, reused = {}, {}
    weights = _weights_fingerprint(lm) if statistics_dir else None
    for lang in corpus.languages:
        key = _statistics_key(lm, corpus, lang, bos, response_only, weights)
        path = Path(statistics_dir) / f"counts-{lang}-{key[:20]}.safetensors" if statistics_dir else None
        if path is not None and path.is_file():
            counts[lang], reused[lang] = ActivationCounts.from_state_dict(load_file(str(path))), True
            continue
        counts[lang] = count_language(lm, corpus.texts[lang], sites, prompts=corpus.prompts[lang] if response_only else None,
                                      batch_size=batch_size, bos=bos, progress=progress,
                                      description=f"counting {lang}").to("cpu")
        reused[lang] = False
        if path is not None:
            with atomic_path(path) as tmp:
                save_file({k: v.contiguous() for k, v in counts[lang].state_dict().items()}, str(tmp),
                          metadata={"format": _COUNTING_VERSION, "key": key, "language": lang})
    return counts, reused


def _probability_table(counts: dict[str, ActivationCounts], languages: Sequence[str]) -> np.ndarray:
    sites = counts[languages[0]].sites
    positive = np.stack([np.concatenate([counts[lang].positive[s].numpy() for s in sites]) for lang in languages])
    return activation_probability(positive, [counts[lang].n for lang in languages])


def _values(counts: ActivationCounts) -> dict[str, torch.Tensor]:
    """Per site name, each unit's mean activation over the tokens where it is > 0 (steering values)."""
    return {site.name: counts.mean_when_active(site).float() for site in counts.sites}


def run_languages(lm: LoadedModel, corpus: MultilingualCorpus, out_dir: str | Path, *, method: str = "lape",
                  percent: float = 1.0, quantile: float = 0.95, n_identify: int = 300, n_heldout: int = 100,
                  deactivate: bool = True, n_deactivation: int | None = None, n_controls: int = 1,
                  steering: bool = True, steer_mode: str = "mean",
                  n_steer_prompts: int = 8, steer_tokens: int = 24, steer_pairs: Sequence[tuple[str, str]] | None = None,
                  response_only: bool = False, bos: str = "prepend", batch_size: int = 16, seed: int = 0,
                  max_unknown_share: float = 0.05, progress: bool = True,
                  parameters: dict | None = None) -> LanguagesResult:
    """Run the whole study into `out_dir` (see the module docstring). The deactivation matrix scores the
    first `n_deactivation` held-out texts of each language (all when None), steering continues the first
    `n_steer_prompts`."""
    if method not in METHODS:
        raise NeurolocError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_bos(bos)
    if n_controls < 0 or n_steer_prompts < 1 or steer_tokens < 1:
        raise NeurolocError("n_controls must be >= 0, n_steer_prompts and steer_tokens >= 1")
    out = Path(out_dir)
    languages = corpus.languages
    if len(languages) < 2:
        raise NeurolocError(f"a language-neuron study needs at least two languages, got {languages}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    unknown = unknown_token_shares(lm.tokenizer, corpus, max_share=max_unknown_share)
    identify, heldout = split_corpus(corpus, n_identify, n_heldout, seed=seed)
    counts, reused = count_corpus(lm, identify, out / "statistics", bos=bos, response_only=response_only,
                                  batch_size=batch_size, progress=progress)
    timings["count_s"] = round(time.perf_counter() - started, 1)

    sites = lm.layout.sites(SITE_KIND)
    widths = [lm.layout.width(SITE_KIND)] * len(sites)
    probability = _probability_table(counts, languages)
    if method == "lape":
        selection = lape(probability, languages, percent=percent, quantile=quantile)
    else:
        selection = specific_related(probability, languages, percent=percent, quantile=quantile)
    per_language = language_units(selection, sites, widths, model=lm.identity)
    per_category = category_units(selection, sites, widths, model=lm.identity)
    distribution = per_layer_distribution(selection, sites, widths)
    overlap = overlap_table(selection.assignment, languages, categories=selection.category)
    scores = scores_table(selection, sites, widths)

    deactivation = summary_table = None
    phase = time.perf_counter()
    if deactivate:
        scored = {lang: texts[:n_deactivation] for lang, texts in heldout.texts.items()}
        deactivation = deactivation_matrix(lm, per_language, scored, n_controls=n_controls, seed=seed,
                                           batch_size=batch_size, progress=progress)
        summary_table = deactivation_summary(deactivation)
    timings["deactivation_s"] = round(time.perf_counter() - phase, 1)
    steering_results = generations = None
    phase = time.perf_counter()
    if steering:
        prompts = {lang: [prompt_prefix(t) for t in heldout.texts[lang][:n_steer_prompts]] for lang in languages}
        values = {lang: _values(counts[lang]) for lang in languages}
        steering_results, generations = steer(lm, prompts, per_language, values=values, mode=steer_mode,
                                              pairs=steer_pairs, n_controls=n_controls, seed=seed,
                                              max_new_tokens=steer_tokens, batch_size=batch_size, progress=progress)
    timings["steering_s"] = round(time.perf_counter() - phase, 1)

    counts_summary = selection.counts()
    summary = {"n_units": counts_summary, "lambda": selection.lambda_, "bar": selection.bar,
               "units_per_language": {lang: len(u) for lang, u in per_language.items()}}
    if summary_table is not None and not summary_table.empty:
        summary["deactivation"] = summary_table.round(5).to_dict("records")
    if steering_results is not None and not steering_results.empty:
        summary["steering_share_target"] = (steering_results.groupby("condition").share_target.mean().round(4).to_dict())
    manifest = build_manifest(
        "languages",
        {"method": method, "percent": percent, "quantile": quantile, "n_identify": n_identify, "n_heldout": n_heldout,
         "n_deactivation": n_deactivation, "n_controls": n_controls, "steer_mode": steer_mode, "n_steer_prompts": n_steer_prompts,
         "steer_tokens": steer_tokens, "response_only": response_only, "bos": bos, "batch_size": batch_size,
         "seed": seed, **(parameters or {})},
        model=lm.identity, site={"kind": SITE_KIND, "meaning": lm.layout.describe()["mlp_gate"],
                                 "gated": lm.layout.gated},
        counting={"tokens": "every token of each text except the BOS the encoding prepends; padding never",
                  "implementation": "neuroloc.studies.languages.count_language (hooks + attention mask)",
                  "tokens_per_language": {lang: counts[lang].n for lang in languages},
                  "tokens_per_character": {lang: round(counts[lang].n / max(1, sum(map(len, identify.texts[lang]))), 4)
                                           for lang in languages} if not response_only else None,
                  "statistics_reused": reused},
        corpus={"identification": identify.describe(), "heldout": heldout.describe(), "source": corpus.source},
        unknown_token_share=unknown, summary=summary, timings=timings,
        language_identifier={"package": "langid", "restricted_to": languages} if steering else None,
    )
    sections = _report_sections(lm, method, selection, distribution, overlap, deactivation, summary_table,
                                steering_results, unknown, n_controls, steer_mode, percent, quantile)
    with staged_output(out) as staging:
        per_language.save(staging / "units" / "languages")
        per_category.save(staging / "units" / "categories")
        atomic_write_with(staging / "scores.parquet", lambda p: scores.to_parquet(p, index=False))
        atomic_write_with(staging / "layers.csv", lambda p: distribution.to_csv(p, index=False))
        atomic_write_with(staging / "overlap.csv", lambda p: overlap.to_csv(p))
        atomic_write_json(staging / "selection.json", {"method": method, "languages": languages, **summary})
        if deactivation is not None:
            atomic_write_with(staging / "deactivation.csv", lambda p: deactivation.to_csv(p, index=False))
            atomic_write_with(staging / "deactivation_summary.csv", lambda p: summary_table.to_csv(p, index=False))
        if steering_results is not None:
            atomic_write_with(staging / "steering.csv", lambda p: steering_results.to_csv(p, index=False))
            atomic_write_with(staging / "steering_generations.csv", lambda p: generations.to_csv(p, index=False))
        for name, figure in sections.figures.items():
            save_figure(figure, staging / f"{name}.png")
        atomic_write_json(staging / "manifest.json", manifest)
        write_report(staging / "report.html", f"Language units of {lm.identity.get('spec', 'the model')}",
                     sections.sections, manifest=manifest)
    return LanguagesResult(out, counts, per_language, deactivation, steering_results, summary)


@dataclass
class _Report:
    sections: list[Section]
    figures: dict


def _report_sections(lm, method, selection, distribution, overlap, deactivation, summary_table, steering_results,
                     unknown, n_controls, steer_mode, percent, quantile) -> _Report:
    figures: dict = {}
    gate = lm.layout.describe()["mlp_gate"]
    described = ("LAPE (Tang et al., 2024): lowest-entropy units" if method == "lape" else
                 f"Zhang et al. (2025): normalised entropy − λ·normalised max probability, λ = {selection.lambda_:.4g}")
    counts = pd.DataFrame([{"language": lang, "units": int(selection.assignment[k].sum()),
                            **{c: int((selection.assignment[k] & (selection.category == c)).sum())
                               for c in ("specific", "related", "agnostic")},
                            "unknown token share": unknown.get(lang, 0.0)}
                           for k, lang in enumerate(selection.languages)])
    figures["layers"] = plot_language_layers(distribution)
    sections = [Section(
        "Language units",
        text=(f"Site: {SITE_KIND} ({gate}). {described}; top {percent:g}% of units, probability bar = the "
              f"{quantile:g} quantile of all activation probabilities ({selection.bar:.4g}). "
              f"Category totals: {selection.counts()['specific']} specific, {selection.counts()['related']} related, "
              f"{selection.counts()['agnostic']} agnostic."),
        figures=[figures["layers"]], tables=[counts])]
    figures["overlap"] = plot_language_matrix(overlap, "Units shared by two languages\n(agnostic units left out)",
                                              "units", fmt=".0f")
    sections.append(Section("Overlap between languages", figures=[figures["overlap"]]))
    if deactivation is not None and not deactivation.empty:
        figures["deactivation"] = plot_language_matrix(deactivation_matrix_frame(deactivation, "target"),
                                                       "NLL change when a language's\nunits are zeroed",
                                                       "Δ NLL per token (nats)")
        panels = [figures["deactivation"]]
        if n_controls:
            panels.append(plot_language_matrix(deactivation_matrix_frame(deactivation, "random"),
                                               f"Matched random units\n(mean of {n_controls})", "Δ NLL per token (nats)"))
        sections.append(Section(
            "Deactivation matrix",
            text=("Rows: the language whose units are zeroed; columns: the held-out text scored. The papers' claim: "
                  "the diagonal rises far more than the rest, and far more than for random units of the same "
                  "count per layer."),
            figures=panels, tables=[summary_table.round(4)]))
    if steering_results is not None and not steering_results.empty:
        figures["steering"] = plot_language_matrix(steering_matrix_frame(steering_results, "target"),
                                                   "Steering: output in the\nenhanced language vs. intact",
                                                   "Δ share")
        table = steering_results.groupby("condition")[["share_target", "share_source"]].mean().reset_index()
        sections.append(Section(
            "Steering the output language",
            text=(f"Prompts in one language (rows), the other language's units enhanced ({steer_mode}); output "
                  "language identified with langid restricted to the study's languages."),
            figures=[figures["steering"]], tables=[table.round(4)]))
    return _Report(sections, figures)
