"""Run settings: how every stage that runs the model encodes and batches texts, and where the model runs.

One `RunSettings` is part of every study's config and is passed explicitly to every function that runs
the model (recorder, scorer, attribution, generation); its defaults live here and nowhere below, so a
setting asked for cannot be dropped on the way and the manifest's record of it holds for the whole run.

- `bos`: the BOS policy (`neuroloc.text.encoding`): `prepend` (the tokenizer's BOS, else EOS, before every
  text), `tokenizer` (the tokenizer's own defaults: neuroloc 0.1.0's localizer, brain-score, the LangNet
  code) or `none`; None only in a study that takes it from its inputs (a lesion study: the policy its units
  were localized with), which passes a concrete policy to every stage;
- `batch_size`: texts per forward pass (halved on out-of-memory; never changes an answer);
- `max_tokens`: truncate texts to this many tokens (None: never);
- `dtype`, `device`: how the model is loaded (`auto`: bfloat16 where the hardware runs it fast and the
  model agrees in it, else float32);
- `progress`: progress bars (display only: never part of a result's identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config, InstanceOf, Interval, Options, param

__all__ = ["BOS_POLICIES", "DTYPES", "RunSettings"]

BOS_POLICIES = ("prepend", "tokenizer", "none")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class RunSettings(Config):
    """How the model is run: encoding (BOS policy, batch size, truncation), precision and device."""

    bos: str | None = param("prepend", Options(BOS_POLICIES), None,
                            help="BOS policy: prepend (BOS, else EOS, before every text), tokenizer (the "
                                 "tokenizer's defaults: neuroloc 0.1.0 and the peers) or none. (A lesion study's "
                                 "default is its units' localizer's policy.)")
    batch_size: int = param(32, Interval(int, 1, None), help="Texts per forward pass (halved on out-of-memory).")
    max_tokens: int | None = param(None, Interval(int, 1, None), None,
                                   help="Truncate texts to this many tokens (default: never).")
    dtype: str = param("auto", Options(DTYPES),
                       help="auto (bfloat16 where the hardware runs it fast and the model agrees in it, else "
                            "float32), float32, bfloat16 or float16.")
    device: str | None = param(None, InstanceOf(str), None,
                               help="e.g. cpu, cuda, cuda:1 (default: where the model loads).")
    progress: bool = param(True, InstanceOf(bool), help="Progress bars on stderr.", cli=False)

    def identity(self) -> dict[str, Any]:
        """The settings that can change a result (cache and checkpoint keys): not the batch size (it never
        changes an answer), the device or the progress bars."""
        return {"bos": self.bos, "max_tokens": self.max_tokens, "dtype": self.dtype}
