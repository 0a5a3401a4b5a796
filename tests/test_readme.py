"""The README as a test: its Python blocks run (on a tiny model wherever they load one) and every `neuroloc ...`
command it shows parses into a checked config (`neuroloc.cli.parse_command`: nothing runs).

Blocks are read generically: fenced ```python blocks run in order in one namespace, from a scratch folder
beside a link to ../shared; every `neuroloc` command line in a ```bash / ```console / ```sh or untagged block
(continuation lines joined, `$ ` prompts and comments dropped) is parsed. Schematic writing is read as a
reader would: `a|b` alternatives take the first, `...` stands for "the arguments above" and is dropped, and a
missing --out is supplied. A block a README marks ```python no-run is reported as skipped with its line, never
silently.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, info string, body) of every fenced block."""
    return [(text[:m.start()].count("\n") + 1, m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def python_blocks() -> list[tuple[int, str, str]]:
    return [(line, info, body) for line, info, body in blocks(README.read_text()) if info.split()[:1] == ["python"]]


def commands() -> list[tuple[int, list[str]]]:
    """Every `neuroloc ...` command line of the shell blocks, as arguments after `neuroloc`."""
    found = []
    for line, info, body in blocks(README.read_text()):
        if info.split()[:1] not in ([], ["bash"], ["console"], ["sh"], ["shell"]):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for offset, raw in enumerate(joined.splitlines()):
            command = raw.strip().removeprefix("$ ")
            command = re.split(r"\s#", command, maxsplit=1)[0]
            if "neuroloc" not in command:
                continue
            try:
                words = shlex.split(command)
            except ValueError as error:  # reported by the test, with its line
                found.append((line + 1 + offset, [f"<unparsable shell line: {error}: {command}>"]))
                continue
            start = _neuroloc_at(words)
            if start is not None:
                found.append((line + 1 + offset, _schematic(words[start:])))
    return found


def _neuroloc_at(words: list[str]) -> int | None:
    """Where the arguments of neuroloc begin: after `neuroloc` or `-m neuroloc` (torchrun, accelerate)."""
    for i, word in enumerate(words):
        if word == "neuroloc" and (i == 0 or words[i - 1] == "-m"):
            return i + 1
    return None


def _schematic(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:  # `a | b` alternatives: the first
        if arg == "|" or skip:
            skip = arg == "|"
            continue
        kept.append(arg)
    args = [a.split("|")[0] if "|" in a else a for a in kept if a != "..."]
    if args and args[0] not in ("info", "rerun", "--help", "--version") and "--out" not in args and "-o" not in args:
        args += ["--out", "runs/readme-test"]
    return args


# ------------------------------------------------------------------------------------------------- tests
def test_the_readme_has_code_to_test():
    assert python_blocks() and commands()


@pytest.mark.parametrize("line, args", commands(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_every_cli_example_parses(line, args):
    from neuroloc.cli import parse_command

    try:
        parse_command(args)
    except Exception as error:  # click's usage errors and neuroloc's checks alike
        pytest.fail(f"README.md line {line}: `neuroloc {' '.join(args)}` does not parse: {error}")


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    """One namespace for the README's Python blocks, in a scratch folder, with every model a tiny one."""
    import torch
    from transformers import AutoModelForCausalLM

    import neuroloc
    import neuroloc.models.loading as loading
    from tests.tiny import tiny_config, tiny_tokenizer

    work = tmp_path_factory.mktemp("readme") / "repo"
    work.mkdir()
    shared = ROOT.parent / "shared"
    if shared.exists():
        (work.parent / "shared").symlink_to(shared)
    patch = pytest.MonkeyPatch()
    patch.chdir(work)

    def tiny(spec="smollm2", *args, **kwargs):  # MLPs wide enough for the README's unit counts (count=100)
        tokenizer = tiny_tokenizer()
        config = tiny_config("llama", len(tokenizer))
        config.intermediate_size = 256  # k=100 per label, with random controls outside them
        config.max_position_embeddings = 512  # the false-belief stories whole (rotary positions: no table)
        torch.manual_seed(0)
        return neuroloc.wrap_model(AutoModelForCausalLM.from_config(config).float().eval(), tokenizer)

    run_module = importlib.import_module("neuroloc.runner.run")  # the module (the package exports run())
    for owner in (loading, run_module):
        patch.setattr(owner, "load_model", tiny)
    patch.setattr(neuroloc, "load_model", tiny, raising=False)
    yield {"__name__": "readme"}
    patch.undo()


@pytest.mark.parametrize("line, info, body", python_blocks(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_python_blocks_run(namespace, line, info, body):
    if "no-run" in info.split():
        pytest.skip(f"README.md line {line}: marked ```python no-run")
    try:
        exec(compile(body, f"README.md:{line}", "exec"), namespace)
    except Exception as error:
        pytest.fail(f"README.md line {line}: {type(error).__name__}: {error}")
