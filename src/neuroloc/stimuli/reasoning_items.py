"""Reasoning (multiple-demand) items of graded difficulty, generated from a seed.

Four item types, each at difficulty levels "1" < "2" < "3":

* `arithmetic_digits` / `arithmetic_words`: "What is 14 + 7?" and "What is fourteen plus seven?",
  half additions and half subtractions (larger operand first). The operands are the multiple-demand
  localizer's own contrast (`stimuli.md`): level 1 its easy operands (1-19), level 3 its hard ones
  (100-199), level 2 two-digit operands (20-99) between them. Foils are the errors people make:
  off by one to three, off by ten (a carry), the other operation; with the same number of digits as the
  answer where possible, so length does not give the answer away, and the answer's rank among the
  choices balanced (as often the smallest as the largest), so "pick the middle value" does not either.
* `syllogism`: a chain of 1, 2 or 3 premises over nonce categories ("All wugs are daxes. All daxes are
  feps. Rex is a wug. Is Rex a fep?"), answered yes or no (half each; a "no" item's last premise is
  "No … are …"). Nonce words keep world knowledge out.
* `sequence`: the next number of five terms: level 1 a rising step of 1-5, level 2 a step of 6-15
  rising or falling (half each), level 3 differences that grow by a constant (1, 2, 4, 7, 11 → 16);
  foils off by one to three, a skipped step, the last term repeated and (level 3) the linear
  extrapolation.

Every cell (type × level) balances the answer's position among the choices (and the operation, the
direction or the yes/no answer); each cell draws from its own random stream seeded by (seed, type,
level), so adding a type or changing a cell's size never changes another cell.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Callable, Sequence

from neuroloc.errors import NeurolocError
from neuroloc.stimuli import md
from neuroloc.stimuli.choice_items import ChoiceItem, ChoiceSet, balanced_levels, varied_examples

__all__ = ["ITEM_TYPES", "LEVELS", "make_reasoning_items", "number_words"]

GENERATOR_VERSION = 1
ITEM_TYPES = ("arithmetic_digits", "arithmetic_words", "syllogism", "sequence")
LEVELS = ("1", "2", "3")
N_CHOICES = {"arithmetic_digits": 4, "arithmetic_words": 4, "syllogism": 2, "sequence": 4}
OPERANDS = {"1": md.OPERANDS["easy"], "2": range(20, 100), "3": md.OPERANDS["hard"]}
TEMPLATES = {
    "arithmetic_digits": "What is {a} {op} {b}?",
    "arithmetic_words": "What is {a in words} {plus|minus} {b in words}?",
    "syllogism": "All {X} are {Y}. … [No {Y} are {Z}.] {name} is a {x}. | Is {name} a {z}?",
    "sequence": "What number comes next in the sequence {t1}, {t2}, {t3}, {t4}, {t5}?",
}
NONCE = ("wug", "dax", "blicket", "fep", "zorb", "tove", "gorp", "lorp", "mip", "kiki", "bouba", "toma",
         "nerp", "sprock", "glim", "veb")
NAMES = ("Rex", "Kim", "Max", "Ada", "Sam", "Lea", "Tom", "Ivy")
SEQUENCE_STEPS = {"1": range(1, 6), "2": range(6, 16), "3": range(1, 6)}
SEQUENCE_GROWTH = range(1, 4)
N_TERMS = 5

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for 0 ≤ n < 1000 ("one hundred twenty-three")."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words covers 0-999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))


def make_reasoning_items(*, seed: int, per_cell: int, types: Sequence[str] = ITEM_TYPES,
                         shots: int = 0) -> ChoiceSet:
    """`per_cell` items of every type in `types` at every level, the same for the same seed, each
    preceded by `shots` solved examples of its type and level (the same for the whole cell, drawn from
    a stream of their own and never one of the cell's items, so `shots` never changes the items; with
    answers and answer positions as varied as the pool allows)."""
    unknown = [t for t in types if t not in ITEM_TYPES]
    if unknown or not types:
        raise NeurolocError(f"unknown reasoning item types {unknown or list(types)}; "
                            f"choose from {', '.join(ITEM_TYPES)}")
    if per_cell < 1 or shots < 0:
        raise NeurolocError(f"per_cell must be a positive number of items per type and level and shots a "
                            f"number ≥ 0, got {per_cell} and {shots}")
    items: list[ChoiceItem] = []
    for kind in types:
        for level in LEVELS:
            cell = _MAKERS[kind](random.Random(f"{seed}:{kind}:{level}"), level, per_cell)
            if shots:
                asked = {(i.context, i.question) for i in cell}
                pool = _MAKERS[kind](random.Random(f"{seed}:{kind}:{level}:examples"), level, per_cell + shots)
                examples = varied_examples([i for i in pool if (i.context, i.question) not in asked], shots)
                cell = [replace(i, examples=examples) for i in cell]
            items.extend(cell)
    metadata = {"generator": "neuroloc.stimuli.reasoning_items", "version": GENERATOR_VERSION, "seed": seed,
                "per_cell": per_cell, "shots": shots, "types": list(types), "levels": list(LEVELS),
                "templates": TEMPLATES,
                "n_choices": {t: N_CHOICES[t] for t in types},
                "operands": {level: [r.start, r.stop - 1] for level, r in OPERANDS.items()},
                "lexicon": {"nonce": len(NONCE), "names": len(NAMES)}}
    return ChoiceSet("reasoning", tuple(items), f"generated:reasoning(seed={seed})", metadata)


# ----------------------------------------------------------------------------------------- helpers
def _arrange(rng: random.Random, answer: str, foils: Sequence[str], position: int) -> tuple[str, ...]:
    """The answer at `position`, the foils (shuffled) around it."""
    others = list(foils)
    rng.shuffle(others)
    return tuple(others[:position] + [answer] + others[position:])


def _number_foils(rng: random.Random, answer: int, candidates: Sequence[int], k: int, rank: int) -> list[int]:
    """`k` distinct non-negative foils, `rank` of them below the answer where the candidates allow
    (so the answer's rank among the choices tells nothing), those with the answer's number of digits
    first. Every caller's candidates hold at least `k` above the answer."""
    pool = [c for c in dict.fromkeys(candidates) if c >= 0 and c != answer]
    below, above = [c for c in pool if c < answer], [c for c in pool if c > answer]
    for side in (below, above):
        rng.shuffle(side)
        side.sort(key=lambda c: len(str(c)) != len(str(answer)))
    n_below = min(rank, len(below), k)
    n_below = max(n_below, k - len(above))
    return below[:n_below] + above[:k - n_below]


def _unique(rng: random.Random, n: int, draw: Callable[[random.Random, int], tuple], what: str,
            tries: int = 10_000) -> list[tuple]:
    """`n` distinct draws (`draw(rng, i)` for the i-th item), or an error saying the cell is too small."""
    seen: dict[tuple, None] = {}
    for i in range(n):
        for _ in range(tries):
            value = draw(rng, i)
            if value not in seen:
                seen[value] = None
                break
        else:
            raise NeurolocError(f"{what}: cannot make {n} distinct items; ask for fewer per cell")
    return list(seen)


# ----------------------------------------------------------------------------------------- makers
def _arithmetic(rng: random.Random, level: str, n: int, words: bool) -> list[ChoiceItem]:
    kind = "arithmetic_words" if words else "arithmetic_digits"
    operands = OPERANDS[level]
    subtract = balanced_levels(rng, n, 2)
    positions = balanced_levels(rng, n, N_CHOICES[kind])
    ranks = balanced_levels(rng, n, N_CHOICES[kind])

    def draw(rng: random.Random, i: int) -> tuple:
        a, b = rng.choice(operands), rng.choice(operands)
        return (max(a, b), "-", min(a, b)) if subtract[i] else (a, "+", b)

    problems = _unique(rng, n, draw, f"{kind} level {level}")
    items = []
    for (a, op, b), position, rank in zip(problems, positions, ranks):
        answer, other = (a + b, a - b) if op == "+" else (a - b, a + b)
        foils = _number_foils(rng, answer, [answer + 1, answer - 1, answer + 10, answer - 10, other,
                                            answer + 2, answer - 2, answer + 3, answer - 3], N_CHOICES[kind] - 1,
                              rank)
        say = number_words if words else str
        question = (f"What is {say(a)} {'plus' if op == '+' else 'minus'} {say(b)}?" if words
                    else f"What is {a} {op} {b}?")
        items.append(ChoiceItem("", question, _arrange(rng, say(answer), [say(f) for f in foils], position),
                                say(answer), kind, level))
    return items


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _syllogisms(rng: random.Random, level: str, n: int) -> list[ChoiceItem]:
    premises = int(level)
    combos = balanced_levels(rng, n, 4)  # (answer yes/no) × (answer first/second), crossed

    def draw(rng: random.Random, i: int) -> tuple:
        return (rng.choice(NAMES), *rng.sample(NONCE, premises + 1))

    items = []
    for (name, *chain), combo in zip(_unique(rng, n, draw, f"syllogism level {level}"), combos):
        answer, position = ("yes", "no")[combo // 2], combo % 2
        links = [f"All {_plural(x)} are {_plural(y)}." for x, y in zip(chain, chain[1:])]
        if answer == "no":
            links[-1] = f"No {_plural(chain[-2])} are {_plural(chain[-1])}."
        context = " ".join(links + [f"{name} is a {chain[0]}."])
        items.append(ChoiceItem(context, f"Is {name} a {chain[-1]}?",
                                _arrange(rng, answer, ["no" if answer == "yes" else "yes"], position),
                                answer, "syllogism", level))
    return items


def _sequences(rng: random.Random, level: str, n: int) -> list[ChoiceItem]:
    falling = balanced_levels(rng, n, 2) if level == "2" else [0] * n
    positions = balanced_levels(rng, n, N_CHOICES["sequence"])
    ranks = balanced_levels(rng, n, N_CHOICES["sequence"])

    def draw(rng: random.Random, i: int) -> tuple:
        step = rng.choice(SEQUENCE_STEPS[level])
        growth = rng.choice(SEQUENCE_GROWTH) if level == "3" else 0
        if falling[i]:
            start = rng.randrange(N_TERMS * step, N_TERMS * step + 40)
            step = -step
        else:
            start = rng.randrange(1, 21)
        diffs = [step + growth * k for k in range(N_TERMS)]
        return tuple(itertools.accumulate(diffs[:-1], initial=start)) + (diffs[-1],)

    items = []
    for (*terms, next_diff), position, rank in zip(_unique(rng, n, draw, f"sequence level {level}"), positions,
                                                   ranks):
        answer, last_diff = terms[-1] + next_diff, terms[-1] - terms[-2]
        foils = _number_foils(rng, answer, [answer + 1, answer - 1, answer + next_diff, terms[-1] + last_diff,
                                            terms[-1], answer + 2, answer - 2, answer + 3, answer - 3],
                              N_CHOICES["sequence"] - 1, rank)
        question = f"What number comes next in the sequence {', '.join(map(str, terms))}?"
        items.append(ChoiceItem("", question, _arrange(rng, str(answer), [str(f) for f in foils], position),
                                str(answer), "sequence", level))
    return items


_MAKERS: dict[str, Callable[[random.Random, str, int], list[ChoiceItem]]] = {
    "arithmetic_digits": lambda rng, level, n: _arithmetic(rng, level, n, words=False),
    "arithmetic_words": lambda rng, level, n: _arithmetic(rng, level, n, words=True),
    "syllogism": _syllogisms,
    "sequence": _sequences,
}
