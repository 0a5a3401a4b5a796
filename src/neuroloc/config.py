"""Declared parameters: every setting of a study is one dataclass field, checked when the config is built.

scikit-learn's `_parameter_constraints` idea, on frozen dataclasses: a field is declared once with
`param(default, *constraints, help=...)` and that one declaration gives the check (one error line naming
the field, its command-line flag and what is allowed), the coercion of a string given for a structured
value (`parse=`: one parser per kind of string, `neuroloc.parse`), the command-line option and its help,
and the manifest entry (`to_dict()`; `from_dict()` rebuilds the config from a manifest). Defaults live in
these declarations and nowhere below them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection, Iterable, Mapping, TypeVar

from .errors import NeurolocError

__all__ = ["Config", "Constraint", "Each", "Factory", "InstanceOf", "Interval", "Options", "describe", "flag_of",
           "iter_fields", "param", "Valid"]

C = TypeVar("C", bound="Config")


class Constraint:
    """A predicate on a value with a description for error messages and help."""

    def __call__(self, value: Any) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError


class InstanceOf(Constraint):
    """An instance of one of `types` (bool is never taken for an int or a float)."""

    def __init__(self, *types: type) -> None:
        self.types = types

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return " or ".join(_type_name(t) for t in self.types)


class Interval(Constraint):
    """A number of `kind` (int or float; an int is taken for a float) between `low` and `high`;
    `closed` says which ends belong: "both", "left", "right" or "neither"."""

    def __init__(self, kind: type, low: float | None, high: float | None, closed: str = "both") -> None:
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both, left, right or neither, got {closed!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real) or (isinstance(value, float) and math.isnan(value)):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not right)):
            return False
        return True

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is None:
            return f"{what} {'≥' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.high is not None and self.low is None:
            return f"{what} {'≤' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        opening = "[" if self.closed in ("both", "left") else "("
        closing = "]" if self.closed in ("both", "right") else ")"
        return f"{what} in {opening}{self.low:g}, {self.high:g}{closing}"


class Options(Constraint):
    """One of a set of choices: a fixed collection, or a callable returning one (a registry, read when
    checked so entries registered later count); `noun` names a choice in errors ("a control kind")."""

    def __init__(self, choices: Collection[Any] | Callable[[], Collection[Any]], noun: str | None = None) -> None:
        self._choices = choices
        self.noun = noun

    @property
    def choices(self) -> list[Any]:
        return list(self._choices() if callable(self._choices) else self._choices)

    def __call__(self, value: Any) -> bool:
        try:
            return value in self.choices
        except TypeError:  # unhashable value against a dict's keys
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


class Each(Constraint):
    """A non-empty tuple whose every element satisfies one of `constraints` (`empty=True`: may be empty)."""

    def __init__(self, *constraints: Constraint, empty: bool = False) -> None:
        self.constraints, self.empty = constraints, empty

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, tuple) or (not value and not self.empty):
            return False
        return all(any(c(v) for c in self.constraints) for v in value)

    def __str__(self) -> str:
        return f"a {'' if self.empty else 'non-empty '}list of " + " or ".join(map(str, self.constraints))


class Valid(Constraint):
    """Accepted by `check`, a function that raises `NeurolocError` (its message reaches the user) for
    anything else; `what` describes the accepted values."""

    def __init__(self, check: Callable[[Any], Any], what: str) -> None:
        self.check, self.what = check, what

    def __call__(self, value: Any) -> bool:
        try:
            self.check(value)
        except NeurolocError:
            return False
        return True

    def __str__(self) -> str:
        return self.what


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            Path: "a path", dict: "a mapping"}.get(t, t.__name__)


class Factory:
    """A default made fresh for each config (`param(Factory(dict), ...)`), like `default_factory`."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def param(default: Any = dataclasses.MISSING, *constraints: Constraint | None, help: str,
          parse: Callable[[str], Any] | None = None, coerce: Callable[[Any], Any] | None = None,
          flag: str | None = None, aliases: Mapping[str, Any] | None = None, cli: bool = True,
          nested: "type[Config] | None" = None) -> Any:
    """A config field: its default (`...`/MISSING: required; `Factory(f)`: made by `f()`), the constraints
    its value must meet (`None` among them: None is allowed), the help text, the parser of its string form
    (`parse`) and the converter of other given values (`coerce`, e.g. mappings to nested configs), its
    command-line `flag` (default `--name-with-dashes`), deprecated `aliases` (flag → None: takes a value;
    flag → a constant: a switch that sets it) and whether the command line offers it (`cli`). `nested`: the
    field holds an optional config of that class (default None); the command line offers its fields as flags
    of their own (those the outer config also has take the outer value), and giving any of them sets it."""
    metadata = {"constraints": constraints, "help": help, "parse": parse, "coerce": coerce, "flag": flag,
                "aliases": dict(aliases or {}), "cli": cli, "nested": nested}
    if isinstance(default, Factory):
        return dataclasses.field(default_factory=default.make, metadata=metadata)
    if default is ...:
        default = dataclasses.MISSING
    return dataclasses.field(default=default, metadata=metadata)


