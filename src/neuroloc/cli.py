"""The `neuroloc` command line: one command per study, generated from its config's declared fields.

Every option is one config field — its flag, help, default and allowed values come from the field's
declaration (`neuroloc.config.param`) — and every study also takes the run settings (`--bos`, `--batch-size`,
`--max-tokens`, `--dtype`, `--device`) and the runner's options (`--out`, `--overwrite`, `--resume`,
`--keep-checkpoints`, `--checkpoint-every`, `--quiet`). The CLI parses no values itself (the config's fields
do) and holds no domain logic. `neuroloc --help` imports no study module, so it answers at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .config import Config, Each, InstanceOf, Interval, Options, flag_of, iter_fields
from .errors import NeurolocError
from .pipelines import DEPRECATED_COMMANDS, STUDIES, study_config

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}


# ---------------------------------------------------------------------------------------------- output
def _console():
    from rich.console import Console

    return Console(stderr=True)


def _say(message: str) -> None:
    _console().print(message, markup=False, highlight=False)


def _rank_prefix() -> str:
    """Under a launcher every process reports its own errors, named by its rank."""
    rank = os.environ.get("RANK")
    return f"rank {rank}: " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""


def _fail(message: str, code: int = 2) -> None:
    """Print one line (verbatim: never rich markup, so `neuroloc[datasets]` keeps its brackets) and exit."""
    from rich.text import Text

    _console().print(Text.assemble(("error:", "bold red"), " ", _rank_prefix(), message), soft_wrap=True)
    sys.exit(code)


def _guarded(action: Callable[[], Any]) -> Any:
    """Run `action`, turning the errors a user can act on into one line and an exit code."""
    from .interrupts import Interrupted

    try:
        return action()
    except NeurolocError as error:
        _fail(str(error))
    except Interrupted as interrupt:
        if interrupt.checkpointed is False:
            _fail(f"interrupted ({interrupt.signal_name}) before anything was checkpointed; nothing was written", code=130)
        _fail(f"interrupted ({interrupt.signal_name}); the work done so far is checkpointed: run the same command "
              "again to resume", code=130)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except OSError as error:
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        _fail(f"cannot read or write{where}: {error.strerror or error}", code=1)


# --------------------------------------------------------------------------------------------- options
def _is_flag(field: dataclasses.Field) -> bool:
    constraints = [c for c in field.metadata.get("constraints", ()) if c is not None]
    return len(constraints) == 1 and isinstance(constraints[0], InstanceOf) and constraints[0].types == (bool,)


def _click_type(field: dataclasses.Field):
    if field.metadata.get("parse"):
        return click.STRING
    for constraint in field.metadata.get("constraints", ()):
        if isinstance(constraint, Interval):
            return click.INT if constraint.kind is int else click.FLOAT
    return click.STRING


def _shown(value: Any) -> Any:
    """A default as the command line writes it."""
    if isinstance(value, tuple):
        if not value:
            return None  # an empty list: no default shown, the field's own default applies
        parts = [str(v) for v in value]
        return (";" if any(":" in p or "," in p for p in parts) else ",").join(parts)
    if isinstance(value, Config):
        return None
    return value


def _default(field: dataclasses.Field, owner_defaults: dict[str, Any]) -> Any:
    return owner_defaults.get(field.name, dataclasses.MISSING)


def _help(field: dataclasses.Field) -> str:
    """The field's help, with its choices when a registry or a fixed list gives them."""
    text = field.metadata.get("help", "")
    for constraint in field.metadata.get("constraints", ()):
        inner = constraint.constraints if isinstance(constraint, Each) else (constraint,)
        for part in inner:
            if isinstance(part, Options) and len(str(part)) < 160:
                text += f" [{', '.join(map(str, part.choices))}]"
    return text


