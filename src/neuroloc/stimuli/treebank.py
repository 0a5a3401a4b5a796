"""Universal Dependencies treebanks (CoNLL-U) as POS-tagged sentences with exact character spans.

The "key neurons for parts of speech" study needs, for every word, its UPOS tag and where it sits in
the text the model reads. `read_conllu` rebuilds each sentence's text from its tokens (honouring
`SpaceAfter=No`), so `sentence.text[start:end]` is the word, and carries document ids so that train
and test never share a document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import conllu
import pandas as pd
from conllu.exceptions import ParseException

from ..errors import NeurolocError
from .splits import grouped_split

_ID = re.compile(r"\d+(?:-\d+|\.\d+)?")
_PUD_SENT_ID = re.compile(r"[a-z]\d{8}")


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence: its text and, per syntactic word, form, tags and (start, end) in `text`.

    `multiword[i]` is True for words that come from a multiword token (English "didn't" = did + n't,
    French "du" = de + le). Their span is the exact piece of the surface token when the words'
    forms spell it out ("did" + "n't" == "didn't"), otherwise every word of the token gets the span
    of the whole surface token ("du" for both "de" and "le"), so `text[start:end] == word` holds for
    every word except the latter.
    """

    sent_id: str
    doc_id: str
    text: str
    words: tuple[str, ...]
    upos: tuple[str, ...]
    xpos: tuple[str | None, ...]
    spans: tuple[tuple[int, int], ...]
    multiword: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class TaggedCorpus:
    """POS-tagged sentences, with the views the recorder and the probe need."""

    sentences: list[TaggedSentence]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[TaggedSentence]:
        return iter(self.sentences)

    def __getitem__(self, index: int) -> TaggedSentence:
        return self.sentences[index]

    @property
    def n_words(self) -> int:
        return sum(len(s) for s in self.sentences)

    def texts(self) -> list[str]:
        """The sentence texts, in order."""
        return [s.text for s in self.sentences]

    def word_spans(self) -> list[tuple[tuple[int, int], ...]]:
        """Per sentence, the (start, end) character span of each word in its text."""
        return [s.spans for s in self.sentences]

    def groups(self) -> list[str]:
        """Per sentence, its document id: the unit that splits must keep together."""
        return [s.doc_id for s in self.sentences]

    def subset(self, indices: Sequence[int]) -> "TaggedCorpus":
        """A corpus holding only the sentences at `indices` (in that order)."""
        return TaggedCorpus([self.sentences[i] for i in indices], self.source)

    def words_table(self) -> pd.DataFrame:
        """One row per word: sent_index, word_index, word, upos, xpos, start, end, multiword, sent_id, doc_id."""
        rows = [
            (i, j, s.words[j], s.upos[j], s.xpos[j], s.spans[j][0], s.spans[j][1], s.multiword[j], s.sent_id, s.doc_id)
            for i, s in enumerate(self.sentences)
            for j in range(len(s))
        ]
        columns = ["sent_index", "word_index", "word", "upos", "xpos", "start", "end", "multiword", "sent_id", "doc_id"]
        return pd.DataFrame(rows, columns=columns)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["TaggedCorpus", "TaggedCorpus"]:
        """(train, test) split by document, so no document (hence no sentence) is in both.

        `test_fraction` is the share of documents held out; with a single document the split falls
        back to sentences.
        """
        groups = self.groups()
        if len(set(groups)) < 2:
            groups = [s.sent_id for s in self.sentences]
        train, test = grouped_split(groups, test_fraction, seed)
        return self.subset(train), self.subset(test)


def derive_doc_id(sent_id: str) -> str:
    """Document id from a sentence id when the file has no `# newdoc id`.

    Rule: everything before the last "-" (EWT: `weblog-..._0001-0001` -> `weblog-..._0001`); for PUD
    ids (a letter and eight digits, `n01001011`) the first six characters (`n01001`); otherwise the
    sentence id itself (each sentence its own document).
    """
    if "-" in sent_id:
        return sent_id.rsplit("-", 1)[0]
    if _PUD_SENT_ID.fullmatch(sent_id):
        return sent_id[:6]
    return sent_id


