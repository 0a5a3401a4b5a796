"""Per-token log-probabilities of texts under a causal LM: the one scorer every benchmark shares.

Every token of a text is scored by conditioning on a leading BOS token (the tokenizer's BOS, else its
EOS), as lm-evaluation-harness does for an empty context. Texts are sorted by length so that a batch
pads little, padded on the right with an explicit attention mask, and the original order restored:
padding never changes an answer beyond float noise.

Work a pass cannot change is not repeated (`score_sequences`, under every benchmark):

- shared prefixes: when every hook on the model edits each token from that token alone, at every
  position (`models.footprint.HookState.position_wise`: the intact model, neuroloc's lesions), texts
  with a common beginning run it once — their trie is packed into rows with a tree-shaped attention
  mask (`evaluate.prefix`); the first packed pass on a model is checked against the plain one;
- layers below the lesion: inside `evaluate.trunk_cache.trunk_cache` (a lesion study opens one), a pass
  starts from the stored residual stream under the lowest layer the active hooks edit.

A hook that declares nothing (a bare `register_forward_hook`, `hooks(edit=...)`) turns both off, and
`prefix_sharing(False)` turns packing off: every text then runs whole, one row each, as it always did.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..models.batching import MicroBatcher, is_out_of_memory
from ..models.footprint import HookState, hook_state
from ..models.hooks import batch_context, input_device
from ..record.recorder import takes_position_ids
from ..text.encoding import encode, pad_id
from .prefix import PrefixPlan, ancestor_mask, attention_mask_for, packing_problem, plan_prefixes
from .trunk_cache import TrunkCache, active_trunk_cache, batch_key

__all__ = ["SequenceScores", "TextScore", "prefix_sharing", "score_sequences", "token_logprobs"]

log = logging.getLogger(__name__)

MIN_SAVING = 0.05  # pack only when the rows run at least 5% fewer tokens than the texts one by one
_SHARING: contextvars.ContextVar[bool] = contextvars.ContextVar("neuroloc_prefix_sharing", default=True)
_PACKS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()  # checked models


@dataclass(frozen=True)
class TextScore:
    """One text's tokens, their log-probabilities (nats, float64) and (start, end) character offsets.

    `logprobs[i]` is ln p(token i | BOS, tokens before i); `offsets[i]` locates token i in `text`.
    """

    text: str
    token_ids: np.ndarray
    logprobs: np.ndarray
    offsets: np.ndarray

    @property
    def total(self) -> float:
        """Log-probability of the whole text (nats)."""
        return float(self.logprobs.sum())

    def __len__(self) -> int:
        return len(self.logprobs)


@dataclass(frozen=True)
class SequenceScores:
    """For tokens 1.. of one token sequence: ln p(token | the tokens before it) in nats (float64), and
    whether each token is the argmax of its position's logits (None unless asked for)."""

    logprobs: np.ndarray
    argmax: np.ndarray | None = None


@contextlib.contextmanager
def prefix_sharing(enabled: bool) -> Iterator[None]:
    """Allow (default) or forbid packing shared prefixes inside the block (e.g. to time both paths)."""
    token = _SHARING.set(enabled)
    try:
        yield
    finally:
        _SHARING.reset(token)


def token_logprobs(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int,
    bos: str,
    progress: Callable[[int], None] | None = None,
) -> list[TextScore]:
    """Score every token of every text, in the order given.

    `bos` is the BOS policy (`neuroloc.text.encoding`; a run's `RunSettings.bos`): when it prepends a BOS
    every token of the text is scored;
    special tokens are never scored, and without a leading BOS ("none") the first token only conditions
    the rest and is left out of the score.
    `progress(n_done)` is called after each batch with the number of texts scored so far. The model
    may carry hooks (lesions); it is only called, never changed. log p is computed as
    logit(target) - logsumexp(logits) in float32 on the scored positions, so a bfloat16 model
    never has a full-vocabulary log_softmax materialised.
    """
    texts = list(texts)
    if batch_size < 1:
        raise NeurolocError(f"batch_size must be at least 1, got {batch_size}")
    if not texts:
        return []
    encoded = encode(tokenizer, texts, bos=bos)
    sequences = encoded.input_ids
    # scored positions: every non-special token after the first (the first has no context)
    scored = [[j for j in range(1, len(row)) if not special[j]] for row, special in zip(sequences, encoded.special)]
    _check_length(model, sequences)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0])

    scores = score_sequences(model, sequences, batch_size=batch_size, pad=pad_id(tokenizer), argmax=False,
                             progress=advance)
    results = []
    for i, (text, score) in enumerate(zip(texts, scores)):
        keep = np.asarray(scored[i], dtype=np.int64)
        results.append(TextScore(
            text=text,
            token_ids=np.asarray(sequences[i], dtype=np.int64)[keep],
            logprobs=score.logprobs[keep - 1],
            offsets=np.asarray([encoded.offsets[i][j] for j in scored[i]], dtype=np.int64).reshape(-1, 2),
        ))
    return results