def _options(group: str, config_type: type[Config], defaults: dict[str, Any], skip: tuple[str, ...] = (),
             prefix: str = "") -> list[click.Option]:
    """The click options of a config's fields; parameter names are `group__field` (and `group__field__alias`);
    `prefix` starts each help text."""
    options = []
    for field in iter_fields(config_type):
        if field.name in skip:
            continue
        name = f"{group}__{field.name}"
        default = _default(field, defaults)
        shorts = [a for a in field.metadata.get("aliases", {}) if not a.startswith("--")]
        decls = [flag_of(field), *shorts, name]
        if _is_flag(field):
            if default is True:
                decls = [f"{flag_of(field)}/--no-{flag_of(field)[2:]}", *shorts, name]
            options.append(click.Option(decls, is_flag=True, default=bool(default), help=prefix + _help(field)))
        else:
            required = default is dataclasses.MISSING
            options.append(click.Option(decls, type=_click_type(field), required=required,
                                        default=None if required else _shown(default),
                                        show_default=_shown(default) is not None, help=prefix + _help(field)))
        for alias, constant in field.metadata.get("aliases", {}).items():
            if not alias.startswith("--"):
                continue
            alias_name = f"{name}__{alias[2:].replace('-', '_')}"
            if constant is None:
                options.append(click.Option([alias, alias_name], type=_click_type(field), hidden=True))
            else:
                options.append(click.Option([alias, alias_name], is_flag=True, default=False, hidden=True))
    return options


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _values(ctx: click.Context, group: str, config_type: type[Config], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The field values of one group: the main flag's, or a deprecated alias's (never both)."""
    values = {}
    for field in iter_fields(config_type):
        if field.name in skip:
            continue
        name = f"{group}__{field.name}"
        value = ctx.params.get(name)
        for alias, constant in field.metadata.get("aliases", {}).items():
            alias_name = f"{name}__{alias[2:].replace('-', '_')}"
            if not alias.startswith("--") or not _given(ctx, alias_name):
                continue
            if _given(ctx, name):
                raise NeurolocError(f"give {flag_of(field)} or its old name {alias}, not both")
            _say(f"warning: {alias} is deprecated; use {flag_of(field)}")
            value = ctx.params[alias_name] if constant is None else constant
        if value is not None or _given(ctx, name):
            values[field.name] = value
    return values


def _benchmark_flags(config_type: type[Config]) -> list[click.Option]:
    """Deprecated per-benchmark flags (--blimp, --limit, --lm-eval, ...) that the benchmarks declare."""
    if "benchmarks" not in {f.name for f in dataclasses.fields(config_type)}:
        return []
    from .evaluate.registry import BENCHMARKS

    flags = sorted({flag for benchmark in BENCHMARKS.values() for flag in benchmark.legacy_flags})
    return [click.Option([flag, _legacy_name(flag)], hidden=True) for flag in flags]


def _legacy_name(flag: str) -> str:
    return "legacy__" + flag.lstrip("-").replace("-", "_")


def _apply_benchmark_flags(ctx: click.Context, values: dict[str, Any], config_type: type[Config]) -> None:
    """Fold deprecated benchmark flags into the `benchmarks` field. A flag that one benchmark declares
    adds that benchmark when absent (`--lm-eval TASKS`); one that several declare (`--limit`) sets the
    option of each of them that the run has."""
    from .evaluate.registry import BENCHMARKS, BenchmarkSpec, benchmark_specs
    from .parse import parse_scalar

    owners: dict[str, list[tuple[str, str]]] = {}
    for benchmark in BENCHMARKS.values():
        for flag, option in benchmark.legacy_flags.items():
            owners.setdefault(flag, []).append((benchmark.name, option))
    given = [(flag, ctx.params[_legacy_name(flag)]) for flag in owners if _given(ctx, _legacy_name(flag))]
    if not given:
        return
    default = next(f for f in dataclasses.fields(config_type) if f.name == "benchmarks")
    specs = list(benchmark_specs(values.get("benchmarks", _field_default(default))))
    for flag, value in sorted(given, key=lambda item: len(owners[item[0]])):  # benchmark-adding flags first
        targets = owners[flag]
        names = " or ".join(f"'{name}:{option}=...'" for name, option in targets)
        _say(f"warning: {flag} is deprecated; use --benchmarks {names}")
        for name, option in targets:
            index = next((i for i, spec in enumerate(specs) if spec.name == name), None)
            if index is None and len(targets) > 1:
                continue
            parsed = value if option in ("path", "tasks") else parse_scalar(value)
            if index is None:
                specs.append(BenchmarkSpec(name, {option: parsed}))
            else:
                specs[index] = BenchmarkSpec(name, {**specs[index].options, option: parsed})
    values["benchmarks"] = tuple(specs)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _nested(config_type: type[Config]) -> list[tuple[dataclasses.Field, type[Config], tuple[str, ...]]]:
    """(field, its config class, the names it shares with `config_type`) of every optional nested config
    (`param(nested=...)`), whose own fields the command line offers."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return [(f, f.metadata["nested"], tuple(n.name for n in dataclasses.fields(f.metadata["nested"]) if n.name in names))
            for f in dataclasses.fields(config_type) if f.metadata.get("nested") is not None]


