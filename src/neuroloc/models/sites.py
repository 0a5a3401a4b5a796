"""Site kinds and names: `Site(layer, kind)` (`layers.12.mlp`), and per expert `layers.5.expert[3]`.

Units append their index: `layers.12.residual[301]`, `layers.5.expert[3][1407]` (neuron 1407 of expert 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NeurolocError

# The order is the order `neuroloc info` lists them in.
SITE_KINDS = ("residual", "mlp", "mlp_gate", "attn", "expert", "router", "shared_expert", "ssm")
KIND_MEANINGS = {
    "residual": "the layer's output (the residual stream after the block)",
    "mlp": "MLP neurons: the input of the down projection (post-activation)",
    "mlp_gate": "act(gate) of a gated MLP before it multiplies the up projection",
    "attn": "attention heads: the output projection's input, one unit per head",
    "expert": "neurons of one routed expert (the input of its down projection), on the tokens routed to it "
              "with a nonzero weight",
    "router": "the router's probability of each expert (softmax of its logits), one unit per expert",
    "shared_expert": "neurons of the always-active shared expert (the input of its down projection)",
    "ssm": "the output of the layer's state-space / recurrent token mixer (Mamba, RG-LRU, ...), one unit per channel",
}
_PLAIN_KINDS = "|".join(sorted((k for k in SITE_KINDS if k != "expert"), key=len, reverse=True))
_SITE_NAME = re.compile(rf"^layers\.(\d+)\.(?:expert\[(\d+)\]|({_PLAIN_KINDS}))$")
UNIT_NAME = re.compile(rf"^(layers\.\d+\.(?:expert\[\d+\]|{_PLAIN_KINDS}))\[(\d+)\]$")


@dataclass(frozen=True, order=True)
class Site:
    """One hook point of one layer: the residual output, MLP neurons (`mlp`: the down projection's
    input), MLP gate activations (`mlp_gate`: act(gate) before it multiplies the up projection),
    attention heads, the neurons of one routed expert (`expert`, with its index), the router's expert
    probabilities (`router`), the shared expert's neurons (`shared_expert`), or the output of a
    state-space / recurrent mixer (`ssm`)."""

    layer: int
    kind: str
    expert: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise NeurolocError(f"unknown site kind {self.kind!r}; choose one of {', '.join(SITE_KINDS)}")
        if (self.kind == "expert") != (self.expert is not None):
            raise NeurolocError(f"site kind {self.kind!r}: an expert index goes with kind 'expert' only "
                                f"(e.g. Site(5, 'expert', 3), named layers.5.expert[3])")

    @property
    def name(self) -> str:
        suffix = f"[{self.expert}]" if self.kind == "expert" else ""
        return f"layers.{self.layer}.{self.kind}{suffix}"

    @classmethod
    def parse(cls, name: str) -> "Site":
        match = _SITE_NAME.match(name)
        if not match:
            raise NeurolocError(f"cannot parse site name {name!r}; expected e.g. 'layers.3.mlp' or 'layers.5.expert[3]'")
        layer, expert, kind = match.groups()
        return cls(int(layer), "expert", int(expert)) if expert is not None else cls(int(layer), kind)

    def __str__(self) -> str:
        return self.name
