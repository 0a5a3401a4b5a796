"""The atlas's networks: registered localizers, and — when their data is given — parts of speech, languages and
relations.

`--networks language,md,tom,pos:NOUN,multilingual:fr,task:capital`: a bare name is a registered localizer (one
`neuroloc localize` child each); KIND:LABEL asks one child study of KIND for all its labels at once — `pos` (the
key neurons of a UPOS class), `multilingual` (a language's units), `task` (a relation's units, or a label of a
lab's prompt–answer file) — and every label becomes a `Network`: its units, its scores (the overlap's r), every
unit's mean |activation| (magnitude-matched controls), per-site means where its study records them (mean
lesions) and its reliability where computed. Networks enter the overlap, the layer profiles and the
dissociation matrix alike. Each has a default own benchmark (`default_own`), and where a child study cannot
use the atlas-wide setting, `differences` says what it uses instead and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..errors import NeurolocError
from ..stimuli.registry import STIMULI
from ..studies.pos.key_neurons import UPOS_TAGS
from ..units import UnitSet
from .lesion import unit_magnitudes
from .localize import LocalizeResult
from .multilingual import SITE_KIND as MULTILINGUAL_SITE, MultilingualResult
from .pos import PosResult
from .task import TaskResult

__all__ = ["KINDS", "LOCALIZER_OWN", "Network", "NetworkSpec", "default_own", "differences", "localizer_network",
           "multilingual_network", "own_pair", "parse_network", "pos_network", "task_network", "unit_count"]

KINDS = ("pos", "multilingual", "task")  # the child studies whose labels are networks
LOCALIZER_OWN = {"language": "blimp", "md": "reasoning", "tom": "theory_of_mind"}
_EXAMPLE = {"pos": "pos:NOUN", "multilingual": "multilingual:fr", "task": "task:capital"}


@dataclass(frozen=True)
class NetworkSpec:
    """One network asked for: its name as given, the study that finds it (`localize` or one of `KINDS`) and its
    label there (None for a localizer)."""

    name: str
    kind: str
    label: str | None = None


def parse_network(text: str) -> NetworkSpec:
    """`language` (a registered localizer), or KIND:LABEL with KIND pos, multilingual or task (one clear line
    for anything else)."""
    name = str(text).strip()
    kind, sep, label = name.partition(":")
    if not sep:
        if name in STIMULI:
            return NetworkSpec(name, "localize")
        if name in KINDS:
            raise NeurolocError(f"network {name!r} needs a label: give {_EXAMPLE[name]}")
        raise NeurolocError(f"{name!r} is not a localizer ({', '.join(STIMULI)}) nor KIND:LABEL with KIND "
                            f"{', '.join(KINDS)} (e.g. pos:NOUN, multilingual:fr, task:capital)")
    kind, label = kind.strip(), label.strip()
    if kind not in KINDS:
        raise NeurolocError(f"network {name!r}: {kind!r} is not a study of networks; use {', '.join(KINDS)} "
                            f"(e.g. {_EXAMPLE['pos']})")
    if not label or ":" in label:
        raise NeurolocError(f"network {name!r}: give one label after {kind}: (e.g. {_EXAMPLE[kind]})")
    if kind == "pos" and label not in UPOS_TAGS:
        raise NeurolocError(f"network {name!r}: {label!r} is not a UPOS class; choose from {', '.join(UPOS_TAGS)}")
    return NetworkSpec(f"{kind}:{label}", kind, label)


def own_pair(text: Any) -> tuple[str, str]:
    """NETWORK:BENCHMARK → (network, benchmark column); the network may hold a colon (`pos:NOUN:perplexity`,
    `task:capital:relations/capital`)."""
    network, sep, benchmark = str(text).rpartition(":")
    if not sep or not network.strip() or not benchmark.strip():
        raise NeurolocError(f"takes NETWORK:BENCHMARK pairs (e.g. md:reasoning, pos:NOUN:perplexity), got {text!r}")
    return network.strip(), benchmark.strip()


def default_own(spec: NetworkSpec) -> str | None:
    """A network's own benchmark column unless the user pairs it: pos → perplexity, multilingual:LANG → that
    language's perplexity, task:REL → that relation's accuracy; a localizer has none here (the atlas's own
    pairs name them)."""
    if spec.kind == "pos":
        return "perplexity"
    if spec.kind == "multilingual":
        return f"multilingual_perplexity/{spec.label}"
    if spec.kind == "task":
        return f"relations/{spec.label}"
    return None


def unit_count(percent: float, widths: Mapping[str, int]) -> int:
    """The atlas's size as one count over several site kinds: per kind, the localizer's rounding of `percent`
    of the kind's units (`localize.selection.select_top`), summed."""
    return int(sum(max(1, int(np.floor(percent * n / 100 + 0.5))) for n in widths.values()))


# ------------------------------------------------------------------------------------------ networks
@dataclass
class Network:
    """What the atlas reads of one network: its units; `scores` (every unit of the units' sites, for the
    overlap's r); `magnitudes` (every unit's mean |activation|, for magnitude-matched controls; None: unknown);
    `means` (site name → mean activation, for mean lesions; empty: none recorded); `reliability` (its split-half
    rows, or None); `source` (where it came from, for the manifest)."""

    name: str
    units: UnitSet
    scores: np.ndarray
    magnitudes: np.ndarray | None
    means: dict[str, torch.Tensor]
    reliability: pd.DataFrame | None
    source: dict

    def __post_init__(self) -> None:
        n = int(self.units.flat_mask().numel())
        for what, values in (("scores", self.scores), ("magnitudes", self.magnitudes)):
            if values is not None and np.asarray(values).shape != (n,):
                raise NeurolocError(f"network {self.name}: {what} for {np.asarray(values).shape} units, but its units "
                                    f"span {n}")
        if not len(self.units):
            raise NeurolocError(f"network {self.name}: its study selected no units; raise --percent or use more data")

    def layers(self) -> pd.DataFrame:
        """Per site and layer: units there and units selected."""
        return pd.DataFrame(self.units.per_layer_counts()).assign(network=self.name)


