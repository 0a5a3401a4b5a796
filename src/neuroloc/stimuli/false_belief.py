"""False-belief stories in the style of ToMi / BigToM, with matched true-belief stories, from a seed.

Each story frame puts an object in one container (A) while two agents watch, then one agent (X) is
either away (false belief) or watching (true belief) while the other (Y) moves it to the other
container (B); the two stories differ only in that sentence. Four questions, one condition each:

* `false_belief`: in the false-belief story, where X will look (first order: A), or where Y thinks X
  will look (second order: X saw the move through a window unnoticed by Y, so Y thinks X believes A);
* `true_belief`: the same question in the matched true-belief story (X saw, or Y saw X see: B);
* `reality`: where the object is now (B); `memory`: where it was at the beginning (A) — asked of one
  story of each frame, alternating, so a model that does not track the move shows it here.

`difficulty` is the belief's order ("first_order", "second_order"). The moved-to container B is always
the last location mentioned, so a model that names the last-mentioned location scores high on
true-belief and reality questions and low on false-belief and memory ones — the documented failure
of language models on these tasks, which the benchmark reports (`last_location_rate`).

Balance, per order: the answer's position among the two choices (crossed with which story the
reality question is asked of), the containers (every container is the answer of a belief question
exactly as often as it is the foil, since a frame's false- and true-belief answers are its A and B),
which container the scene introduces first, agents, objects and rooms (each used as evenly as the
number of stories allows). Each order draws from its own random stream seeded by (seed, order).
"""

from __future__ import annotations

import random
from dataclasses import replace

from neuroloc.errors import NeurolocError
from neuroloc.stimuli.choice_items import ChoiceItem, ChoiceSet, balanced_levels

__all__ = ["CONDITIONS", "ORDERS", "make_false_belief_items"]

GENERATOR_VERSION = 1
CONDITIONS = ("false_belief", "true_belief", "reality", "memory")
ORDERS = ("first_order", "second_order")
NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack", "Lily", "Noah")
OBJECTS = ("apple", "ball", "book", "key", "hat", "scarf", "coin", "pen", "ring", "cup", "banana", "glove")
ROOMS = ("kitchen", "garden", "hall", "bedroom", "office", "garage", "classroom", "attic")
CONTAINERS = ("box", "basket", "drawer", "cupboard", "suitcase", "bag", "bucket", "crate", "chest", "backpack")

TEMPLATES = {
    "scene": "{X} and {Y} are in the {room}. There is a {first} and a {second} in the {room}. "
             "{X} puts the {object} in the {A}.",
    "first_order/false_belief": "{X} leaves the {room}. While {X} is away, {Y} moves the {object} to the {B}.",
    "first_order/true_belief": "{X} stays in the {room}. While {X} is watching, {Y} moves the {object} to the {B}.",
    "second_order/false_belief": "{X} leaves the {room}. While {X} is away, {Y} moves the {object} to the {B}. "
                                 "{X} watches through the window, but {Y} does not see {X}.",
    "second_order/true_belief": "{X} leaves the {room}. While {X} is away, {Y} moves the {object} to the {B}. "
                                "{X} watches through the window, and {Y} sees {X}.",
    "first_order/belief_question": "Where will {X} look for the {object}?",
    "second_order/belief_question": "Where does {Y} think {X} will look for the {object}?",
    "reality_question": "Where is the {object} now?",
    "memory_question": "Where was the {object} at the beginning?",
    "choice": "the {container}",
}


