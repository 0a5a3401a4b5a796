"""`unroute`: remove the selected experts from routing — the expert lesion.

Applied to `router` units (one per expert: `layers.5.router[3]` is expert 3 of layer 5), it sets those
experts' router logits to −∞ as the router computes them, so the model's own routing never picks them:
each token's top-k is taken among the remaining experts and renormalised exactly as the model normalises
it (softmax over the remaining logits; top-k renormalisation where the family does it). Their neurons
stay untouched; they simply receive no token.
"""

from __future__ import annotations

from ..errors import NeurolocError
from .registry import InterventionKind


class Unroute(InterventionKind):
    name = "unroute"
    usage = "unroute (on router units)"

    def edit(self, x, mask, factor, value, context):
        if context.site.kind != "router":
            raise NeurolocError(f"lesion mode 'unroute' removes experts from routing: select router units "
                                f"(e.g. layers.5.router[3], one per expert), not units of {context.site.name}")
        return x.masked_fill(mask, 0)  # the router site turns probability 0 into logit −∞
