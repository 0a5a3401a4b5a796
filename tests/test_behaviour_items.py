"""Behavioural item generators and the item-file reader (no model): every answer checked by an
independent solver, determinism by seed, balance of positions / answers / locations / names."""

from __future__ import annotations

import json
import operator
import re
from collections import Counter

import numpy as np
import pytest

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.choice_items import (ChoiceItem, balanced_levels, last_mentioned, load_choice_items,
                                           render_prompt)
from neuroloc.stimuli.false_belief import CONTAINERS, NAMES, ORDERS, make_false_belief_items
from neuroloc.stimuli.reasoning_items import ITEM_TYPES, LEVELS, make_reasoning_items, number_words

PER_CELL = 40


@pytest.fixture(scope="module")
def reasoning():
    return make_reasoning_items(seed=3, per_cell=PER_CELL)


@pytest.fixture(scope="module")
def stories():
    return make_false_belief_items(seed=3, per_cell=PER_CELL)


def _cells(items):
    out = {}
    for item in items:
        out.setdefault((item.condition, item.difficulty), []).append(item)
    return out


# --------------------------------------------------------------------------- determinism and sizes
def test_generators_are_deterministic_by_seed_and_record_their_make(reasoning, stories) -> None:
    assert make_reasoning_items(seed=3, per_cell=PER_CELL) == reasoning
    assert make_false_belief_items(seed=3, per_cell=PER_CELL) == stories
    assert make_reasoning_items(seed=4, per_cell=PER_CELL).items != reasoning.items
    assert make_false_belief_items(seed=4, per_cell=PER_CELL).items != stories.items
    for made, cells in ((reasoning, len(ITEM_TYPES) * len(LEVELS)), (stories, 4 * len(ORDERS))):
        record = json.loads(made.describe())
        assert record["seed"] == 3 and record["per_cell"] == PER_CELL and record["templates"]
        assert set(record["sizes"].values()) == {PER_CELL} and len(record["sizes"]) == cells
        assert record["items_sha256"] == made.content_hash()
    # one cell's stream never depends on the others: a single type reproduces its cells exactly
    alone = make_reasoning_items(seed=3, per_cell=PER_CELL, types=["syllogism"])
    assert alone.items == tuple(i for i in reasoning.items if i.condition == "syllogism")


def test_items_are_distinct_within_every_reasoning_cell(reasoning) -> None:
    for items in _cells(reasoning.items).values():
        assert len({(i.context, i.question) for i in items}) == len(items)


# ------------------------------------------------------------------------- answers, solved anew
def test_number_words_agree_with_word2number() -> None:
    w2n = pytest.importorskip("word2number.w2n")
    for n in range(1000):
        assert w2n.word_to_num(number_words(n)) == n