def make_false_belief_items(*, seed: int, per_cell: int, orders: tuple[str, ...] = ORDERS,
                            shots: int = 0) -> ChoiceSet:
    """`per_cell` story frames per belief order, each giving one item of every condition (so every
    (condition, order) cell has `per_cell` items), the same for the same seed. With `shots`, every item
    of an order is preceded by the same `shots` solved examples of that order: stories of their own
    (never one of the items'), the conditions in turn (false belief, true belief, reality, memory), in
    a shuffled order — so the examples never tell which condition is asked."""
    unknown = [o for o in orders if o not in ORDERS]
    if unknown or not orders:
        raise NeurolocError(f"unknown belief orders {unknown or list(orders)}; choose from {', '.join(ORDERS)}")
    if per_cell < 1 or shots < 0:
        raise NeurolocError(f"per_cell must be a positive number of stories per order and shots a number ≥ 0, "
                            f"got {per_cell} and {shots}")
    items: list[ChoiceItem] = []
    for order in orders:
        asked = _frames(random.Random(f"{seed}:false_belief:{order}"), order, per_cell)
        if shots:
            rng = random.Random(f"{seed}:false_belief:{order}:examples")
            stories = {i.context for i in asked}
            pool = _frames(rng, order, per_cell + shots)
            frames = [pool[i:i + len(CONDITIONS)] for i in range(0, len(pool), len(CONDITIONS))]
            fresh = [f for f in frames if not stories & {i.context for i in f}][:shots]
            examples = [frame[j % len(CONDITIONS)] for j, frame in enumerate(fresh)]
            rng.shuffle(examples)
            asked = [replace(i, examples=tuple(examples)) for i in asked]
        items.extend(asked)
    metadata = {"generator": "neuroloc.stimuli.false_belief", "version": GENERATOR_VERSION, "seed": seed,
                "per_cell": per_cell, "shots": shots, "orders": list(orders), "conditions": list(CONDITIONS),
                "templates": TEMPLATES, "lexicon": {"names": len(NAMES), "objects": len(OBJECTS),
                                                    "rooms": len(ROOMS), "containers": len(CONTAINERS)}}
    return ChoiceSet("false_belief", tuple(items), f"generated:false_belief(seed={seed})", metadata)


def _frames(rng: random.Random, order: str, n: int) -> list[ChoiceItem]:
    """`n` frames of one order: for each, the false- and true-belief items and one reality and one
    memory item (on the false-belief story in half the frames, the true-belief one in the other)."""
    columns = {"x": balanced_levels(rng, n, len(NAMES)), "y": balanced_levels(rng, n, len(NAMES) - 1),
               "a": balanced_levels(rng, n, len(CONTAINERS)), "b": balanced_levels(rng, n, len(CONTAINERS) - 1),
               "room": balanced_levels(rng, n, len(ROOMS)), "object": balanced_levels(rng, n, len(OBJECTS)),
               "a_first": balanced_levels(rng, n, 2), "layout": balanced_levels(rng, n, 4)}
    items: list[ChoiceItem] = []
    for i in range(n):
        x, y = _pair(NAMES, columns["x"][i], columns["y"][i])
        a, b = _pair(CONTAINERS, columns["a"][i], columns["b"][i])
        first, second = (a, b) if columns["a_first"][i] else (b, a)
        a_position, reality_on_false = columns["layout"][i] % 2, columns["layout"][i] // 2
        slots = {"X": x, "Y": y, "room": ROOMS[columns["room"][i]], "object": OBJECTS[columns["object"][i]],
                 "A": a, "B": b, "first": first, "second": second}
        choice_a, choice_b = (TEMPLATES["choice"].format(container=c) for c in (a, b))
        choices = (choice_a, choice_b) if a_position == 0 else (choice_b, choice_a)
        scene = TEMPLATES["scene"].format(**slots)
        stories = {belief: scene + " " + TEMPLATES[f"{order}/{belief}"].format(**slots)
                   for belief in ("false_belief", "true_belief")}
        belief_question = TEMPLATES[f"{order}/belief_question"].format(**slots)
        reality_story, memory_story = (("false_belief", "true_belief") if reality_on_false
                                       else ("true_belief", "false_belief"))
        items += [
            ChoiceItem(stories["false_belief"], belief_question, choices, choice_a, "false_belief", order),
            ChoiceItem(stories["true_belief"], belief_question, choices, choice_b, "true_belief", order),
            ChoiceItem(stories[reality_story], TEMPLATES["reality_question"].format(**slots), choices, choice_b,
                       "reality", order),
            ChoiceItem(stories[memory_story], TEMPLATES["memory_question"].format(**slots), choices, choice_a,
                       "memory", order),
        ]
    return items


def _pair(words: tuple[str, ...], first: int, offset: int) -> tuple[str, str]:
    """Two different words: the `first`-th and the one `offset` + 1 places after it (cyclically), so
    balanced `first` and `offset` draws use every word as evenly in both roles."""
    return words[first], words[(first + 1 + offset) % len(words)]
