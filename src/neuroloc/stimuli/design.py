"""Designs: what a localizer compares, over stimulus sets with any number of labels.

- `contrast`: one target label against one control (sentences vs non-word strings);
- `one_vs_rest`: every label (or the chosen ones) against all other texts (languages, relations, POS);
- `groups`: all labels at once, for scores defined over the whole grouping (LAPE's entropy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import NeurolocError

DESIGN_KINDS = ("contrast", "one_vs_rest", "groups")


@dataclass(frozen=True)
class Design:
    """`kind` and the labels it uses (contrast: (target, control); otherwise the labels compared, or
    empty for every label of the stimuli)."""

    kind: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in DESIGN_KINDS:
            raise NeurolocError(f"unknown design {self.kind!r}; choose one of {', '.join(DESIGN_KINDS)}")
        if self.kind == "contrast" and (len(self.labels) != 2 or self.labels[0] == self.labels[1]):
            raise NeurolocError(f"a contrast needs two different labels (TARGET:CONTROL), got {list(self.labels)}")

    @classmethod
    def contrast(cls, target: str, control: str) -> "Design":
        return cls("contrast", (target, control))

    @classmethod
    def one_vs_rest(cls, labels: Sequence[str] = ()) -> "Design":
        return cls("one_vs_rest", tuple(labels))

    @classmethod
    def groups(cls, labels: Sequence[str] = ()) -> "Design":
        return cls("groups", tuple(labels))

    @classmethod
    def parse(cls, spec: str) -> "Design":
        """`A:B` (a contrast), `one-vs-rest`, `groups`, or `one-vs-rest:en,de,fr`."""
        text = spec.strip()
        head, _, rest = text.partition(":")
        names = {"one-vs-rest": "one_vs_rest", "one_vs_rest": "one_vs_rest", "groups": "groups"}
        if head in names:
            return cls(names[head], tuple(x.strip() for x in rest.split(",") if x.strip()))
        if rest and ":" not in rest and head.strip() and rest.strip():
            return cls.contrast(head.strip(), rest.strip())
        raise NeurolocError(f"cannot read design {spec!r}; use TARGET:CONTROL, one-vs-rest or groups")

    @classmethod
    def from_file(cls, path: str | Path) -> "Design":
        """A JSON design file: {"kind": "contrast"|"one_vs_rest"|"groups", "labels": [...]}."""
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
            return cls(spec["kind"], tuple(spec.get("labels", ())))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise NeurolocError(
                f"design file {path}: {error}; expected JSON like "
                '{"kind": "contrast", "labels": ["sentences", "nonwords"]}'
            ) from None

    def resolve(self, present: Sequence[str]) -> "Design":
        """This design with its labels checked against (or, when empty, taken from) the labels present."""
        present = list(dict.fromkeys(present))
        labels = self.labels or tuple(present)
        missing = [label for label in labels if label not in present]
        if missing:
            raise NeurolocError(f"design names label(s) {missing} that no stimulus has (labels present: {present})")
        if self.kind != "contrast" and len(labels) < 2:
            raise NeurolocError(f"a {self.kind} design needs at least two labels, got {list(labels)}")
        return Design(self.kind, labels)

    def comparisons(self, present: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        """(target, others) pairs: a contrast gives one; one-vs-rest gives one per label, against every
        other label present; groups gives one per label too (scores read them jointly)."""
        if self.kind == "contrast":
            return [(self.labels[0], (self.labels[1],))]
        present = list(dict.fromkeys(present))
        return [(label, tuple(p for p in present if p != label)) for label in self.labels]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "labels": list(self.labels)}

    def __str__(self) -> str:
        if self.kind == "contrast":
            return ":".join(self.labels)
        return self.kind.replace("_", "-") + (":" + ",".join(self.labels) if self.labels else "")