def test_arithmetic_answers_and_foils(reasoning) -> None:
    w2n = pytest.importorskip("word2number.w2n")
    ops = {"+": operator.add, "-": operator.sub, "plus": operator.add, "minus": operator.sub}
    ranges = {"1": (1, 19), "2": (20, 99), "3": (100, 199)}  # the MD localizer's easy / hard operands at 1 / 3
    for (kind, level), items in _cells(reasoning.items).items():
        if not kind.startswith("arithmetic"):
            continue
        operations = Counter()
        for item in items:
            if kind == "arithmetic_digits":
                a, op, b = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", item.question).groups()
                a, b, value = int(a), int(b), int
            else:
                a, op, b = re.fullmatch(r"What is (.+) (plus|minus) (.+)\?", item.question).groups()
                a, b, value = w2n.word_to_num(a), w2n.word_to_num(b), w2n.word_to_num
            operations[ops[op]] += 1
            low, high = ranges[level]
            assert low <= a <= high and low <= b <= high
            assert value(item.answer) == ops[op](a, b) >= 0
            numbers = [value(c) for c in item.choices]
            assert len(set(numbers)) == 4 and min(numbers) >= 0
        assert operations == {operator.add: PER_CELL // 2, operator.sub: PER_CELL // 2}


def _solve_syllogism(context: str, question: str) -> str:
    """Set semantics: follow 'All X are Y' from the individual's category; a 'No X are Z' reached
    on the way with Z the asked category makes the answer no."""
    subsets, disjoint = {}, set()
    for x, y in re.findall(r"All (\w+)s are (\w+)s\.", context.replace("daxes", "daxs")):
        subsets[x] = y
    for x, y in re.findall(r"No (\w+)s are (\w+)s\.", context.replace("daxes", "daxs")):
        disjoint.add((x, y))
    name, category = re.search(r"(\w+) is a (\w+)\.", context).groups()
    target = re.fullmatch(rf"Is {name} a (\w+)\?", question).group(1)
    reached = [category]
    while reached[-1] in subsets:
        reached.append(subsets[reached[-1]])
    if target in reached:
        return "yes"
    assert any((c, target) in disjoint for c in reached), "the premises must decide the question"
    return "no"


def test_syllogisms_are_valid_and_balanced(reasoning) -> None:
    for (kind, level), items in _cells(reasoning.items).items():
        if kind != "syllogism":
            continue
        for item in items:
            assert item.answer == _solve_syllogism(item.context, item.question)
            assert item.context.count(" are ") == int(level)  # difficulty = number of premises
        assert Counter(i.answer for i in items) == {"yes": PER_CELL // 2, "no": PER_CELL // 2}
        assert Counter((i.answer, i.answer_index) for i in items) == {
            (a, p): PER_CELL // 4 for a in ("yes", "no") for p in (0, 1)}


def test_sequences_continue_the_lowest_degree_polynomial(reasoning) -> None:
    for (kind, level), items in _cells(reasoning.items).items():
        if kind != "sequence":
            continue
        for item in items:
            terms = [int(t) for t in re.search(r"sequence (.+)\?", item.question).group(1).split(", ")]
            x = np.arange(len(terms))
            degree = 2 if level == "3" else 1
            fit = np.polyfit(x, terms, degree)
            assert np.allclose(np.polyval(fit, x), terms)
            assert int(round(np.polyval(fit, len(terms)))) == int(item.answer)
            if level == "3":
                assert abs(fit[0]) > 1e-9  # really second order
        if level == "2":
            assert sum(int(i.answer) < int(i.question.split(", ")[-1].rstrip("?")) for i in items) == PER_CELL // 2


def test_answer_positions_and_ranks_are_balanced(reasoning) -> None:
    for (kind, level), items in _cells(reasoning.items).items():
        positions = Counter(i.answer_index for i in items)
        assert max(positions.values()) - min(positions.values()) <= 1 and len(positions) == len(items[0].choices)
        if kind in ("arithmetic_digits", "sequence"):  # "pick the smallest / middle / largest" is at chance
            ranks = Counter(sorted(map(int, i.choices)).index(int(i.answer)) for i in items)
            assert all(0.15 <= ranks[r] / len(items) <= 0.35 for r in range(4)), (kind, level, ranks)


# ------------------------------------------------------------------------------- false belief
def test_false_belief_design(stories) -> None:
    cells = _cells(stories.items)
    assert set(cells) == {(c, o) for c in ("false_belief", "true_belief", "reality", "memory") for o in ORDERS}
    for order in ORDERS:
        frames = [stories.items[i:i + 4] for i in range(0, len(stories.items), 4)
                  if stories.items[i].difficulty == order]
        assert len(frames) == PER_CELL
        agents = Counter()
        for false, true, reality, memory in frames:
            # matched stories: the same scene, one differing sentence; the moved-to location is mentioned last
            scene = false.context[:false.context.index(" leaves the ")]
            assert true.context.startswith(scene.rsplit(".", 1)[0])
            assert false.question == true.question and false.choices == true.choices
            a, b = false.answer, true.answer
            assert a != b and reality.answer == b and memory.answer == a
            for item in (false, true, reality, memory):
                assert item.choices[last_mentioned(item.context, item.choices)] == b
            assert {reality.context, memory.context} == {false.context, true.context}
            assert re.search(rf"puts the \w+ in {a}\.", false.context) and f"to {b}." in false.context
            agents[false.context.split()[0]] += 1
            if order == "second_order":
                assert "does not see" in false.context and "does not see" not in true.context
                assert false.question.startswith("Where does ")
        assert max(agents.values()) - min(agents.values()) <= 1 and set(agents) <= set(NAMES)
        # reality questions are asked of the false-belief story in half the frames
        assert sum(r.context == f.context for f, _, r, _ in frames) == PER_CELL // 2
    for (condition, order), items in cells.items():
        assert Counter(i.answer_index for i in items) == {0: PER_CELL // 2, 1: PER_CELL // 2}
    for order in ORDERS:  # a container is a belief answer exactly as often as it is the foil
        beliefs = [i for i in stories.items if i.difficulty == order and i.condition.endswith("_belief")]
        answers = Counter(i.answer for i in beliefs)
        foils = Counter(c for i in beliefs for c in i.choices if c != i.answer)
        assert answers == foils and set(answers) <= {f"the {c}" for c in CONTAINERS}
        originals = Counter(i.answer for i in beliefs if i.condition == "false_belief")
        assert max(originals.values()) - min(originals.values()) <= 1


def test_balanced_levels() -> None:
    import random
    for n, levels in ((10, 4), (24, 24), (25, 2), (3, 12)):
        values = balanced_levels(random.Random(0), n, levels)
        counts = [values.count(v) for v in range(levels)]
        assert len(values) == n and max(counts) - min(counts) <= 1
    assert len({tuple(balanced_levels(random.Random(s), 3, 12)) for s in range(20)}) > 5  # a random subset


def test_worked_examples_leave_the_items_alone_and_never_repeat_one() -> None:
    from dataclasses import replace
    plain = make_reasoning_items(seed=2, per_cell=8)
    shot = make_reasoning_items(seed=2, per_cell=8, shots=3)
    assert tuple(replace(i, examples=()) for i in shot.items) == plain.items
    assert shot.content_hash() != plain.content_hash() and json.loads(shot.describe())["shots"] == 3
    for (kind, level), items in _cells(shot.items).items():
        examples = items[0].examples
        assert len(examples) == 3 and all(i.examples == examples for i in items)
        assert all((e.condition, e.difficulty) == (kind, level) and not e.examples for e in examples)
        assert not {(e.context, e.question) for e in examples} & {(i.context, i.question) for i in items}
        assert len({e.answer_index for e in examples}) > 1
        if kind == "syllogism":
            assert {e.answer for e in examples} == {"yes", "no"}
    stories = make_false_belief_items(seed=2, per_cell=8, shots=4)
    assert tuple(replace(i, examples=()) for i in stories.items) == make_false_belief_items(seed=2, per_cell=8).items
    for order in ORDERS:
        items = [i for i in stories.items if i.difficulty == order]
        examples = items[0].examples
        assert all(i.examples == examples for i in items) and all(e.difficulty == order for e in examples)
        assert sorted(e.condition for e in examples) == sorted(("false_belief", "true_belief", "reality", "memory"))
        assert not {e.context for e in examples} & {i.context for i in items}


# ---------------------------------------------------------------------------- prompts, reader
def test_render_prompt_and_last_mentioned() -> None:
    item = ChoiceItem("Ann puts the ball in the box.", "Where is the ball?", ("the box", "the bag"), "the box", "x")
    assert render_prompt(item, list_choices=False) == ("Ann puts the ball in the box.\nQuestion: Where is the ball?"
                                                       "\nAnswer:")
    assert render_prompt(item, list_choices=True).endswith("Options: the box; the bag\nAnswer:")
    bare = ChoiceItem("", "What is 2 + 2?", ("4", "5"), "4", "x")
    assert render_prompt(bare, list_choices=False) == "Question: What is 2 + 2?\nAnswer:"
    shown = ChoiceItem("", "What is 3 + 3?", ("6", "7"), "6", "x", examples=(bare, item))
    assert render_prompt(shown, list_choices=True) == (
        "Question: What is 2 + 2?\nOptions: 4; 5\nAnswer: 4\n\n"
        "Ann puts the ball in the box.\nQuestion: Where is the ball?\nOptions: the box; the bag\nAnswer: the box\n\n"
        "Question: What is 3 + 3?\nOptions: 6; 7\nAnswer:")
    assert last_mentioned("A box and a bag. Then the Box again.", ("the box", "the bag")) == 0
    assert last_mentioned("The boxes and a bag.", ("the box", "the bag")) == 1  # whole words only
    assert last_mentioned("nothing here", ("the box", "the bag")) is None
    with pytest.raises(NeurolocError, match="not among the choices"):
        ChoiceItem("", "q?", ("a", "b"), "c", "x")


def test_reader_takes_jsonl_and_csv(tmp_path) -> None:
    rows = [{"context": "Sam has 3 apples.", "question": "How many?", "choices": ["3", "4"], "answer": "3",
             "condition": "count", "difficulty": 1},
            {"question": "Is it?", "choices": ["yes", "no"], "answer": "no"}]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    items = load_choice_items(jsonl)
    assert items.items[0] == ChoiceItem("Sam has 3 apples.", "How many?", ("3", "4"), "3", "count", "1")
    assert items.items[1] == ChoiceItem("", "Is it?", ("yes", "no"), "no", "mine", None)
    assert json.loads(items.describe())["sha256"]["mine.jsonl"]
    csv = tmp_path / "mine.csv"
    csv.write_text('context,question,choices,answer,condition,difficulty\n'
                   '"Sam has 3 apples.",How many?,3|4,3,count,1\n'
                   ',Is it?,"[""yes"", ""no""]",no,,\n', encoding="utf-8")
    assert load_choice_items(csv).items == items.items
    bad = tmp_path / "bad.csv"
    bad.write_text("question,choices,answer\nQ?,a|b,c\n", encoding="utf-8")
    with pytest.raises(NeurolocError, match=r"bad.csv: line 2: the answer 'c' is not one of the choices"):
        load_choice_items(bad)
    (tmp_path / "none.csv").write_text("question,answer\nQ?,a\n", encoding="utf-8")
    with pytest.raises(NeurolocError, match="no column 'choices'"):
        load_choice_items(tmp_path / "none.csv")
    (tmp_path / "one.csv").write_text("question,choices,answer\nQ?,a,a\n", encoding="utf-8")
    with pytest.raises(NeurolocError, match="line 2: choices must be a list of at least two"):
        load_choice_items(tmp_path / "one.csv")


def test_limit_keeps_the_first_items_of_every_cell(stories) -> None:
    seen = Counter()
    expected = []
    for item in stories.items:
        seen[(item.condition, item.difficulty)] += 1
        if seen[(item.condition, item.difficulty)] <= 3:
            expected.append(item)
    assert stories.limit(3).items == tuple(expected)
    assert stories.limit(None) is stories