def score_sequences(model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, batch_size: int, pad: int,
                    argmax: bool, progress: Callable[[int], None] | None = None) -> list[SequenceScores]:
    """ln p of every token after the first of each token sequence (and whether it is the argmax, with
    `argmax`), in the order given; `pad` fills padded columns. `progress(n)` is told after each batch
    how many more sequences are done. Shared prefixes and stored trunks are reused as the module
    docstring says; the answer is the same either way (within float noise)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurolocError(f"batch_size must be an int >= 1, got {batch_size!r}")
    sequences = [list(map(int, s)) for s in sequences]
    out: list[SequenceScores | None] = [None] * len(sequences)
    empty = [i for i, s in enumerate(sequences) if len(s) < 2]
    for i in empty:
        out[i] = SequenceScores(np.zeros(0), np.zeros(0, dtype=bool) if argmax else None)
    if empty and progress is not None:
        progress(len(empty))
    live = [i for i, s in enumerate(sequences) if len(s) >= 2]
    if not live:
        return out
    state = hook_state(model)
    run = _Runner(model, pad, argmax, state)
    order = _packing(model, [sequences[i] for i in live], state, batch_size)
    scores = run.packed(order, [sequences[i] for i in live], batch_size, progress) if order is not None else None
    if scores is None:
        scores = run.plain([sequences[i] for i in live], batch_size, progress)
    for i, score in zip(live, scores):
        out[i] = score
    return out


def _packing(model: torch.nn.Module, sequences: list[list[int]], state: HookState,
             batch_size: int) -> list[int] | None:
    """The order in which to pack `sequences` in batches of `batch_size` (token order: texts sharing a
    beginning meet in one batch), when sharing is allowed, possible and saves at least `MIN_SAVING` of
    the tokens plain batches run; else None."""
    if not _SHARING.get() or not state.position_wise or _PACKS.get(model) is False:
        return None
    problem = packing_problem(model) or (None if takes_position_ids(model) else "its forward takes no position ids")
    if problem is not None:
        if model not in _PACKS:
            _PACKS[model] = False
            log.info("shared prefixes are not packed for this model: %s", problem)
        return None
    order = sorted(range(len(sequences)), key=lambda i: (sequences[i], i))
    packed = sum(_plan([sequences[i] for i in order[k:k + batch_size]]).padded
                 for k in range(0, len(order), batch_size))
    lengths = sorted((len(s) for s in sequences), reverse=True)
    plain = sum(lengths[k] * len(lengths[k:k + batch_size]) for k in range(0, len(lengths), batch_size))
    return order if packed <= (1 - MIN_SAVING) * plain else None


def _plan(sequences: list[list[int]]) -> PrefixPlan:
    """The packed rows of one batch: rows up to 3 times its longest text wide."""
    return plan_prefixes(sequences, 3 * max(len(s) for s in sequences))


class _Runner:
    """Forward passes of padded rows (plain texts or packed trees), through the trunk cache when one
    is open, and the log-probabilities of each row's tokens read off their parents' logits (the LM
    head runs only where a token is scored)."""

    def __init__(self, model: torch.nn.Module, pad: int, argmax: bool, state: HookState) -> None:
        self.model, self.pad, self.argmax = model, pad, argmax
        self.device = input_device(model)
        self.cache: TrunkCache | None = active_trunk_cache(model)
        self.intact = state.intact_layers(self.cache.lm.layout.n_layers) if self.cache is not None else 0
        self.positions = takes_position_ids(model)
        head = getattr(model, "get_output_embeddings", None)  # a wrapper may not have one: whole logits
        self.head = head() if callable(head) else None

    # -- plain: one text per row, right-padded -----------------------------------------------------
    def plain(self, sequences: list[list[int]], batch_size: int,
              progress: Callable[[int], None] | None) -> list[SequenceScores]:
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # longest first: OOM shows early
        out: list[SequenceScores | None] = [None] * len(sequences)
        batcher = MicroBatcher(batch_size, what="scoring batch")  # halves the batch on out-of-memory
        with torch.inference_mode():
            for rows, (lp, hit) in batcher.map(order, lambda rows: self._plain_batch([sequences[i] for i in rows], rows)):
                for b, i in enumerate(rows):
                    n = len(sequences[i])
                    out[i] = SequenceScores(lp[b, 1:n], None if hit is None else hit[b, 1:n])
                if progress is not None:
                    progress(len(rows))
        return out

    def _plain_batch(self, sequences: list[list[int]], example_ids: Sequence[int], whole: bool = False):
        """One right-padded forward pass (`whole`: every layer, never through the trunk cache)."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad, dtype=torch.long)
        real = torch.zeros((len(sequences), width), dtype=torch.long)
        parents = torch.full((len(sequences), width), -1, dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            real[row, :len(seq)] = 1
            parents[row, 1:len(seq)] = torch.arange(len(seq) - 1)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": real.to(self.device), "use_cache": False}
        positions = None
        if self.positions:
            positions = (real.cumsum(-1) - 1).clamp(min=0)
            inputs["position_ids"] = positions.to(self.device)
        return self._scores(inputs, example_ids, ids, real, positions, parents, None if whole else (ids, real))

    # -- packed: prefix trees, several per row -----------------------------------------------------
    def packed(self, order: list[int], sequences: list[list[int]], batch_size: int,
               progress: Callable[[int], None] | None) -> list[SequenceScores] | None:
        """Scores from packed batches of `batch_size` texts taken in `order`, or None when this model
        fails its first packed pass (then it is never packed again and the caller runs the plain path)."""
        out: list[SequenceScores | None] = [None] * len(sequences)
        batcher = MicroBatcher(batch_size, what="scoring batch")  # halves the batch on out-of-memory

        def forward(chunk: Sequence[int]):
            plan = _plan([sequences[i] for i in chunk])
            return plan, self._packed_batch(plan.rows)

        try:
            with torch.inference_mode():
                for chunk, (plan, (lp, hit)) in batcher.map(order, forward):
                    scores = [SequenceScores(lp[row, columns[1:]], None if hit is None else hit[row, columns[1:]])
                              for row, columns in plan.paths]
                    if _PACKS.get(self.model) is None and not self._check([sequences[i] for i in chunk], scores):
                        return None
                    for i, score in zip(chunk, scores):
                        out[i] = score
                    if progress is not None:
                        progress(len(chunk))
        except Exception as error:  # noqa: BLE001 - a model that cannot take packed rows falls back, once
            if is_out_of_memory(error) or isinstance(error, NeurolocError) or _PACKS.get(self.model) is not None:
                raise
            _PACKS[self.model] = False
            log.warning("shared prefixes are not packed for this model: its first packed pass failed (%s: %s)",
                        type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
            return None
        return out

    def _packed_batch(self, rows):
        """One packed forward pass; its rows hold several texts each, so they declare no example ids."""
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        real = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        parents = torch.full((len(rows), width), -1, dtype=torch.long)
        allowed = np.zeros((len(rows), width, width), dtype=bool)
        for b, row in enumerate(rows):
            n = len(row)
            ids[b, :n] = torch.tensor(row.tokens, dtype=torch.long)
            real[b, :n] = 1
            positions[b, :n] = torch.tensor(row.positions, dtype=torch.long)
            parents[b, :n] = torch.tensor(row.parents, dtype=torch.long)
            allowed[b] = ancestor_mask(row.parents, width)
        dtype = self.model.get_input_embeddings().weight.dtype
        mask = attention_mask_for(self.model, torch.from_numpy(allowed).to(self.device), positions.to(self.device),
                                  dtype if dtype.is_floating_point else torch.float32)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask, "position_ids": positions.to(self.device),
                  "use_cache": False}
        return self._scores(inputs, None, ids, real, positions, parents, (ids, positions, parents))

    def _check(self, sequences: list[list[int]], packed: list[SequenceScores]) -> bool:
        """The first packed batch on a model, against the plain path for up to 8 of its texts: True when
        they agree to float noise (the model is then trusted)."""
        chosen = list(range(min(8, len(sequences))))
        lp, _ = self._plain_batch([sequences[i] for i in chosen], chosen, whole=True)
        difference = np.abs(np.concatenate([packed[i].logprobs for i in chosen]) -
                            np.concatenate([lp[b, 1:len(sequences[i])] for b, i in enumerate(chosen)]))
        dtype = self.model.get_input_embeddings().weight.dtype
        agree = difference.max() <= 1e-3 if dtype in (torch.float32, torch.float64) else difference.mean() <= 5e-2
        _PACKS[self.model] = bool(agree)
        if not agree:
            log.warning("shared prefixes are not packed for this model: packed rows changed log-probabilities by "
                        "up to %.2g nats on its first batch; every text runs whole", float(difference.max()))
        return bool(agree)

    # -- shared ----------------------------------------------------------------------------------------
    def _scores(self, inputs: dict, example_ids: Sequence[int] | None, ids: torch.Tensor, real: torch.Tensor,
                positions: torch.Tensor | None, parents: torch.Tensor,
                key_parts: tuple[torch.Tensor, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(batch, tokens) arrays: ln p of each token from its parent's logits (NaN where it has none),
        float64, and whether it is the argmax there (with `argmax`). The LM head runs on each parent once.

        The batch is declared to the hooks; it goes through the trunk cache when one is open, the hooks
        leave layers intact and `key_parts` (what the batch's residual stream depends on) are given."""
        rows, columns = torch.nonzero(parents >= 0, as_tuple=True)
        width = ids.shape[1]
        needed, inverse = torch.unique(rows * width + parents[rows, columns], return_inverse=True)
        with batch_context(example_ids=example_ids, attention_mask=real.to(self.device),
                           position_ids=None if positions is None else positions.to(self.device)):
            run = lambda: self._logits(inputs, needed)  # noqa: E731
            if self.cache is None or self.intact == 0 or key_parts is None:
                picked = run()
            else:
                picked = self.cache.forward(batch_key(*key_parts), run, self.intact)
        picked = picked if picked.dtype == torch.float64 else picked.float()
        targets = ids[rows, columns].to(picked.device)
        inverse = inverse.to(picked.device)
        lp = (picked[inverse, targets] - picked.logsumexp(-1)[inverse]).double().cpu().numpy()
        out = np.full(tuple(ids.shape), np.nan)
        out[rows.numpy(), columns.numpy()] = lp
        hit = None
        if self.argmax:
            hit = np.zeros(tuple(ids.shape), dtype=bool)
            hit[rows.numpy(), columns.numpy()] = (picked.argmax(-1)[inverse] == targets).cpu().numpy()
        return out, hit

    def _logits(self, inputs: dict, needed: torch.Tensor) -> torch.Tensor:
        """Logits at the flat (row · width + column) positions `needed`, (len(needed), vocab): the LM
        head's input is cut to those positions for the pass when the model has a separate head."""
        if self.head is None:
            logits = self.model(**inputs).logits
            return logits.flatten(0, 1)[needed.to(logits.device)]
        index = {}

        def keep(_module, args):
            hidden = args[0]
            if hidden.dim() != 3:
                return None
            where = index.setdefault(hidden.device, needed.to(hidden.device))
            return (hidden.flatten(0, 1)[where][None], *args[1:])

        handle = self.head.register_forward_pre_hook(keep)
        try:
            logits = self.model(**inputs).logits
        finally:
            handle.remove()
        if logits.dim() == 3 and logits.shape[:2] == (1, len(needed)) and index:
            return logits[0]
        return logits.flatten(0, 1)[needed.to(logits.device)]  # the head was not called on the hidden states


def _check_length(model: torch.nn.Module, sequences: list[list[int]]) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
    if isinstance(limit, int) and len(sequences[longest]) > limit:
        raise NeurolocError(
            f"text {longest} is {len(sequences[longest])} tokens long (with BOS) but the model takes at most "
            f"{limit} positions; split long texts into sentences or paragraphs"
        )
