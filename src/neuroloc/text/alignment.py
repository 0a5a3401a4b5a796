"""Map words (character spans) to token positions, using a fast tokenizer's offset mapping.

Attribution of a word's next-word prediction needs the position whose output predicts the word's
first token (`predict`), and probing needs the word's own tokens (`first`..`last`). Offsets differ
across tokenizers (byte-level BPE puts the leading space in the token, " dog" -> (3, 7); sentencepiece
"▁dog" may do the same), so words are matched by overlap of half-open intervals, which is right for
all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import NeurolocError


@dataclass(frozen=True)
class WordTokens:
    """Token positions of one word.

    `first`/`last`: first and last token overlapping the word. `predict = first - 1`: the position
    whose next-token prediction produces the word's first token (None when the word starts at
    position 0, i.e. there is no BOS). `merged`: a token of this word also belongs to another word
    (e.g. "didn" covering "did" and the start of "n't"); such words have no clean prediction position
    of their own and are usually dropped.
    """

    first: int
    last: int
    predict: int | None
    merged: bool = False


def align_words(
    offsets: Sequence[tuple[int, int]],
    spans: Sequence[tuple[int, int]],
    *,
    special_mask: Sequence[int] | None = None,
    text: str | None = None,
) -> list[WordTokens]:
    """Token positions of each word span, in the order of `spans`.

    `offsets` is the `offset_mapping` of one unpadded encoding; tokens with empty offsets (special
    tokens get (0, 0)) or flagged in `special_mask` are never matched, but keep their positions (so a
    BOS at 0 makes `predict` of the first word 0). With `text`, spans are checked against it and
    token offsets are trimmed of surrounding whitespace before matching. Raises NeurolocError for a
    span no token overlaps.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    word = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(word) == 0:
        return []
    if np.any(word[:, 1] <= word[:, 0]):
        bad = int(np.argmax(word[:, 1] <= word[:, 0]))
        raise NeurolocError(f"word {bad} has an empty span {tuple(word[bad])}")
    if text is not None:
        if word.max() > len(text) or word.min() < 0:
            raise NeurolocError(f"a word span lies outside the text (length {len(text)})")
        off = _trim_whitespace(off, text)

    keep = off[:, 1] > off[:, 0]
    if special_mask is not None:
        mask = np.asarray(special_mask, dtype=bool)
        if mask.shape != keep.shape:
            raise NeurolocError(f"special_mask has {mask.size} entries for {len(keep)} tokens")
        keep &= ~mask
    position = np.flatnonzero(keep)
    starts, ends = off[keep, 0], off[keep, 1]
    if np.any(np.diff(starts) < 0) or np.any(np.diff(ends) < 0):
        raise NeurolocError("token offsets are not in text order; pass the offset_mapping of one unpadded text")

    # first token ending after the word starts; last token starting before the word ends
    lo = np.searchsorted(ends, word[:, 0], side="right")
    hi = np.searchsorted(starts, word[:, 1], side="left") - 1
    missing = np.flatnonzero(lo > hi)
    if missing.size:
        i = int(missing[0])
        shown = f" {text[word[i, 0]:word[i, 1]]!r}" if text is not None else ""
        raise NeurolocError(
            f"word {i}{shown} at {tuple(int(v) for v in word[i])} overlaps no token; "
            "were the offsets computed on the same text as the spans?"
        )

    # a word is merged when it shares a token with any other word (words taken in text order)
    order = np.lexsort((word[:, 1], word[:, 0]))
    lo_sorted, hi_sorted = lo[order], hi[order]
    prev_max_hi = np.maximum.accumulate(np.concatenate([[-1], hi_sorted[:-1]]))
    next_min_lo = np.minimum.accumulate(np.concatenate([lo_sorted[1:], [np.iinfo(np.int64).max]])[::-1])[::-1]
    merged = np.empty(len(word), dtype=bool)
    merged[order] = (prev_max_hi >= lo_sorted) | (next_min_lo <= hi_sorted)

    first, last = position[lo], position[hi]
    return [
        WordTokens(int(f), int(la), int(f) - 1 if f > 0 else None, bool(m))
        for f, la, m in zip(first, last, merged)
    ]


def _trim_whitespace(off: np.ndarray, text: str) -> np.ndarray:
    """Offsets shrunk to exclude leading and trailing whitespace (whitespace-only tokens become empty)."""
    trimmed = off.copy()
    for k, (a, b) in enumerate(off):
        piece = text[a:b]
        stripped = piece.lstrip()
        a2 = a + len(piece) - len(stripped)
        trimmed[k] = (a2, a2 + len(stripped.rstrip()))
    return trimmed
