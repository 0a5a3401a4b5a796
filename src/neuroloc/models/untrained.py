"""The untrained-model null: the same architecture with freshly initialised weights.

Untrained transformers already have units that separate sentences from non-words (token statistics,
position, architecture), so a unit set means little until it is compared with what the same localizer
finds in the same architecture before training. `untrained_model` builds that architecture from the
trained model's config with the model class's own initialisation (`_init_weights`, the scheme its
authors train from), seeded, in the trained model's dtype and on its input device, with the same
tokenizer: a `LoadedModel` every localizer, lesion and benchmark takes as it is.
"""

from __future__ import annotations

import copy

import torch

from ..errors import NeurolocError
from .layout import ModelLayout
from .loading import LoadedModel

__all__ = ["untrained_model"]


def untrained_model(lm: LoadedModel, seed: int) -> LoadedModel:
    """`lm`'s architecture, freshly initialised under `seed` (the same seed gives the same weights; the
    global random state is left as it was)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise NeurolocError(f"untrained-model seed must be an integer, got {seed!r}")
    config = copy.deepcopy(lm.model.config)  # _from_config writes the dtype into the config it gets
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = type(lm.model)._from_config(config, dtype=lm.dtype)
    model.to(lm.device).eval()
    identity = {**lm.identity, "weights": "untrained", "init_seed": seed,
                "trained_source": lm.identity.get("source")}
    return LoadedModel(model=model, tokenizer=lm.tokenizer, layout=ModelLayout(model), identity=identity)
