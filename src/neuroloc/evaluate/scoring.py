"""Per-token log-probabilities of texts under a causal LM: the one scorer every benchmark shares.

Every token of a text is scored by conditioning on a leading BOS token (the tokenizer's BOS, else its
EOS), as lm-evaluation-harness does for an empty context. Texts are sorted by length so that a batch
pads little, padded on the right with an explicit attention mask, and the original order restored:
padding never changes an answer beyond float noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import NeurolocError
from ..text.encoding import encode, pad_id
from ..models.batching import MicroBatcher
from ..models.hooks import batch_context, input_device


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


def token_logprobs(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    bos: str = "prepend",
    progress: Callable[[int], None] | None = None,
) -> list[TextScore]:
    """Score every token of every text, in the order given.

    `bos` is the BOS policy (`neuroloc.text.encoding`): with "prepend" every token of the text is scored;
    special tokens are never scored, and without a leading BOS ("none") the first token only conditions
    the rest and is left out of the score.
    `progress(n_done)` is called after each batch with the number of texts scored so far. The model
    may carry hooks (lesions); it is only called, never changed. log p is computed as
    logit(target) - logsumexp(logits) in float32 on the real (unpadded) positions, so a bfloat16 model
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
    pad = pad_id(tokenizer)
    device = input_device(model)

    results: list[TextScore | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(sequences[i]))  # longest first: OOM shows early
    batcher = MicroBatcher(batch_size, what="scoring batch")  # halves the batch on out-of-memory
    done = 0
    with torch.inference_mode():
        for batch, scores in batcher.map(order, lambda rows: _score_batch(model, [sequences[i] for i in rows],
                                                                          pad, device, rows)):
            done += len(batch)
            for i, lp in zip(batch, scores):
                keep = scored[i]
                results[i] = TextScore(
                    text=texts[i],
                    token_ids=np.asarray([sequences[i][j] for j in keep], dtype=np.int64),
                    logprobs=lp[np.asarray(keep, dtype=np.int64) - 1],
                    offsets=np.asarray([encoded.offsets[i][j] for j in keep], dtype=np.int64).reshape(-1, 2),
                )
            if progress is not None:
                progress(done)
    return results


def _score_batch(model: torch.nn.Module, sequences: list[list[int]], pad_id: int,
                 device: torch.device, example_ids: Sequence[int] | None = None) -> list[np.ndarray]:
    """Log-probabilities of tokens 1.. of each sequence, one right-padded forward pass; hooks see the
    batch (`example_ids`: the texts' indices, attention mask) through `batch_context`."""
    lengths = [len(seq) for seq in sequences]
    width = max(lengths)
    if width < 2:
        return [np.zeros(0, dtype=np.float64) for _ in sequences]
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    with batch_context(example_ids=example_ids, attention_mask=mask.to(device)):
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    valid = mask[:, 1:].bool()
    picked = logits[:, :-1][valid.to(logits.device)].float()  # (real positions, vocab)
    targets = input_ids[:, 1:][valid].to(picked.device)
    logprobs = picked.gather(-1, targets[:, None]).squeeze(-1) - picked.logsumexp(-1)
    flat = logprobs.double().cpu().numpy()
    return np.split(flat, np.cumsum([max(n - 1, 0) for n in lengths])[:-1])


def _check_length(model: torch.nn.Module, sequences: list[list[int]]) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
    if isinstance(limit, int) and len(sequences[longest]) > limit:
        raise NeurolocError(
            f"text {longest} is {len(sequences[longest])} tokens long (with BOS) but the model takes at most "
            f"{limit} positions; split long texts into sentences or paragraphs"
        )
