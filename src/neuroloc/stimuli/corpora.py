"""Multilingual text for language-neuron studies: one list of texts (with ids) per language.

Sources: the parallel UD PUD treebanks (the same 1,000 sentences in nine languages), a folder with one
file per language (`it.txt`, `pt.conllu`, ...), one CSV/JSONL table with a `language` column, or a
Hugging Face dataset with a language column. `split_corpus` divides every language into identification
and held-out texts *by id*, so with parallel data every language sees the same content and only the
language differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data_paths import find_data
from ..errors import NeurolocError
from .base import StimulusSet

__all__ = [
    "PUD_LANGUAGES", "MultilingualCorpus", "corpus_from_records", "load_corpus", "load_hf_corpus",
    "load_language_dir", "load_language_table", "load_pud", "split_corpus", "unknown_token_shares",
]

PUD_LANGUAGES = ("en", "de", "fr", "es", "zh", "ru", "ar", "hi", "id")
TEXT_SUFFIXES = (".txt", ".conllu")


@dataclass
class MultilingualCorpus:
    """Per language code, its texts and their ids (`ids[lang][i]` names `texts[lang][i]`).

    `prompts`, when given, holds per language a prompt prefix of each text (for response-only counting:
    the text's statistics minus its prompt's). `source` says where the texts came from.
    """

    texts: dict[str, list[str]]
    ids: dict[str, list[str]]
    source: str = ""
    prompts: dict[str, list[str]] | None = None
    parallel: bool = field(default=False)

    def __post_init__(self) -> None:
        for lang, texts in self.texts.items():
            if len(self.ids.get(lang, ())) != len(texts):
                raise NeurolocError(f"{self.source or 'corpus'}: language {lang!r} has {len(texts)} texts but "
                                    f"{len(self.ids.get(lang, ()))} ids")
            if self.prompts is not None and len(self.prompts.get(lang, ())) != len(texts):
                raise NeurolocError(f"{self.source or 'corpus'}: language {lang!r} needs one prompt per text")

    @property
    def languages(self) -> list[str]:
        return list(self.texts)

    def select(self, languages: Sequence[str] | None) -> "MultilingualCorpus":
        """Only `languages` (in that order; all when None). Raises on a missing or empty language, or < 2."""
        chosen = list(self.texts) if languages is None else [lang.strip() for lang in languages if lang.strip()]
        missing = [lang for lang in chosen if not self.texts.get(lang)]
        if missing:
            have = ", ".join(f"{k} ({len(v)})" for k, v in self.texts.items()) or "none"
            raise NeurolocError(f"{self.source or 'corpus'}: no text for language(s) {', '.join(missing)}; "
                                f"the data has {have}")
        if len(set(chosen)) < 2:
            raise NeurolocError(f"{self.source or 'corpus'}: a language-neuron study needs at least two languages, "
                                f"got {chosen}; pass more with --languages or add files")
        chosen = list(dict.fromkeys(chosen))
        prompts = None if self.prompts is None else {k: self.prompts[k] for k in chosen}
        return MultilingualCorpus({k: self.texts[k] for k in chosen}, {k: self.ids[k] for k in chosen},
                                  self.source, prompts, self.parallel)

    def subset(self, ids: Mapping[str, Sequence[str]]) -> "MultilingualCorpus":
        """Per language, only the texts whose ids are in `ids[lang]`, in that order."""
        texts, kept, prompts = {}, {}, {} if self.prompts is not None else None
        for lang in self.texts:
            position = {i: n for n, i in enumerate(self.ids[lang])}
            rows = [position[i] for i in ids[lang]]
            texts[lang] = [self.texts[lang][r] for r in rows]
            kept[lang] = [self.ids[lang][r] for r in rows]
            if prompts is not None:
                prompts[lang] = [self.prompts[lang][r] for r in rows]
        return MultilingualCorpus(texts, kept, self.source, prompts, self.parallel)

    def content_hash(self, lang: str) -> str:
        """SHA-256 of one language's texts, ids and prompts: the key of cached statistics."""
        payload = {"texts": self.texts[lang], "ids": self.ids[lang],
                   "prompts": None if self.prompts is None else self.prompts[lang]}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()

    def stimulus_set(self, name: str, *, response_only: bool = False) -> StimulusSet:
        """Every language's texts in one stimulus set labelled by language code (languages in order); with
        `response_only`, token statistics count only each text's tokens after its prompt (`count_from`)."""
        texts, labels, starts = [], [], []
        if response_only and self.prompts is None:
            raise NeurolocError(f"{self.source or 'corpus'}: response-only counting needs a prompt per text: give a "
                                "CSV/JSONL with a 'prompt' column")
        for lang in self.texts:
            texts += self.texts[lang]
            labels += [lang] * len(self.texts[lang])
            if response_only:
                for text_id, text, prompt in zip(self.ids[lang], self.texts[lang], self.prompts[lang]):
                    if not text.startswith(prompt):
                        raise NeurolocError(f"{self.source or 'corpus'}: the prompt of text {text_id!r} ({lang}) is "
                                            "not a prefix of its text")
                    starts.append(len(prompt) if prompt.strip() else 0)
        return StimulusSet(name, tuple(texts), tuple(labels), source=self.source or None,
                           count_from=tuple(starts) if response_only else None)

    def describe(self) -> dict:
        return {"source": self.source, "parallel": self.parallel,
                "languages": {k: {"n_texts": len(v), "sha256": self.content_hash(k)} for k, v in self.texts.items()}}


