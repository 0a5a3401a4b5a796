"""StimulusSet: texts with a label (condition) each, the input of every localizer and probe."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

from .design import Design


@dataclass(frozen=True)
class StimulusSet:
    """Texts, one condition label per text (any number of labels), and optionally what to contrast.

    `contrast` is (target, control), e.g. ("sentences", "nonwords"): the localizer's t is target minus
    control. Without it, sets of three or more labels are compared one-vs-rest (see `design`).
    `groups` (optional) ties texts that must stay together in splits.
    `word_spans` (optional) gives each text's words as (start, end) character offsets.
    `count_from` (optional) gives per text the character offset where the tokens that token statistics
    count begin (e.g. a response after its prompt: tokens ending after it count); None: every token.
    """

    name: str
    texts: tuple[str, ...]
    conditions: tuple[str, ...]
    contrast: tuple[str, str] | None = None
    groups: tuple[str, ...] | None = None
    word_spans: tuple[tuple[tuple[int, int], ...], ...] | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)
    count_from: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.conditions):
            raise ValueError(
                f"stimulus set {self.name!r}: {len(self.texts)} texts but {len(self.conditions)} conditions"
            )
        for label in self.contrast or ():
            if label not in self.conditions:
                raise ValueError(
                    f"stimulus set {self.name!r}: contrast condition {label!r} has no items "
                    f"(conditions present: {sorted(set(self.conditions))})"
                )
        if self.groups is not None and len(self.groups) != len(self.texts):
            raise ValueError(f"stimulus set {self.name!r}: groups must have one entry per text")
        if self.word_spans is not None and len(self.word_spans) != len(self.texts):
            raise ValueError(f"stimulus set {self.name!r}: word_spans must have one entry per text")
        if self.count_from is not None and len(self.count_from) != len(self.texts):
            raise ValueError(f"stimulus set {self.name!r}: count_from must have one entry per text")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> list[str]:
        """The distinct conditions, in first-seen order."""
        return list(dict.fromkeys(self.conditions))

    @property
    def design(self) -> Design:
        """The default design: the contrast when given, else one-vs-rest over every label."""
        return Design.contrast(*self.contrast) if self.contrast else Design.one_vs_rest()

    def indices(self, condition: str) -> list[int]:
        """Positions of the texts in `condition`."""
        return [i for i, c in enumerate(self.conditions) if c == condition]

    def texts_of(self, condition: str) -> list[str]:
        return [self.texts[i] for i in self.indices(condition)]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "StimulusSet":
        """A new set holding only `indices` (in that order)."""
        pick = list(indices)
        return StimulusSet(
            name=name or self.name,
            texts=tuple(self.texts[i] for i in pick),
            conditions=tuple(self.conditions[i] for i in pick),
            contrast=self.contrast,
            groups=None if self.groups is None else tuple(self.groups[i] for i in pick),
            word_spans=None if self.word_spans is None else tuple(self.word_spans[i] for i in pick),
            source=self.source,
            metadata=dict(self.metadata),
            count_from=None if self.count_from is None else tuple(self.count_from[i] for i in pick),
        )

    def content_hash(self) -> str:
        """sha256 of the texts, conditions, contrast, groups and (when given) count_from: identifies the
        data in manifests."""
        counted = {} if self.count_from is None else {"count_from": self.count_from}
        payload = json.dumps(
            {
                "texts": self.texts,
                "conditions": self.conditions,
                "contrast": self.contrast,
                "groups": self.groups,
                **counted,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        return hashlib.sha256(payload).hexdigest()
