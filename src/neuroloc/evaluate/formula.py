"""SyntaxGym prediction formulas, parsed by a small recursive-descent parser (never `eval`).

A formula states expected relations between region surprisals, e.g.
``((6;%match_sing%) < (6;%mismatch_sing%)) & ((6;%match_plural%) < (6;%mismatch_plural%))``.
The grammar and precedence follow syntaxgym-core (Gauthier et al., 2020), from loosest to tightest::

    formula := comparison (("&" | "|") comparison)*     left-associative, & and | bind equally
    comparison := sum (("<" | ">" | "=") sum)?         one comparison, no chains
    sum := unary (("+" | "-") unary)*                    left-associative
    unary := "-" unary | atom
    atom := number | "(" region ";" "%" condition "%" ")" | "(" formula ")"

`region` is a region number or ``*`` (the sum over all of the condition's regions). ``=`` holds when
the two sides are close (syntaxgym-core's tolerances: rtol 1e-5, atol 1e-3, in bits). Types are
checked while parsing: arithmetic and comparisons take numbers, ``&`` and ``|`` take truth values, and
the whole formula must be a truth value, so a malformed formula fails when loaded, not mid-evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Union

from ..errors import NeurolocError

EQUALITY_RTOL = 1e-5
EQUALITY_ATOL = 1e-3

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<term>\(\s*(?P<region>\d+|\*)\s*;\s*%(?P<condition>[^%;()]+)%\s*\))"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<op>[()<>=&|+-])"
    r")"
)

Values = Mapping[tuple[str, int], float]


@dataclass(frozen=True)
class Term:
    """The surprisal of `region` (an int, or None for ``*``: all regions) in `condition`."""

    region: int | None
    condition: str

    def evaluate(self, values: Values) -> float:
        if self.region is not None:
            return values[self.condition, self.region]
        keys = [key for key in values if key[0] == self.condition]
        if not keys:
            raise KeyError((self.condition, "*"))
        return sum(values[key] for key in keys)


@dataclass(frozen=True)
class Number:
    value: float

    def evaluate(self, values: Values) -> float:
        return self.value


@dataclass(frozen=True)
class Negate:
    operand: "Node"

    def evaluate(self, values: Values) -> float:
        return -self.operand.evaluate(values)


@dataclass(frozen=True)
class BinaryOp:
    op: str
    left: "Node"
    right: "Node"

    def evaluate(self, values: Values) -> float | bool:
        a = self.left.evaluate(values)
        b = self.right.evaluate(values)
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        if self.op == "<":
            return a < b
        if self.op == ">":
            return a > b
        if self.op == "=":
            return math.isclose(a, b, rel_tol=0.0, abs_tol=EQUALITY_ATOL + EQUALITY_RTOL * abs(b))
        if self.op == "&":
            return a and b
        return a or b


Node = Union[Term, Number, Negate, BinaryOp]


@dataclass(frozen=True)
class Formula:
    """A parsed prediction: `evaluate(values)` with values keyed by (condition, region number)."""

    source: str
    root: Node

    def evaluate(self, values: Values) -> bool:
        """True when the prediction holds; KeyError names a (condition, region) missing from values."""
        return bool(self.root.evaluate(values))

    @property
    def terms(self) -> frozenset[Term]:
        """Every (region, condition) term the formula reads."""
        found: set[Term] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Term):
                found.add(node)
            elif isinstance(node, Negate):
                stack.append(node.operand)
            elif isinstance(node, BinaryOp):
                stack.extend((node.left, node.right))
        return frozenset(found)

    def __str__(self) -> str:
        return self.source


def parse_formula(source: str) -> Formula:
    """Parse a SyntaxGym prediction formula; raise NeurolocError pointing at the fault."""
    parser = _Parser(source)
    root, kind = parser.formula()
    if parser.peek() is not None:
        raise parser.error("unexpected extra input")
    if kind != "bool":
        raise parser.error("a formula must compare something (use <, > or =)", at=0)
    return Formula(source, root)


class _Parser:
    """Tokens, then one method per grammar rule; each rule returns (node, "num" | "bool")."""

    def __init__(self, source: str):
        self.source = source
        self.tokens: list[tuple[str, int, re.Match]] = []  # (text, start, match)
        self.index = 0
        pos = 0
        while source[pos:].strip():
            match = _TOKEN.match(source, pos)
            if match is None:
                at = len(source) - len(source[pos:].lstrip())
                raise self.error(f"unexpected character {source[at]!r}", at=at)
            group = match.lastgroup if match.lastgroup in ("number", "op") else "term"
            self.tokens.append((match.group(group), match.start(group), match))
            pos = match.end()

    def error(self, message: str, at: int | None = None) -> NeurolocError:
        at = self.position() if at is None else at
        return NeurolocError(
            f"malformed prediction formula {self.source!r}: {message} at character {at} "
            f"({self.source[at:at + 20]!r}); formulas look like '(6;%cond_a%) < (6;%cond_b%)'"
        )

    def position(self) -> int:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else len(self.source)

    def peek(self) -> str | None:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, int, re.Match]:
        if self.index >= len(self.tokens):
            raise self.error("unexpected end")
        self.index += 1
        return self.tokens[self.index - 1]

    def typed(self, rule: Callable[[], tuple[Node, str]], wanted: str, op: str) -> Node:
        """Parse with `rule` and insist on the operand type that `op` needs."""
        at = self.position()
        node, kind = rule()
        if kind != wanted:
            need = "a number" if wanted == "num" else "a comparison"
            raise self.error(f"{op!r} needs {need} on each side", at=at)
        return node

    def chain(self, rule: Callable[[], tuple[Node, str]], ops: tuple[str, ...], wanted: str) -> tuple[Node, str]:
        """A left-associative run of `rule` joined by `ops`, each side of type `wanted`."""
        first = self.index
        node, kind = rule()
        while self.peek() in ops:
            op = self.take()[0]
            if kind != wanted:
                need = "a number" if wanted == "num" else "a comparison"
                raise self.error(f"{op!r} needs {need} on each side", at=self.tokens[first][1])
            node, kind = BinaryOp(op, node, self.typed(rule, wanted, op)), wanted
        return node, kind

    def formula(self) -> tuple[Node, str]:
        return self.chain(self.comparison, ("&", "|"), "bool")

    def comparison(self) -> tuple[Node, str]:
        first = self.index
        node, kind = self.sum()
        if self.peek() not in ("<", ">", "="):
            return node, kind
        op = self.take()[0]
        if kind != "num":
            raise self.error(f"{op!r} needs a number on each side", at=self.tokens[first][1])
        node = BinaryOp(op, node, self.typed(self.sum, "num", op))
        if self.peek() in ("<", ">", "="):
            raise self.error("chained comparisons are ambiguous; join them with & instead")
        return node, "bool"

    def sum(self) -> tuple[Node, str]:
        return self.chain(self.unary, ("+", "-"), "num")

    def unary(self) -> tuple[Node, str]:
        if self.peek() == "-":
            self.take()
            return Negate(self.typed(self.unary, "num", "-")), "num"
        return self.atom()

    def atom(self) -> tuple[Node, str]:
        text, at, match = self.take()
        if match.lastgroup == "number":
            return Number(float(text)), "num"
        if match.group("term") is not None:
            region = match.group("region")
            return Term(None if region == "*" else int(region), match.group("condition").strip()), "num"
        if text == "(":
            inner = self.formula()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.take()
            return inner
        raise self.error(f"expected a number, a (region;%condition%) term or '(' but found {text!r}", at=at)
