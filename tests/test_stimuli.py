"""Built-in localizers, user stimulus files and the registry (fast, no models)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.custom import load_contrast_file
from neuroloc.stimuli.language import load_language_localizer
from neuroloc.stimuli.md import make_md_localizer
from neuroloc.stimuli.registry import get_stimuli, parse_contrast
from neuroloc.stimuli.tom import load_tom_localizer

FEDORENKO = Path(__file__).parents[1].parent / "shared" / "data" / "fedorenko2010"
needs_fedorenko = pytest.mark.skipif(not FEDORENKO.is_dir(), reason="../shared/data/fedorenko2010 not present")


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- language ---------------------------------------------------------------------------------


@needs_fedorenko
def test_language_localizer_has_240_items_per_condition():
    stimuli = load_language_localizer(FEDORENKO)
    assert stimuli.name == "language"
    assert stimuli.contrast == ("sentences", "nonwords")
    assert len(stimuli.indices("sentences")) == 240
    assert len(stimuli.indices("nonwords")) == 240
    assert len(set(zip(stimuli.texts, stimuli.conditions))) == 480
    for text, spans in zip(stimuli.texts, stimuli.word_spans):
        assert len(text.split(" ")) == 12
        assert text == text.lower()
        assert [text[a:b] for a, b in spans] == text.split(" ")
    assert len(stimuli.metadata["sha256"]) == 10
    assert load_language_localizer(FEDORENKO).content_hash() == stimuli.content_hash()


@needs_fedorenko
def test_language_localizer_keeps_case_and_deduplicates(tmp_path):
    original = load_language_localizer(FEDORENKO, lowercase=False)
    assert original.texts[0].split()[0].isupper()
    first = sorted(FEDORENKO.glob("*.csv"))[0]
    write(tmp_path / "a.csv", first.read_text())
    write(tmp_path / "b.csv", first.read_text())
    assert len(load_language_localizer(tmp_path)) == len(load_language_localizer(first))


def test_language_localizer_reports_bad_rows(tmp_path):
    header = ",".join(f"stim{i}" for i in range(1, 15))
    words = ",".join(["w"] * 12)
    bad_flag = write(tmp_path / "flag.csv", f"{header}\n1,{words},S\n2,{words},X\n")
    with pytest.raises(NeurolocError, match=r"flag\.csv: line 3, column 'stim14'.*'X'"):
        load_language_localizer(bad_flag)
    short = ",".join(f"stim{i}" for i in range(1, 14))
    missing = write(tmp_path / "missing.csv", f"{short}\n1,{words}\n")
    with pytest.raises(NeurolocError, match=r"missing\.csv: no column 'stim14'"):
        load_language_localizer(missing)
    empty_word = write(tmp_path / "empty.csv", f"{header}\n1,{words},S\n2,{words[:-2]},,N\n")
    with pytest.raises(NeurolocError, match=r"empty\.csv: line 3, column 'stim13'"):
        load_language_localizer(empty_word)


def test_language_localizer_without_brainscore_says_how_to_install(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(NeurolocError, match="pip install --no-deps brainscore-language"):
        load_language_localizer()


# --- multiple demand --------------------------------------------------------------------------

PROBLEM = re.compile(r"Question: What is (\d+) ([+-]) (\d+)\? Answer: (\d+)")


def test_md_problems_are_correct_and_in_range():
    stimuli = make_md_localizer(seed=3, n_per_condition=60)
    assert stimuli.name == "md" and stimuli.contrast == ("hard", "easy")
    assert stimuli.metadata["seed"] == 3
    ranges = {"hard": range(100, 200), "easy": range(1, 20)}
    for condition, operands in ranges.items():
        texts = stimuli.texts_of(condition)
        assert len(texts) == 60 and len(set(texts)) == 60
        ops = []
        for text in texts:
            a, op, b, answer = PROBLEM.fullmatch(text).groups()
            a, b, answer = int(a), int(b), int(answer)
            assert a in operands and b in operands
            assert answer == (a + b if op == "+" else a - b) >= 0
            ops.append(op)
        assert ops.count("+") == ops.count("-") == 30


def test_md_is_deterministic_per_seed():
    assert make_md_localizer(seed=0).texts == make_md_localizer(seed=0).texts
    assert make_md_localizer(seed=0).content_hash() != make_md_localizer(seed=1).content_hash()
    assert len(make_md_localizer(n_per_condition=380)) == 760


@pytest.mark.parametrize("n", [1, 381])
def test_md_rejects_impossible_sizes(n):
    with pytest.raises(NeurolocError, match=f"n_per_condition={n}"):
        make_md_localizer(n_per_condition=n)


# --- theory of mind ---------------------------------------------------------------------------


def test_tom_packaged_stories_are_balanced():
    stimuli = load_tom_localizer()
    assert stimuli.name == "tom" and stimuli.contrast == ("belief", "photo")
    belief, photo = stimuli.texts_of("belief"), stimuli.texts_of("photo")
    assert len(belief) >= 24 and len(photo) >= 24
    assert len(set(stimuli.texts)) == len(stimuli)
    assert all(t.endswith(" True or false?") for t in stimuli.texts)
    mean_b = sum(len(t.split()) for t in belief) / len(belief)
    mean_p = sum(len(t.split()) for t in photo) / len(photo)
    assert abs(mean_b - mean_p) / max(mean_b, mean_p) < 0.15
    answers = stimuli.metadata["answers"]
    for condition in ("belief", "photo"):
        picked = [answers[i] for i in stimuli.indices(condition)]
        assert set(picked) == {True, False} and abs(picked.count(True) - picked.count(False)) <= 2
    assert load_tom_localizer().content_hash() == stimuli.content_hash()


def test_tom_without_question_is_the_story():
    stories = load_tom_localizer(include_question=False)
    full = load_tom_localizer()
    assert all(f.startswith(s + " ") for s, f in zip(stories.texts, full.texts))
    assert not any("True or false?" in s for s in stories.texts)


def test_tom_reads_saxe_lab_layout(tmp_path):
    for n in (1, 2, 10):
        for kind in "bp":
            write(tmp_path / f"{n}{kind}_story.txt", f"Story {n}{kind}\nsecond line.\n")
            write(tmp_path / f"{n}{kind}_question.txt", f"Question {n}{kind}.\n")
    write(tmp_path / "README.txt", "not a story")
    stimuli = load_tom_localizer(tmp_path)
    assert stimuli.metadata["ids"] == ["1b", "1p", "2b", "2p", "10b", "10p"]
    assert stimuli.conditions == ("belief", "photo") * 3
    assert stimuli.texts[0] == "Story 1b second line. Question 1b. True or false?"
    (tmp_path / "2p_question.txt").unlink()
    with pytest.raises(NeurolocError, match="2p_question.txt is missing"):
        load_tom_localizer(tmp_path)
    assert len(load_tom_localizer(tmp_path, include_question=False)) == 6


def test_tom_reads_csv_and_rejects_bad_condition(tmp_path):
    rows = "story,question,condition\n" + "".join(f"s{i},q{i},{c}\n" for i, c in enumerate("bpbp"))
    stimuli = load_tom_localizer(write(tmp_path / "tom.csv", rows))
    assert stimuli.conditions == ("belief", "photo", "belief", "photo")
    assert stimuli.texts[1] == "s1 q1 True or false?"
    bad = write(tmp_path / "bad.csv", rows + "s9,q9,desire\n")
    with pytest.raises(NeurolocError, match=r"bad\.csv: line 6, column 'condition'.*'desire'"):
        load_tom_localizer(bad)


# --- custom files -----------------------------------------------------------------------------

GOOD = "text,condition\na,x\nb,y\nc,x\nd,y\n"


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_custom_delimited(tmp_path, suffix, sep):
    rows = [("text", "condition", "group"), ("one, two", "x", "g1"), ("b", "y", "g1"), ("c", "x", "g2"), ("d", "y", "g2")]
    with open(tmp_path / f"f{suffix}", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=sep).writerows(rows)
    stimuli = load_contrast_file(tmp_path / f"f{suffix}")
    assert stimuli.texts[0] == "one, two"
    assert stimuli.contrast == ("x", "y")
    assert stimuli.groups == ("g1", "g1", "g2", "g2")
    assert stimuli.name == "f" and len(stimuli.metadata["sha256"][f"f{suffix}"]) == 64


def test_custom_jsonl_and_explicit_contrast(tmp_path):
    rows = [{"sentence": f"t{i}", "label": c} for i, c in enumerate("abcabc")]
    path = write(tmp_path / "f.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    stimuli = load_contrast_file(
        path, text_column="sentence", condition_column="label", contrast=("c", "a"), name="mine"
    )
    assert stimuli.contrast == ("c", "a") and stimuli.name == "mine" and len(stimuli) == 6


@pytest.mark.parametrize(
    "name,content,kwargs,pattern",
    [
        ("cols.csv", "sentence,condition\na,x\n", {}, r"cols\.csv: no column 'text' \(columns found: 'sentence', 'condition'\)"),
        ("empty.csv", "text,condition\na,x\n ,y\n", {}, r"empty\.csv: line 3, column 'text': empty"),
        ("nocond.csv", "text,condition\na,x\nb,\n", {}, r"nocond\.csv: line 3, column 'condition': empty"),
        ("fields.csv", "text,condition\na,b,x\n", {}, r"fields\.csv: line 2: 3 fields"),
        ("bad.jsonl", '{"text": "a", "condition": "x"}\n{"text": "b",\n', {}, r"bad\.jsonl: line 2, column 14: not valid JSON"),
        ("list.jsonl", '{"text": "a", "condition": "x"}\n["b", "y"]\n', {}, r"list\.jsonl: line 2: expected a JSON object"),
        ("key.jsonl", '{"text": "a", "condition": "x"}\n{"text": "b"}\n', {}, r"key\.jsonl: line 2, column 'condition': empty"),
        ("type.jsonl", '{"text": ["a"], "condition": "x"}\n', {}, r"type\.jsonl: line 1, column 'text': expected text"),
        ("utf8.csv", b"text,condition\na,x\nb\xff,y\n", {}, r"utf8\.csv: line 3, byte 2: not valid UTF-8"),
        ("none.csv", GOOD, {"contrast": ("x", "z")}, r"none\.csv: contrast condition 'z' has no items .*x, y"),
        ("one.csv", "text,condition\na,x\nb,y\nc,y\n", {}, r"one\.csv: line 2: condition 'x' has only 1 item"),
        ("three.csv", GOOD + "e,z\n", {}, r"three\.csv: line \d+: condition 'z' has only 1 item"),
        ("single.csv", "text,condition\na,x\nb,x\n", {}, r"single\.csv: column 'condition' holds only condition 'x'"),
        ("same.csv", GOOD, {"contrast": ("x", "x")}, r"two different conditions"),
        ("f.txt", GOOD, {}, r"f\.txt: unsupported file type '\.txt'"),
        ("blank.csv", "\n\n", {}, r"blank\.csv: the file is empty"),
        ("group.csv", "text,condition,group\na,x,g\nb,y,\n", {}, r"group\.csv: line 3, column 'group': empty"),
    ],
)
def test_custom_errors_name_file_line_and_column(tmp_path, name, content, kwargs, pattern):
    path = write(tmp_path / name, content)
    with pytest.raises(NeurolocError, match=pattern):
        load_contrast_file(path, **kwargs)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(NeurolocError, match=r"nope\.csv: no such file"):
        load_contrast_file(tmp_path / "nope.csv")
    with pytest.raises(NeurolocError, match=r"nowhere: no such file"):
        load_tom_localizer(tmp_path / "nowhere")
    with pytest.raises(NeurolocError, match=r"nowhere: no such file"):
        load_language_localizer(tmp_path / "nowhere")


# --- registry ---------------------------------------------------------------------------------


@needs_fedorenko
def test_registry_builtins():
    assert get_stimuli("language", path=str(FEDORENKO)).name == "language"
    assert get_stimuli("md", seed=5).texts == make_md_localizer(seed=5).texts
    assert get_stimuli("tom").content_hash() == load_tom_localizer().content_hash()
    swapped = get_stimuli("language", path=str(FEDORENKO), contrast=("nonwords", "sentences"))
    assert swapped.contrast == ("nonwords", "sentences")


def test_registry_files_and_errors(tmp_path):
    path = write(tmp_path / "mine.csv", GOOD + "e,z\n")
    assert get_stimuli(str(path), contrast=("y", "x")).conditions[-1] == "z"
    with pytest.raises(NeurolocError, match=r"'langauge'.*language, md, tom"):
        get_stimuli("langauge")
    with pytest.raises(NeurolocError, match=r"conditions belief, photo"):
        get_stimuli("tom", contrast=("belief", "desire"))
    with pytest.raises(NeurolocError, match="path"):
        get_stimuli("md", path=str(path))


def test_parse_contrast():
    assert parse_contrast("sentences:nonwords") == ("sentences", "nonwords")
    assert parse_contrast(" hard : easy ") == ("hard", "easy")
    for bad in ("sentences", "a:", ":b", "a:a", "a:b:c"):
        with pytest.raises(NeurolocError, match="TARGET:CONTROL"):
            parse_contrast(bad)
