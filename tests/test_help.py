"""Every command's help says what the code does: defaults shown, flags without a value type, and the choices of
the registries (poolings, scores, interventions, benchmarks, control kinds) listed where they are taken."""

from __future__ import annotations

import dataclasses
import click
import pytest
from click.testing import CliRunner

from neuroloc.cli import app, study_command
from neuroloc.config import flag_of, iter_fields
from neuroloc.pipelines import STUDIES, study_config


def help_of(*args: str) -> str:
    done = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert done.exit_code == 0, done.output
    return done.output


def records(command: str) -> dict[str, str]:
    """Each visible option's help line as click renders it (with its default and choices), by flag."""
    cmd = study_command(command)
    ctx = click.Context(cmd, info_name=command, **cmd.context_settings)
    found = {}
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            found.update({flag: record[1] for flag in param.opts})
    return found


@pytest.mark.parametrize("command", [*STUDIES, "info", "rerun"])
def test_no_value_type_for_flags_and_every_default_shown(command):
    text = help_of(command)
    assert "<bool>" not in text and "BOOLEAN" not in text
    if command not in STUDIES:
        return
    shown = records(command)
    for param in study_command(command).params:
        if not isinstance(param, click.Option) or param.hidden or param.is_flag or param.required:
            continue
        if param.default not in (None, ()):
            assert "[default:" in shown[param.opts[0]], f"{command} {param.opts[0]}: no default shown"


def registries():
    from neuroloc.evaluate.controls import CONTROLS
    from neuroloc.evaluate.registry import BENCHMARKS
    from neuroloc.lesion.registry import INTERVENTIONS
    from neuroloc.localize.score_functions import SCORES
    from neuroloc.record.pooling import POOLINGS

    return {"pooling": POOLINGS, "score": SCORES, "intervention": INTERVENTIONS, "benchmarks": BENCHMARKS,
            "control_kinds": CONTROLS}


@pytest.mark.parametrize("command", list(STUDIES))
def test_choices_come_from_the_registries(command):
    shown_help = records(command)
    config_type = study_config(command)
    names = registries()
    checked = 0
    for field in iter_fields(config_type):
        kind = {"pooling": "pooling", "score": "score", "mode": "intervention", "intervention": "intervention",
                "benchmarks": "benchmarks", "control_kinds": "control_kinds"}.get(field.name)
        if kind is None or field.metadata.get("cli") is False:
            continue
        flag = flag_of(field)
        shown = shown_help[flag]
        choices = field_choices(field)
        expected = choices if choices is not None else list(names[kind])
        missing = [name for name in expected if name not in shown]
        assert not missing, f"{command} {flag}: {missing} not listed"
        checked += 1
    assert checked or not any(f.name in ("pooling", "score", "mode", "benchmarks") for f in iter_fields(config_type))


def field_choices(field: dataclasses.Field):
    """The fixed choices a field declares (a subset of a registry), or None (the whole registry)."""
    from neuroloc.config import Each, Options

    for constraint in field.metadata.get("constraints", ()):
        for part in (constraint.constraints if isinstance(constraint, Each) else (constraint,)):
            if isinstance(part, Options):
                return list(part.choices)
    return None
