"""Texts that share a beginning are run once up to where they part: prefix trees packed into rows.

Under hooks that edit every token from that token's activation alone (`HookState.position_wise`), a
token's activations depend only on the tokens before it, so texts with a common beginning — BLiMP's
minimal pairs, SyntaxGym's conditions of one item, one prompt with several answers, the BOS token of
every text — need it computed once. The token sequences are merged into a trie; the trie is cut into
subtrees (a dynamic programme minimising the tokens run), each laid out as the path leading to it, then
its tokens in depth-first order; subtrees are packed into rows of the width that pads least. A plan
covers one batch of texts (the scorer batches texts in token order, so texts that share a beginning
meet in one batch). A token's position is its depth, and the attention mask lets it see
only its ancestors (within the window, on sliding-window layers), so every text reads exactly the
context it would read alone. Each text is a path through one row: the logits at a token's parent
score it.

The mask is handed to the model as a prepared 4D mask (transformers passes those through unchanged), or
as a {"full_attention", "sliding_attention"} pair for models that mix both kinds of layers; models whose
attention takes no such mask (flash attention, recurrent layers) are not packed (`packing_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["PackedRow", "PrefixPlan", "attention_mask_for", "packing_problem", "plan_prefixes"]


@dataclass(frozen=True)
class PackedRow:
    """Tokens of one packed row (one or more trees, each in depth-first order); `parents[c]` is the
    column of token c's predecessor in its texts (−1 for a tree's first token); `positions[c]` its
    position in them."""

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    positions: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class PrefixPlan:
    """Rows covering every sequence; `paths[i]` = (row, columns of sequence i's tokens in that row)."""

    rows: list[PackedRow]
    paths: list[tuple[int, np.ndarray]]

    @property
    def n_tokens(self) -> int:
        """Tokens the rows hold (each shared prefix once)."""
        return sum(len(row) for row in self.rows)

    @property
    def padded(self) -> int:
        """Tokens one batch of these rows runs, padding included."""
        return len(self.rows) * max(len(row) for row in self.rows)


class _Trie:
    """Nodes in creation order (a parent before its children); node 0 is the empty root."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.token, self.parent, self.depth = [-1], [-1], [0]
        self.children: list[dict[int, int]] = [{}]
        self.ends: dict[int, list[int]] = {}
        self.end_of: list[int] = []
        for i, sequence in enumerate(sequences):
            node = 0
            for token in sequence:
                child = self.children[node].get(token)
                if child is None:
                    child = len(self.token)
                    self.children[node][token] = child
                    self.token.append(token)
                    self.parent.append(node)
                    self.depth.append(self.depth[node] + 1)
                    self.children.append({})
                node = child
            self.ends.setdefault(node, []).append(i)
            self.end_of.append(node)

    def below(self) -> list[int]:
        """Nodes strictly below each node."""
        below = [0] * len(self.token)
        for node in range(len(self.token) - 1, 0, -1):
            below[self.parent[node]] += below[node] + 1
        return below


def plan_prefixes(sequences: Sequence[Sequence[int]], width: int) -> PrefixPlan:
    """Cut the trie of `sequences` (one batch of texts) into subtrees of at most `width` tokens (at
    least the longest sequence), running as few tokens as possible — a subtree rooted at node v costs
    depth(v) + the nodes below v — and pack the subtrees into rows (first fit, longest first) of the
    width up to `width` that pads least; trees in one row never see each other."""
    longest = max((len(s) for s in sequences), default=0)
    width = max(width, longest)
    trie = _Trie(sequences)
    below = trie.below()
    n = len(trie.token)
    cost = [0] * n
    whole = [False] * n
    for node in range(n - 1, -1, -1):  # children before parents
        split = sum(cost[c] for c in trie.children[node].values()) + (trie.depth[node] if node in trie.ends else 0)
        own = trie.depth[node] + below[node]
        whole[node] = own <= width and own <= split
        cost[node] = own if whole[node] else split
    trees: list[tuple[PackedRow, dict[int, np.ndarray]]] = []
    stack = [0]
    while stack:
        node = stack.pop()
        if whole[node]:
            trees.append(_tree(trie, node, True))
            continue
        if node in trie.ends:
            trees.append(_tree(trie, node, False))
        stack.extend(reversed(list(trie.children[node].values())))
    low = max(len(tree) for tree, _ in trees)
    high = max(low, min(width, sum(len(tree) for tree, _ in trees)))  # wider rows than all trees change nothing
    widths = np.unique(np.linspace(low, high, min(high - low + 1, 64)).astype(int))
    return min((_pack(trees, int(w), len(sequences)) for w in widths), key=lambda plan: plan.padded)


def _tree(trie: _Trie, root: int, subtree: bool) -> tuple[PackedRow, dict[int, np.ndarray]]:
    """The path to `root`, then (with `subtree`) every node below it depth first; and the columns of
    the sequences ending in it."""
    chain = []
    node = root
    while node:
        chain.append(node)
        node = trie.parent[node]
    order = chain[::-1]
    if subtree:
        stack = list(reversed(list(trie.children[root].values())))
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(reversed(list(trie.children[node].values())))
    column = {node: c for c, node in enumerate(order)}
    tree = PackedRow(tuple(trie.token[v] for v in order), tuple(column.get(trie.parent[v], -1) for v in order),
                     tuple(trie.depth[v] - 1 for v in order))
    paths = {}
    for node in order if subtree else [root]:
        for i in trie.ends.get(node, ()):
            columns = []
            v = node
            while v:
                columns.append(column[v])
                v = trie.parent[v]
            paths[i] = np.asarray(columns[::-1], dtype=np.int64)
    return tree, paths


def _pack(trees: list[tuple[PackedRow, dict[int, np.ndarray]]], width: int, n_sequences: int) -> PrefixPlan:
    """Trees into rows of at most `width` tokens: longest first, each into the fullest row it fits."""
    order = sorted(range(len(trees)), key=lambda t: -len(trees[t][0]))
    rows: list[list[int]] = []
    space: list[list[int]] = [[] for _ in range(width + 1)]  # rows by tokens still free
    for t in order:
        size = len(trees[t][0])
        free = next((s for s in range(size, width + 1) if space[s]), None)
        if free is None:
            rows.append([t])
            row, free = len(rows) - 1, width
        else:
            row = space[free].pop()
            rows[row].append(t)
        space[free - size].append(row)
    packed: list[PackedRow] = []
    paths: list[tuple[int, np.ndarray] | None] = [None] * n_sequences
    for members in rows:
        tokens, parents, positions = [], [], []
        for t in members:
            tree, tree_paths = trees[t]
            offset = len(tokens)
            tokens += tree.tokens
            parents += [p + offset if p >= 0 else -1 for p in tree.parents]
            positions += tree.positions
            for i, columns in tree_paths.items():
                paths[i] = (len(packed), columns + offset)
        packed.append(PackedRow(tuple(tokens), tuple(parents), tuple(positions)))
    return PrefixPlan(packed, paths)


# ------------------------------------------------------------------------------------- attention masks
def _text_config(model: torch.nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def packing_problem(model: torch.nn.Module) -> str | None:
    """Why `model` cannot take packed rows (None when it can): its attention must accept a prepared 4D
    mask (eager or sdpa), and its layers must be full or sliding-window attention."""
    config = _text_config(model)
    implementation = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    if implementation not in ("eager", "sdpa"):
        return f"attention implementation {implementation!r} takes no prepared mask"
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - {"full_attention", "sliding_attention"}:
        return f"layer types {sorted(kinds)} are not all attention"
    return None


def attention_mask_for(model: torch.nn.Module, allowed: torch.Tensor, positions: torch.Tensor,
                       dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The `attention_mask` argument for packed rows: `allowed` (batch, query, key) is True where a
    token may attend (its ancestors and itself); sliding-window layers also need the key within the
    window of the query's position (`positions`, (batch, tokens))."""
    config = _text_config(model)
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or ())

    def additive(mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(dtype).min)[:, None]

    if not window:
        return additive(allowed)
    distance = positions[:, :, None] - positions[:, None, :]
    windowed = allowed & (distance < window)
    if "sliding_attention" in kinds and "full_attention" in kinds:
        return {"full_attention": additive(allowed), "sliding_attention": additive(windowed)}
    if kinds == {"full_attention"}:
        return additive(allowed)
    return additive(windowed)  # every layer slides (Mistral-style configs, or only sliding layer types)


def ancestor_mask(parents: Sequence[int], width: int) -> np.ndarray:
    """(width, width) bool: token q may attend to k when k is q itself or one of its ancestors; a padding
    column attends to itself only, so no row of the mask is empty."""
    allowed = np.zeros((width, width), dtype=bool)
    for q, p in enumerate(parents):
        if p >= 0:
            allowed[q] = allowed[p]
        allowed[q, q] = True
    allowed[np.arange(len(parents), width), np.arange(len(parents), width)] = True
    return allowed