def localizer_network(name: str, result: LocalizeResult) -> Network:
    localizer = result.localizer
    reliability = (result.reliability.tables["split_half"].assign(network=name)
                   if result.reliability is not None else None)
    return Network(name, localizer.units_, np.asarray(localizer.scores_, dtype=float), unit_magnitudes(localizer),
                   dict(localizer.means_ or {}), reliability, {"study": "localize", **localizer.stimuli_})


def pos_network(spec: NetworkSpec, result: PosResult) -> Network:
    key = result.key_neurons
    if spec.label not in key.classes:
        raise NeurolocError(f"network {spec.name}: the pos study found no key neurons of {spec.label} (its classes: "
                            f"{', '.join(key.classes)}); use more sentences")
    scores = np.asarray(key.scores[key.classes.index(spec.label)], dtype=float)
    config = result.config
    return Network(spec.name, key.units[spec.label], scores, key.magnitudes, {}, None,
                   {"study": "pos", "class": spec.label, "score": config.score, "k": config.k,
                    "n_words": int(key.n_words.get(spec.label, 0)), "sites": list(config.site)})


def multilingual_network(spec: NetworkSpec, result: MultilingualResult) -> Network:
    selection, stats = result.selection, result.stats
    if spec.label not in selection.languages:
        raise NeurolocError(f"network {spec.name}: the multilingual study has no language {spec.label} (it has "
                            f"{', '.join(selection.languages)})")
    units = result.units[spec.label]
    languages = selection.languages
    magnitudes = np.concatenate([stats.mean_abs(languages, site.name).cpu().numpy() for site in units.sites])
    means = {site.name: stats.pooled("tokens", languages, site.name).mean().float().cpu() for site in units.sites}
    return Network(spec.name, units, np.asarray(selection.probability[languages.index(spec.label)], dtype=float),
                   magnitudes, means, None,
                   {"study": "multilingual", "language": spec.label, "score": selection.method,
                    "scores": "activation probability of each unit in the language", "site": MULTILINGUAL_SITE})


def task_network(spec: NetworkSpec, result: TaskResult) -> Network:
    localizer = result.localizer
    if spec.label not in result.labels:
        raise NeurolocError(f"network {spec.name}: the task study has no label {spec.label} (it has "
                            f"{', '.join(result.labels)})")
    scores = np.atleast_2d(np.asarray(localizer.scores_, dtype=float))[list(localizer.labels_).index(spec.label)]
    config = result.config
    return Network(spec.name, result.units[spec.label], scores, localizer.unit_magnitudes(), {}, None,
                   {"study": "task", "label": spec.label, "items": config.items, "score": config.score, "k": config.k,
                    "sites": list(config.site)})


# -------------------------------------------------------------------------------------- what differs
def differences(kind: str, *, site: tuple[str, ...], pooling: str, percent: float, folds: int,
                max_tokens: int | None, pos_attribution: bool = False) -> list[dict]:
    """Where the child study of `kind` cannot use the atlas-wide setting: one entry per setting, with the
    atlas's value, the value used and why (for the manifest and the report)."""
    def entry(setting: str, atlas: Any, used: Any, why: str) -> dict:
        return {"study": kind, "setting": setting, "atlas": atlas, "used": used, "why": why}

    rows = []
    if kind == "multilingual":
        if tuple(site) != (MULTILINGUAL_SITE,):
            rows.append(entry("site", ",".join(site), MULTILINGUAL_SITE,
                              "the multilingual study counts how often each gated-MLP unit is > 0 (LAPE); its units "
                              "live at mlp_gate only, so they share no sites with the other networks"))
        rows.append(entry("pooling", pooling, "tokens", "activation probabilities are counted over every token"))
        rows.append(entry("size", f"top {percent:g}% per network", f"top {percent:g}% of all units, shared out "
                          "among the languages (agnostic units left out)", "LAPE assigns the selected units to "
                          "languages, so one language's set is smaller than the percent"))
    else:
        if kind == "pos":
            used = ("attribution at the position predicting each word" if pos_attribution
                    else "word-level (the activation predicting each word)")
            rows.append(entry("pooling", pooling, used, "the pos study scores words, not whole texts"))
        elif pooling not in ("last", "mean"):
            rows.append(entry("pooling", pooling, "last", "the task study pools a prompt by its last token or mean"))
        if len(site) > 1:
            rows.append(entry("size", f"top {percent:g}% of each site kind's units",
                              f"the same count, chosen over {', '.join(site)} together",
                              f"the {kind} study chooses its k units per label over all sites together"))
        if max_tokens is not None:
            rows.append(entry("max_tokens", max_tokens, None, f"the {kind} study reads whole sentences and prompts"))
    if folds:
        rows.append(entry("reliability", f"split-half, {folds} folds", "not computed",
                          "split-half reliability is computed for the localizers' networks only"))
    return rows