def _nested_values(ctx: click.Context, config_type: type[Config], values: dict[str, Any]) -> None:
    """Set each nested config that any of its flags was given for (its shared fields from the outer values)."""
    defaults = _defaults(config_type)
    for field, nested, shared in _nested(config_type):
        group = f"nested_{field.name}"
        if not any(_given(ctx, f"{group}__{f.name}") for f in iter_fields(nested) if f.name not in shared):
            continue
        given = {k: v for k, v in _values(ctx, group, nested, skip=shared).items()
                 if _given(ctx, f"{group}__{k}")}
        values[field.name] = nested(**given, **{n: values.get(n, defaults[n]) for n in shared})


def _defaults(config_type: type[Config]) -> dict[str, Any]:
    return {f.name: _field_default(f) if (f.default is not dataclasses.MISSING
                                          or f.default_factory is not dataclasses.MISSING) else dataclasses.MISSING
            for f in dataclasses.fields(config_type)}


# -------------------------------------------------------------------------------------------- commands
def study_command(command: str, name: str | None = None) -> click.Command:
    """The click command of a study, built from its config class."""
    from .runner import RunOptions
    from .settings import RunSettings

    config_type = study_config(command)
    defaults = _defaults(config_type)
    settings_default = defaults.get("settings") or RunSettings()
    params = [
        *_options("config", config_type, defaults, skip=("settings",)),
        *[option for field, nested, shared in _nested(config_type)
          for option in _options(f"nested_{field.name}", nested, _defaults(nested), skip=shared,
                                 prefix=f"[{field.name}] ")],
        *_options("settings", RunSettings, dataclasses.asdict(settings_default)),
        *_options("run", RunOptions, _defaults(RunOptions)),
        click.Option(["--out", "-o", "out"], type=click.Path(path_type=Path), required=True,
                     help="Output folder (new, empty, or an earlier output of the same command and settings)."),
        click.Option(["--quiet", "-q", "quiet"], is_flag=True, default=False, help="No progress bars or messages."),
        *_benchmark_flags(config_type),
    ]

    def callback(**_: Any) -> None:
        ctx = click.get_current_context()
        _guarded(lambda: _run_study(ctx, config_type))

    return click.Command(name or command, params=params, callback=callback, help=_first_paragraph(config_type),
                         short_help=STUDIES[command][1], context_settings=CONTEXT)


def _first_paragraph(config_type: type) -> str:
    return (config_type.__doc__ or "").strip().split("\n\n")[0]


def build_config(ctx: click.Context, config_type: type[Config]) -> tuple[Config, Any]:
    """The study's config and the run options a parsed command line gives (checked, nothing run)."""
    from .runner import RunOptions
    from .settings import RunSettings

    values = _values(ctx, "config", config_type, skip=("settings",))
    _apply_benchmark_flags(ctx, values, config_type)
    _nested_values(ctx, config_type, values)
    settings_default = _defaults(config_type).get("settings") or RunSettings()
    settings = settings_default.replace(**_values(ctx, "settings", RunSettings), progress=not ctx.params["quiet"])
    return config_type(**values, settings=settings), RunOptions(**_values(ctx, "run", RunOptions))


def parse_command(args: list[str]) -> Config | None:
    """What `neuroloc ARGS` would run, without running it: the study's config (None for `info`/`rerun`,
    whose arguments are parsed only). Raises click's or neuroloc's error for a command line that does not
    parse or check. For documentation tests."""
    args = list(args)
    for old, new in DEPRECATED_COMMANDS.items():
        if args[:len(old.split())] == old.split():
            args = [new, *args[len(old.split()):]]
    if args and args[0] in STUDIES:
        command = study_command(args[0])
        with command.make_context(args[0], args[1:]) as ctx:
            return build_config(ctx, study_config(args[0]))[0]
    with app.make_context("neuroloc", args, resilient_parsing=False) as ctx:
        name, command, rest = app.resolve_command(ctx, args)
        command.make_context(name, rest, parent=ctx).close()
    return None


