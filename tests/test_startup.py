"""A fast start: `import neuroloc` and `neuroloc --help` answer within a generous bound (2 s on an idle 2-core
machine is the aim; the bound allows a busy one), measured in fresh processes as `benchmarks/startup.py` does."""

from __future__ import annotations

import pytest

from benchmarks.startup import CASES, measure

BOUND_S = 10.0


@pytest.mark.parametrize("case", ["import neuroloc", "neuroloc --help"])
def test_start_is_fast_and_light(case):
    seconds, heavy = measure(CASES[case], repeats=2)
    assert not heavy, f"{case} imported {heavy}"
    assert seconds < BOUND_S, f"{case} took {seconds:.1f} s"
