"""The small inputs every fault runs on: a saved tiny model, and a stimulus file, a multilingual corpus, task
items, a treebank and recordings small enough that a whole study takes about a second on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.test_pos_pipeline import conllu_text
from tests.test_seams import NONWORDS, SENTENCES
from tests.test_task_pipeline import write_facts
from tests.tiny import tiny_model, tiny_tokenizer


def save_model(folder: Path, family: str = "llama") -> str:
    tiny_model(family).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def write_stimuli(path: Path, texts: list[str], conditions: list[str]) -> str:
    pd.DataFrame({"text": texts, "condition": conditions}).to_csv(path, index=False)
    return str(path)


def contrast_texts() -> tuple[list[str], list[str]]:
    """12 sentences and 12 non-word strings (two copies with a varying word, so no text repeats)."""
    texts = [f"{t} {w}" for w in ("now", "then") for t in SENTENCES + NONWORDS]
    conditions = (["S"] * len(SENTENCES) + ["N"] * len(NONWORDS)) * 2
    return texts, conditions


def write_corpus(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    lines = {"en": "The dog {} runs home.", "de": "Der Hund {} läuft heim.", "fr": "Le chien {} court vite."}
    for language, template in lines.items():
        (folder / f"{language}.txt").write_text("\n".join(template.format(i) for i in range(10)) + "\n")
    return str(folder)


def write_items(path: Path) -> str:
    write_facts(path)
    return str(path)


def write_treebank(path: Path) -> str:
    path.write_text(conllu_text(4, 3, seed=0), encoding="utf-8")
    return str(path)


def recordings_table(n: int = 16, seed: int = 0) -> pd.DataFrame:
    """Recordings of 3 neuroids for `n` sentences in passages of 4."""
    rng = np.random.default_rng(seed)
    texts = [f"the {w} looked for the keys {i}" for i, w in enumerate((SENTENCES * 4)[:n])]
    table = pd.DataFrame(rng.normal(size=(n, 3)), columns=["v0", "v1", "v2"])
    table.insert(0, "text", texts)
    table.insert(1, "passage", [f"p{i // 4}" for i in range(n)])
    return table


def write_recordings(path: Path, table: pd.DataFrame | None = None) -> str:
    (recordings_table() if table is None else table).to_csv(path, index=False)
    return str(path)


def write_json(path: Path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)