# ------------------------------------------------------------------------------------------ readers
def _conllu_texts(path: Path) -> tuple[list[str], list[str]]:
    """(sentence ids, texts) from a CoNLL-U file's `# sent_id` / `# text` comments; sentences without
    `# text` are rebuilt from their tokens."""
    from .treebank import read_conllu

    ids, texts, missing = [], [], False
    sent_id, text = None, None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise NeurolocError(f"{path}: not UTF-8 text ({error})") from None
    for line in lines + [""]:
        if line.startswith("# sent_id"):
            sent_id = line.split("=", 1)[1].strip()
        elif line.startswith("# text =") or line.startswith("# text="):
            text = line.split("=", 1)[1].strip()
        elif not line.strip():
            if sent_id is not None or text is not None:
                if text is None:
                    missing = True
                ids.append(sent_id or f"{path.stem}-{len(ids) + 1}")
                texts.append(text or "")
            sent_id, text = None, None
    if missing or not ids:
        corpus = read_conllu(path)
        return [s.sent_id for s in corpus.sentences], corpus.texts()
    return ids, texts


def _text_lines(path: Path) -> tuple[list[str], list[str]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise NeurolocError(f"{path}: not UTF-8 text ({error})") from None
    rows = [(str(n), line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    return [r[0] for r in rows], [r[1] for r in rows]


def load_pud(data_dir: str | Path, languages: Sequence[str] | None = None) -> MultilingualCorpus:
    """The parallel UD PUD test treebanks (`<data_dir>/ud/<lang>_pud-ud-test.conllu`), texts by sentence id."""
    folder = Path(data_dir) / "ud"
    wanted = list(languages) if languages else [lang for lang in PUD_LANGUAGES
                                                 if (folder / f"{lang}_pud-ud-test.conllu").is_file()]
    missing = [lang for lang in wanted if not (folder / f"{lang}_pud-ud-test.conllu").is_file()]
    if missing:
        raise NeurolocError(f"no PUD treebank for {', '.join(missing)} in {folder} (expected "
                            f"{missing[0]}_pud-ud-test.conllu); pass --corpus DIR with your own files")
    texts, ids = {}, {}
    for lang in wanted:
        ids[lang], texts[lang] = _conllu_texts(folder / f"{lang}_pud-ud-test.conllu")
    return MultilingualCorpus(texts, ids, source=f"UD PUD ({folder})", parallel=True)


def load_language_dir(path: str | Path) -> MultilingualCorpus:
    """One file per language named by its code: `it.txt` (one sentence or paragraph per line) or
    `pt.conllu`. Texts are parallel when every language has the same ids (CoNLL-U sentence ids)."""
    folder = Path(path)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise NeurolocError(f"{folder}: no language files; expected e.g. en.txt, de.txt or fr.conllu")
    texts, ids = {}, {}
    for file in files:
        lang = file.stem.split("_")[0] if file.suffix == ".conllu" else file.stem
        if lang in texts:
            raise NeurolocError(f"{folder}: two files for language {lang!r}; keep one")
        ids[lang], texts[lang] = _conllu_texts(file) if file.suffix == ".conllu" else _text_lines(file)
    parallel = len({tuple(v) for v in ids.values()}) == 1 and all(f.suffix == ".conllu" for f in files)
    return MultilingualCorpus(texts, ids, source=str(folder), parallel=parallel)


def corpus_from_records(records: Iterable[Mapping], *, source: str, language_column: str = "language",
                        text_column: str = "text", id_column: str | None = "id",
                        prompt_column: str | None = "prompt") -> MultilingualCorpus:
    """Rows with a language and a text (and optionally an id shared by translations, and a prompt prefix)."""
    frame = pd.DataFrame(list(records))
    for column in (language_column, text_column):
        if column not in frame.columns:
            raise NeurolocError(f"{source}: no {column!r} column; the columns are {list(frame.columns)}")
    has_ids = id_column is not None and id_column in frame.columns
    has_prompts = prompt_column is not None and prompt_column in frame.columns
    texts: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    prompts: dict[str, list[str]] = {}
    for n, row in enumerate(frame.to_dict("records")):
        lang, text = str(row[language_column]).strip(), row[text_column]
        if not isinstance(text, str) or not text.strip():
            continue
        texts.setdefault(lang, []).append(text.strip())
        ids.setdefault(lang, []).append(str(row[id_column]) if has_ids else str(n))
        if has_prompts:
            prompt = row[prompt_column]
            prompts.setdefault(lang, []).append(prompt if isinstance(prompt, str) else "")
    for lang, values in ids.items():
        if len(set(values)) != len(values):
            raise NeurolocError(f"{source}: ids repeat within language {lang!r}; ids must be unique per language")
    parallel = has_ids and len({tuple(sorted(v)) for v in ids.values()}) == 1
    return MultilingualCorpus(texts, ids, source=source, prompts=prompts if has_prompts else None, parallel=parallel)


def load_language_table(path: str | Path, *, language_column: str = "language",
                        text_column: str = "text") -> MultilingualCorpus:
    """A CSV/TSV or JSONL file with a `language` and a `text` column (optional `id`, `prompt`)."""
    path = Path(path)
    try:
        if path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif path.suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        else:
            raise NeurolocError(f"{path}: unknown table format; use .csv, .tsv or .jsonl")
    except (ValueError, pd.errors.ParserError) as error:
        raise NeurolocError(f"{path}: cannot read the table ({error})") from None
    return corpus_from_records(frame.to_dict("records"), source=str(path), language_column=language_column,
                               text_column=text_column)


def load_hf_corpus(name: str, *, split: str = "train", config: str | None = None, data_files=None,
                   language_column: str = "language", text_column: str = "text") -> MultilingualCorpus:
    """A Hugging Face dataset with a language column (needs the `datasets` extra and the hub, or a local
    builder such as `csv` with `data_files`)."""
    try:
        import datasets
    except ImportError:
        raise NeurolocError("Hugging Face datasets need the extra: pip install 'neuroloc[datasets]'") from None
    try:
        dataset = datasets.load_dataset(name, config, split=split, **({"data_files": data_files} if data_files else {}))
    except Exception as error:  # network, missing dataset or split: datasets raises many types
        raise NeurolocError(f"cannot load Hugging Face dataset {name!r} (split {split!r}): {error}") from None
    return corpus_from_records(dataset, source=f"hf:{name}", language_column=language_column,
                               text_column=text_column)


def load_corpus(spec: str | Path | None = None, languages: Sequence[str] | None = None, *,
                data_root: str | Path | None = None) -> MultilingualCorpus:
    """Dispatch: None → the PUD treebanks in `ud/` under the data root (`neuroloc.data_paths`: `data_root`,
    $NEUROLOC_DATA, ../shared/data); `hf:NAME` → Hugging Face; a folder holding `ud/` PUD treebanks or
    per-language files; a .csv/.tsv/.jsonl table. Keeps only `languages` (all when None)."""
    if spec is None:
        ud = find_data("ud", data_root)
        if ud is None:
            raise NeurolocError("no UD PUD treebanks found (ud/ under --data, $NEUROLOC_DATA or ../shared/data); "
                                "give --data DATA_ROOT, or --corpus with your own texts")
        corpus = load_pud(ud.parent, languages)
    elif str(spec).startswith("hf:"):
        corpus = load_hf_corpus(str(spec)[3:])
    else:
        path = Path(spec)
        if not path.exists():
            raise NeurolocError(f"--corpus {path}: no such file or folder")
        if path.is_dir() and any((path / "ud").glob("*_pud-ud-test.conllu")):
            corpus = load_pud(path, languages)
        elif path.is_dir():
            corpus = load_language_dir(path)
        else:
            corpus = load_language_table(path)
    return corpus.select(languages)


# ------------------------------------------------------------------------------------------ splits
def split_corpus(corpus: MultilingualCorpus, n_identify: int, n_heldout: int, *,
                 seed: int = 0) -> tuple[MultilingualCorpus, MultilingualCorpus]:
    """(identification, held-out) by id. Parallel corpora split the ids all languages share, so every
    language gets the same sentences on each side; otherwise each language is split on its own ids.

    Ids are shuffled once (`seed`); identification texts come from the front, held-out texts from the back
    (at most half the pool), so the identification set — and its cached statistics — does not change with
    `n_heldout` while the two fit in the pool."""
    if n_identify < 1 or n_heldout < 0:
        raise NeurolocError(f"need n_identify >= 1 and n_heldout >= 0, got {n_identify}, {n_heldout}")
    rng = np.random.default_rng(seed)
    if corpus.parallel:
        shared = set.intersection(*(set(v) for v in corpus.ids.values()))
        order = [i for i in corpus.ids[corpus.languages[0]] if i in shared]
        pools = {lang: order for lang in corpus.languages}
        permutation = rng.permutation(len(order))
        shuffled = {lang: [order[p] for p in permutation] for lang in corpus.languages}
    else:
        pools = corpus.ids
        shuffled = {lang: [ids[p] for p in rng.permutation(len(ids))] for lang, ids in corpus.ids.items()}
    identify, heldout = {}, {}
    for lang in corpus.languages:
        ids = shuffled[lang]
        if len(ids) < 1 + (1 if n_heldout else 0):
            raise NeurolocError(f"{corpus.source}: language {lang!r} has {len(pools[lang])} usable texts; "
                                "need at least one for identification and one held out")
        n_held = min(n_heldout, len(ids) // 2) if n_heldout else 0
        heldout[lang] = ids[len(ids) - n_held:]
        identify[lang] = ids[:min(n_identify, len(ids) - n_held)]
    return corpus.subset(identify), corpus.subset(heldout)


# ------------------------------------------------------------------------------------------ tokenizer check
def unknown_token_shares(tokenizer, corpus: MultilingualCorpus, *, max_share: float | None = 0.05,
                         sample: int = 200) -> dict[str, float]:
    """Share of each language's tokens that are the tokenizer's unknown token (first `sample` texts).

    Raises, naming every language's share, when one exceeds `max_share`: the tokenizer cannot read that
    script, and activation statistics on unknown tokens say nothing about the language.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    shares = {}
    for lang, texts in corpus.texts.items():
        ids = tokenizer(texts[:sample], add_special_tokens=False)["input_ids"]
        total = sum(len(row) for row in ids)
        shares[lang] = (sum(row.count(unk) for row in ids) / total) if unk is not None and total else 0.0
    if max_share is not None:
        bad = [lang for lang, share in shares.items() if share > max_share]
        if bad:
            listing = ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
            raise NeurolocError(f"the tokenizer maps {', '.join(bad)} to unknown tokens (share of unknown tokens: "
                                f"{listing}); use a model whose vocabulary covers these scripts or drop them")
    return shares