def read_conllu(path: str | Path, *, limit: int | None = None) -> TaggedCorpus:
    """Read a CoNLL-U file into a TaggedCorpus of its first `limit` sentences (all when None).

    Multiword-token ranges (`3-4`) give the surface text, the syntactic words inside them give the
    words and tags (see `TaggedSentence`); empty nodes (`8.1`) are skipped. Document ids come from
    `# newdoc id` (carried forward to the following sentences) or, before any, from `derive_doc_id`.
    """
    path = Path(path)
    if not path.is_file():
        raise NeurolocError(f"CoNLL-U file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise NeurolocError(f"{path}: not UTF-8 text ({e}); CoNLL-U files are UTF-8") from e

    sentences: list[TaggedSentence] = []
    doc_id: str | None = None
    for first_line, block in _blocks(lines):
        if limit is not None and len(sentences) >= limit:
            break
        if not any(not line.startswith("#") for line in block):
            continue
        tokens = _parse_block(path, first_line, block)
        meta = tokens.metadata
        if meta.get("newdoc id"):
            doc_id = meta["newdoc id"]
        sent_id = meta.get("sent_id") or f"{path.stem}-{len(sentences) + 1}"
        sentences.append(_sentence(tokens, sent_id, doc_id or derive_doc_id(sent_id)))
    if not sentences:
        raise NeurolocError(f"{path}: no sentences found; is this a CoNLL-U file?")
    return TaggedCorpus(sentences, source=str(path))


def _blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(1-based number of the first line, lines) of each blank-line separated block."""
    block: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _parse_block(path: Path, first_line: int, block: list[str]) -> conllu.TokenList:
    """Parse one sentence block; errors name the file and line."""
    for offset, line in enumerate(block):
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10 or not _ID.fullmatch(fields[0]):
            raise NeurolocError(
                f"{path}, line {first_line + offset}: not a CoNLL-U token line (need 10 tab-separated "
                f"fields starting with an id like 3, 3-4 or 3.1): {line[:80]!r}"
            )
    try:
        return conllu.parse_token_and_metadata("\n".join(block))
    except ParseException:
        for offset, line in enumerate(block):
            try:
                conllu.parse_token_and_metadata(line)
            except ParseException as e:
                raise NeurolocError(f"{path}, line {first_line + offset}: {e}") from e
        raise


def _space_after(token: conllu.Token) -> bool:
    misc = token.get("misc") or {}
    return misc.get("SpaceAfter") != "No"


def _sentence(tokens: conllu.TokenList, sent_id: str, doc_id: str) -> TaggedSentence:
    """Rebuild the text from surface tokens and give each syntactic word its span."""
    text_parts: list[str] = []
    position = 0
    words: list[str] = []
    upos: list[str] = []
    xpos: list[str | None] = []
    spans: list[tuple[int, int]] = []
    multiword: list[bool] = []
    covered_until = 0  # last word id inside the current multiword range
    by_id = {t["id"]: t for t in tokens if isinstance(t["id"], int)}

    def add(token: conllu.Token, span: tuple[int, int], in_mwt: bool) -> None:
        words.append(token["form"])
        upos.append(token["upos"])
        xpos.append(token["xpos"])
        spans.append(span)
        multiword.append(in_mwt)

    def emit(surface: str, token: conllu.Token) -> tuple[int, int]:
        nonlocal position
        start = position
        text_parts.append(surface)
        position += len(surface)
        if _space_after(token):
            text_parts.append(" ")
            position += 1
        return start, start + len(surface)

    for token in tokens:
        tid = token["id"]
        if isinstance(tid, tuple) and tid[1] == "-":
            first, _, last = tid
            start, end = emit(token["form"], token)
            parts = [by_id[i] for i in range(first, last + 1) if i in by_id]
            exact = "".join(p["form"] for p in parts) == token["form"]
            cursor = start
            for part in parts:
                if exact:
                    add(part, (cursor, cursor + len(part["form"])), True)
                    cursor += len(part["form"])
                else:
                    add(part, (start, end), True)
            covered_until = last
        elif isinstance(tid, int) and tid > covered_until:
            add(token, emit(token["form"], token), False)
    text = "".join(text_parts).rstrip(" ")
    return TaggedSentence(
        sent_id=sent_id,
        doc_id=doc_id,
        text=text,
        words=tuple(words),
        upos=tuple(upos),
        xpos=tuple(xpos),
        spans=tuple(spans),
        multiword=tuple(multiword),
    )
