"""Multiple-demand localizer: hard vs. easy arithmetic, generated from a seed.

The multiple-demand network responds more to harder versions of a task (Fedorenko et al., 2013),
so the two conditions share one template and differ only in difficulty: three-digit operands
(100-199) versus one- or two-digit operands (1-19). Each condition is half additions, half subtractions, so the
operator never tells the conditions apart.
"""

from __future__ import annotations

import random

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.base import StimulusSet

TEMPLATE = "Question: What is {a} {op} {b}? Answer: {answer}"
OPERANDS = {"hard": range(100, 200), "easy": range(1, 20)}

Problem = tuple[int, str, int]


def make_md_localizer(seed: int = 0, n_per_condition: int = 100) -> StimulusSet:
    """`n_per_condition` distinct problems per condition, the same for the same seed."""
    limit = min(_capacity(r) for r in OPERANDS.values())
    if not 2 <= n_per_condition <= limit:
        raise NeurolocError(
            f"n_per_condition={n_per_condition}: must be between 2 and {limit} "
            "(the easy condition has only so many distinct problems)"
        )
    rng = random.Random(seed)
    texts: list[str] = []
    conditions: list[str] = []
    for condition, operands in OPERANDS.items():
        problems = _sample(rng, operands, n_per_condition)
        texts.extend(_render(p) for p in problems)
        conditions.extend([condition] * len(problems))
    return StimulusSet(
        name="md",
        texts=tuple(texts),
        conditions=tuple(conditions),
        contrast=("hard", "easy"),
        metadata={"seed": seed, "n_per_condition": n_per_condition, "template": TEMPLATE},
    )


def _problems(operands: range, op: str) -> list[Problem]:
    """Every distinct problem; subtractions put the larger operand first (answer >= 0)."""
    if op == "+":
        return [(a, "+", b) for a in operands for b in operands]
    return [(a, "-", b) for a in operands for b in operands if a >= b]


def _capacity(operands: range) -> int:
    """Largest condition size with half subtractions and half additions, all distinct."""
    return 2 * min(len(_problems(operands, "-")), len(_problems(operands, "+")))


def _sample(rng: random.Random, operands: range, n: int) -> list[Problem]:
    n_minus = n // 2
    problems = rng.sample(_problems(operands, "+"), n - n_minus) + rng.sample(_problems(operands, "-"), n_minus)
    rng.shuffle(problems)
    return problems


def _render(problem: Problem) -> str:
    a, op, b = problem
    return TEMPLATE.format(a=a, op=op, b=b, answer=a + b if op == "+" else a - b)