def _named_choice(constraints: tuple, value: Any) -> str | None:
    """For a value (or a list element) outside a named set of choices: "'x' is not a control kind; choose
    from ..."."""
    for constraint in constraints:
        options = constraint.constraints if isinstance(constraint, Each) else (constraint,)
        values = value if isinstance(constraint, Each) and isinstance(value, tuple) else (value,)
        for option in options:
            if isinstance(option, Options) and option.noun:
                bad = [v for v in values if not option(v)]
                if bad and len(options) == 1:
                    return f"{bad[0]!r} is not a {option.noun}; choose from {', '.join(map(str, option.choices))}"
    return None


def label(field: dataclasses.Field) -> str:
    """How errors name a field: its flag, with the field's name when the two differ (`--controls
    (n_controls)`)."""
    flag = flag_of(field)
    return flag if flag == "--" + field.name.replace("_", "-") else f"{flag} ({field.name})"


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a field."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def describe(field: dataclasses.Field) -> str:
    """What a field takes, from its constraints (for errors and help)."""
    constraints = field.metadata.get("constraints", ())
    parts = [str(c) for c in constraints if c is not None]
    if None in constraints:
        parts.append("none")
    return " or ".join(parts) if parts else "anything"


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every study's settings: fields declared with `param`, checked on construction.

    Subclasses add cross-field rules in `check()` (raise `NeurolocError` naming the fields) and set
    `command` (the study's name in manifests and on the command line)."""

    command: ClassVar[str] = ""
    flags: ClassVar[bool] = True  # errors name the command-line flag (False: options nested in a value)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            name = label(field) if self.flags else field.name
            value = _coerce(name, field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
            _check(name, field, value)
        self.check()

    def check(self) -> None:
        """Cross-field rules (none by default)."""

    # -- manifests ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form of every field (nested configs as dicts): the manifest's `parameters`."""
        return {field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "manifest") -> C:
        """Rebuild a config from `to_dict()`'s output; unknown or missing fields are an error naming them."""
        if not isinstance(data, Mapping):
            raise NeurolocError(f"{where}: {cls.__name__} parameters must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise NeurolocError(f"{where}: {cls.__name__} has no parameter(s) {', '.join(unknown)}; "
                                "was it written by another version of neuroloc?")
        values = {}
        for name, value in data.items():
            nested = _nested_type(known[name])
            values[name] = nested.from_dict(value, where=where) if nested and isinstance(value, Mapping) else value
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (checked again); unknown fields are an error naming them."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise NeurolocError(f"{type(self).__name__} has no parameter(s) {', '.join(unknown)}; "
                                f"its parameters: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)


def _nested_type(field: dataclasses.Field) -> type[Config] | None:
    """The Config class of a field whose default is a config (e.g. the run settings) or that declares one
    (`param(nested=...)`)."""
    if field.metadata.get("nested") is not None:
        return field.metadata["nested"]
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    return type(default) if isinstance(default, Config) else None


def _coerce(name: str, field: dataclasses.Field, value: Any) -> Any:
    """Strings given for structured fields go through the field's parser; lists become tuples; a mapping
    for a nested config becomes that config."""
    parse, coerce = field.metadata.get("parse"), field.metadata.get("coerce")
    try:
        if parse is not None and isinstance(value, str):
            return parse(value)
        if coerce is not None and value is not None:
            return coerce(value)
    except NeurolocError as error:
        message = str(error)
        raise NeurolocError(f"{name} {message}" if message.startswith("takes ") else f"{name}: {message}") from None
    nested = _nested_type(field)
    if nested is not None and isinstance(value, Mapping):
        return nested.from_dict(value, where=field.name)
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Path) and any(isinstance(c, InstanceOf) and str in c.types and Path not in c.types
                                       for c in field.metadata.get("constraints", ()) if c is not None):
        return str(value)
    return value


def _check(name: str, field: dataclasses.Field, value: Any) -> None:
    constraints = field.metadata.get("constraints", ())
    if not constraints:
        return
    if value is None and None in constraints:
        return
    if any(c(value) for c in constraints if c is not None):
        return
    named = _named_choice(constraints, value)
    if named:
        raise NeurolocError(f"{name}: {named}")
    for constraint in constraints:
        if isinstance(constraint, Valid) and isinstance(value, str):
            try:
                constraint.check(value)
            except NeurolocError as error:
                raise NeurolocError(f"{name}: {error}") from None
    raise NeurolocError(f"{name}: {value!r} is not allowed; give {describe(field)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def iter_fields(config_type: type[Config]) -> Iterable[dataclasses.Field]:
    """The fields of a config class that the command line offers."""
    return (f for f in dataclasses.fields(config_type) if f.metadata.get("cli", True))
