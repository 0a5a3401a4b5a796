"""The string forms of structured settings, each parsed in one place (command line, configs, manifests).

Every parser takes the text a user types and returns the value a config holds, or raises a one-line
`NeurolocError` saying what form it "takes ..." (the config puts the flag in front); configs call them for strings given for structured fields,
so the Python API and the command line accept the same strings and give the same values.
"""

from __future__ import annotations

from typing import Any

from .errors import NeurolocError

__all__ = ["parse_benchmark", "parse_floats", "parse_ints", "parse_layers", "parse_list", "parse_options",
           "parse_pairs", "parse_positions", "parse_scalar"]


def parse_list(text: str) -> tuple[str, ...]:
    """`a,b, c` → ('a', 'b', 'c'); items separated by ';' when the text has one (`scale:0;scale:2`: how the
    command line shows a default whose items hold ':' or ','); empty items are dropped."""
    return tuple(part.strip() for part in text.split(";" if ";" in text else ",") if part.strip())


def parse_floats(text: str) -> tuple[float, ...]:
    """`0.25,0.5,1` → (0.25, 0.5, 1.0)."""
    try:
        return tuple(float(v) for v in parse_list(text))
    except ValueError:
        raise NeurolocError(f"takes numbers separated by commas (e.g. 0.25,0.5,1), got {text!r}") from None


def parse_ints(text: str) -> tuple[int, ...]:
    """`25,50,100` → (25, 50, 100); `none` or an empty text → ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in parse_list(text))
    except ValueError:
        raise NeurolocError(f"takes integers separated by commas (e.g. 25,50,100), got {text!r}") from None


def parse_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """`en:de,de:en` → (('en', 'de'), ('de', 'en')): SOURCE:TARGET pairs."""
    pairs = [tuple(side.strip() for side in part.split(":")) for part in parse_list(text)]
    if not pairs or any(len(pair) != 2 or not all(pair) for pair in pairs):
        raise NeurolocError(f"takes SOURCE:TARGET pairs separated by commas (e.g. en:de,de:en), got {text!r}")
    return tuple(pairs)


def parse_layers(text: str) -> str | tuple[int, ...]:
    """`all`, or layer numbers and ranges: `10,20`, `0-5,12` (ranges include both ends)."""
    if text.strip().lower() == "all":
        return "all"
    layers: list[int] = []
    try:
        for part in parse_list(text):
            low, sep, high = part.partition("-")
            layers.extend(range(int(low), int(high) + 1) if sep else [int(low)])
    except ValueError:
        raise NeurolocError(f"takes 'all' or layer numbers and ranges like 0-5,12, got {text!r}") from None
    if not layers:
        raise NeurolocError("takes 'all' or layer numbers like 10,20, got none")
    return tuple(sorted(set(layers)))


def parse_positions(text: str) -> str | tuple[int, ...] | None:
    """Token positions an intervention reaches: `all` (None), `last`, or integers like `1,-2` (negative
    from each text's end)."""
    value = text.strip().lower()
    if value in ("", "all"):
        return None
    if value == "last":
        return "last"
    try:
        return tuple(int(v) for v in parse_list(text))
    except ValueError:
        raise NeurolocError(f"takes 'last' or integers like 1,-2 (or 'all'), got {text!r}") from None


def parse_scalar(text: str) -> Any:
    """A bare value: true/false, none, an int, a float, else the text itself."""
    value = text.strip()
    lowered = value.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_options(text: str) -> dict[str, Any]:
    """`limit=30,path=../data/blimp` → {'limit': 30, 'path': '../data/blimp'} (values via `parse_scalar`;
    a value may hold commas when the next item has no `=`: `subsets=a,b,c` → 'a,b,c')."""
    options: dict[str, Any] = {}
    key = None
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if sep:
            key = name.strip()
            if not key:
                raise NeurolocError(f"takes name=value options, got one without a name in {text!r}")
            options[key] = value.strip()
        elif key is not None:
            options[key] = f"{options[key]},{part}"
        else:
            raise NeurolocError(f"takes name=value options separated by commas, got {text!r}")
    return {k: parse_scalar(v) for k, v in options.items()}


def parse_benchmark(text: str) -> tuple[str, dict[str, Any]]:
    """`blimp` or `blimp:limit=30,path=../shared/data/blimp` → (name, options)."""
    name, _, options = text.partition(":")
    name = name.strip()
    if not name:
        raise NeurolocError(f"takes a benchmark name, optionally with options (blimp:limit=30), got {text!r}")
    return name, parse_options(options) if options.strip() else {}