def _run_study(ctx: click.Context, config_type: type[Config]) -> None:
    from .runner import run

    quiet = ctx.params["quiet"]
    config, options = build_config(ctx, config_type)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = run(config, ctx.params["out"], options=options, log=None if quiet else _say,
                 warn=lambda message: _say(f"warning: {message}"))
    if os.environ.get("RANK", "0") == "0":
        seconds = result.timings.get("total_s", 0.0)
        _say(f"{result.headline()} in {seconds:.1f} s → {ctx.params['out']}")


class Neuroloc(click.Group):
    """The top-level group: study commands come from `STUDIES`, imported only when one is run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*STUDIES, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in STUDIES:
            return study_command(name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name, (_, summary) in STUDIES.items()]
        rows += [(name, command.get_short_help_str(80)) for name, command in self.commands.items()
                 if not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version() -> str:
    from .io import package_version

    return package_version()


@click.group(cls=Neuroloc, context_settings=CONTEXT,
             help="Localize, lesion, probe and brain-align functionally selective units in language models.")
@click.version_option(package_name="neuroloc", message="neuroloc %(version)s")
def app() -> None:
    pass


@app.command(context_settings=CONTEXT)
@click.option("--model", "-m", default="smollm2", help="Hub id, local directory, .gguf file, or 'smollm2'.")
@click.option("--dtype", default="auto", help="auto, float32, bfloat16 or float16.")
@click.option("--json", "as_json", is_flag=True, default=False, help="The identity and layout as JSON.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars.")
def info(model: str, dtype: str, as_json: bool, quiet: bool) -> None:
    """Show a model's identity and, per layer, the sites neuroloc finds in it (and why the others are absent)."""
    def show() -> None:
        import json

        from .models.loading import load_model
        from .runner.run import launcher_check
        from .runner.study import StudyConfig

        launcher_check(StudyConfig(model=model), command="info")
        lm = load_model(model, dtype=dtype)
        if as_json:
            print(json.dumps({"identity": lm.identity, "layout": lm.layout.describe()}, indent=2, default=str))
        else:
            identity = ", ".join(f"{k}: {v}" for k, v in lm.identity.items() if k in ("spec", "model_type", "dtype"))
            print(identity)
            print(lm.layout.table())

    if quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    _guarded(show)


@app.command(context_settings=CONTEXT)
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Where to write (default: the manifest's folder, replacing that run's outputs).")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars or messages.")
def rerun(manifest: Path, out: Path | None, quiet: bool) -> None:
    """Run again the study a manifest.json describes, with the same config (parameters and run settings)."""
    def again() -> None:
        from .pipelines.rerun import config_from_manifest
        from .runner import run

        config = config_from_manifest(manifest)
        config = config.replace(settings=config.settings.replace(progress=not quiet))
        target = out if out is not None else manifest.parent
        result = run(config, target, log=None if quiet else _say, warn=lambda message: _say(f"warning: {message}"))
        _say(f"{result.headline()} in {result.timings.get('total_s', 0.0):.1f} s → {target}")

    _guarded(again)


@app.group(hidden=True, context_settings=CONTEXT)
def run() -> None:
    """Old name of the end-to-end studies (deprecated: `neuroloc language-network`)."""


class _Deprecated(click.Command):
    """An old command name that runs its successor after a warning."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old.split()[-1], add_help_option=False, hidden=True, help=f"Deprecated: `neuroloc {new}`.",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        self.old, self.new = old, new

    def invoke(self, ctx: click.Context) -> Any:
        _say(f"warning: `neuroloc {self.old}` is deprecated; use `neuroloc {self.new}`")
        return study_command(self.new).main(ctx.args, prog_name=f"neuroloc {self.new}", standalone_mode=False)


def _add_deprecated(old: str, new: str) -> None:
    """Register an old command name — top level (`languages`) or in a group (`run language`) — that runs
    its successor."""
    parent: click.Group = app
    for group in old.split()[:-1]:
        parent = parent.commands[group]
    parent.add_command(_Deprecated(old, new))


for _old, _new in DEPRECATED_COMMANDS.items():
    _add_deprecated(_old, _new)


def main() -> None:
    logging.basicConfig(level=os.environ.get("NEUROLOC_LOG", "WARNING"), format="%(levelname)s: %(message)s")
    app()
