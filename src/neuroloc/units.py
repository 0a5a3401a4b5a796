"""UnitSet: named units as boolean masks per site, convertible to names, flat indices and counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from .errors import NeurolocError
from .io import atomic_path, atomic_write_json
from .models.layout import UNIT_NAME as _UNIT_NAME, ModelLayout, Site

MASKS_FILE = "units.safetensors"
INDEX_FILE = "units.json"


def _read_index(path: Path, keys: tuple[str, ...] = ("model",)) -> dict:
    """A units index file (JSON), or a one-line error naming it when it is damaged or hand-edited wrong."""
    try:
        index = json.loads(path.read_text())
        for key in keys:
            index[key]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NeurolocError(f"{path} is not a readable units index ({type(error).__name__}: {error}); "
                            "localize again, or restore the file") from None
    return index


def unit_name(site: Site, index: int) -> str:
    """`layers.12.residual[301]`: the unit's site and its index there (attention: the head; an expert's
    neuron: `layers.5.expert[3][1407]`)."""
    return f"{site.name}[{index}]"


def _exists(layout: ModelLayout, site: Site) -> bool:
    try:
        layout.check(site)
        return True
    except NeurolocError:
        return False


class UnitSet:
    """A selection of units: one boolean mask per site, sites ordered by (layer, kind).

    Flat indices enumerate units site by site in that order, so they are stable for a given set of
    sites. `model` records the identity of the model the units belong to.
    """

    def __init__(self, masks: Mapping[Site | str, torch.Tensor | np.ndarray], model: dict | None = None) -> None:
        parsed = {(s if isinstance(s, Site) else Site.parse(s)): torch.as_tensor(m).bool().flatten().cpu()
                  for s, m in masks.items()}
        self.masks: dict[Site, torch.Tensor] = dict(sorted(parsed.items()))
        self.model = dict(model or {})

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def empty(cls, layout: ModelLayout, kinds: str | Iterable[str] = "residual", model: dict | None = None) -> "UnitSet":
        return cls({s: torch.zeros(layout.width(s), dtype=torch.bool) for s in layout.sites(kinds)}, model)

    @classmethod
    def from_names(cls, names: Iterable[str], layout: ModelLayout, model: dict | None = None) -> "UnitSet":
        """Parse `layers.3.mlp[1407]`-style names; every site of the named kinds gets a mask."""
        hits: list[tuple[Site, int]] = []
        for name in names:
            match = _UNIT_NAME.match(name.strip())
            if not match:
                raise NeurolocError(f"cannot parse unit name {name!r}; expected e.g. 'layers.3.mlp[1407]'")
            site = layout.check(Site.parse(match.group(1)))
            index = int(match.group(2))
            if index >= layout.width(site):
                raise NeurolocError(f"unit {name}: index {index} ≥ width {layout.width(site)} of {site.name}")
            hits.append((site, index))
        units = cls.empty(layout, sorted({s.kind for s, _ in hits}) or "residual", model)
        for site, index in hits:
            units.masks[site][index] = True
        return units

    @classmethod
    def from_flat(cls, mask_or_indices: np.ndarray | torch.Tensor | Iterable[int], sites: list[Site],
                  widths: list[int], model: dict | None = None) -> "UnitSet":
        """From a flat boolean mask (or flat indices) over `sites` laid end to end."""
        total = sum(widths)
        flat = torch.as_tensor(np.asarray(mask_or_indices))
        if flat.dtype != torch.bool:
            indices = flat.long()
            flat = torch.zeros(total, dtype=torch.bool)
            flat[indices] = True
        if flat.numel() != total:
            raise NeurolocError(f"flat mask has {flat.numel()} entries but the sites hold {total} units")
        return cls(dict(zip(sites, torch.split(flat, widths))), model)

    # -- views ------------------------------------------------------------------------------------
    @property
    def sites(self) -> list[Site]:
        return list(self.masks)

    @property
    def widths(self) -> list[int]:
        return [m.numel() for m in self.masks.values()]

    def flat_mask(self) -> torch.Tensor:
        return torch.cat(list(self.masks.values())) if self.masks else torch.zeros(0, dtype=torch.bool)

    def flat_indices(self) -> np.ndarray:
        return torch.nonzero(self.flat_mask()).flatten().numpy()

    def names(self) -> list[str]:
        return [unit_name(site, int(i)) for site, mask in self.masks.items() for i in torch.nonzero(mask).flatten()]

    def counts(self) -> dict[str, int]:
        """Selected units per site name (every site, zeros included)."""
        return {site.name: int(mask.sum()) for site, mask in self.masks.items()}

    def per_layer_counts(self) -> list[dict]:
        """Rows of site kind, layer, units at the site and units selected: ready for a DataFrame."""
        return [
            {"site": s.kind, "layer": s.layer, "n_units": int(m.numel()), "n_selected": int(m.sum())}
            for s, m in self.masks.items()
        ]

    def __len__(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def __contains__(self, name: str) -> bool:
        match = _UNIT_NAME.match(name)
        if not match:
            return False
        mask = self.masks.get(Site.parse(match.group(1)))
        index = int(match.group(2))
        return mask is not None and index < mask.numel() and bool(mask[index])

    def __repr__(self) -> str:
        kinds = sorted({s.kind for s in self.masks})
        return f"UnitSet({len(self)} units over {len(self.masks)} sites, kinds={kinds})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, UnitSet) and self.masks.keys() == other.masks.keys()
                and all(torch.equal(self.masks[s], other.masks[s]) for s in self.masks))

    # -- set algebra ------------------------------------------------------------------------------
    def _combine(self, other: "UnitSet", op) -> "UnitSet":
        sites = sorted(set(self.masks) | set(other.masks))
        masks = {}
        for site in sites:
            a, b = self.masks.get(site), other.masks.get(site)
            if a is not None and b is not None and a.numel() != b.numel():
                raise NeurolocError(f"site {site.name} has width {a.numel()} in one UnitSet and {b.numel()} in the other")
            a = a if a is not None else torch.zeros_like(b)
            b = b if b is not None else torch.zeros_like(a)
            masks[site] = op(a, b)
        return UnitSet(masks, self.model or other.model)

    def __or__(self, other: "UnitSet") -> "UnitSet":
        return self._combine(other, torch.logical_or)

    def __and__(self, other: "UnitSet") -> "UnitSet":
        return self._combine(other, torch.logical_and)

    def __sub__(self, other: "UnitSet") -> "UnitSet":
        return self._combine(other, lambda a, b: a & ~b)

    def jaccard(self, other: "UnitSet") -> float:
        union = len(self | other)
        return len(self & other) / union if union else 0.0

    # -- compatibility and persistence ---------------------------------------------------------------
    def check_compatible(self, layout: ModelLayout, model: dict | None = None) -> None:
        """Raise when these units cannot belong to the model: layers or widths differ, or the recorded
        identity (architecture, weights hash, config hash) names another model."""
        for site, mask in self.masks.items():
            exists = _exists(layout, site)
            if not exists or mask.numel() != layout.width(site):
                raise NeurolocError(
                    f"the UnitSet does not fit this model: site {site.name} has {mask.numel()} units, but the "
                    f"model ({layout.model_type}, {layout.n_layers} layers) "
                    + (f"has {layout.width(site)} there" if exists else "has no such site")
                    + f". Was it made for another model ({self.model.get('spec', 'unknown')})?"
                )
        for key in ("model_type", "sha256", "config_sha256"):
            ours, theirs = self.model.get(key), (model or {}).get(key)
            if ours and theirs and ours != theirs:
                raise NeurolocError(
                    f"the UnitSet was made for model {self.model.get('spec')} ({key} {str(ours)[:12]}) but the "
                    f"model given is {model.get('spec')} ({key} {str(theirs)[:12]}); localize on this model first"
                )

    def save(self, directory: str | Path) -> None:
        """Write `units.safetensors` (masks) and `units.json` (names, counts, model identity)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MASKS_FILE) as tmp:
            save_file({s.name: m.to(torch.uint8) for s, m in self.masks.items()}, str(tmp),
                      metadata={"format": "neuroloc.UnitSet/1"})
        atomic_write_json(directory / INDEX_FILE, {
            "format": "neuroloc.UnitSet/1",
            "model": self.model,
            "n_units": len(self),
            "counts": self.counts(),
            "widths": {s.name: m.numel() for s, m in self.masks.items()},
            "names": self.names(),
        })

    @classmethod
    def load(cls, directory: str | Path) -> "UnitSet":
        directory = Path(directory)
        masks_path = directory / MASKS_FILE if directory.is_dir() else directory
        if not masks_path.is_file():
            raise NeurolocError(f"no UnitSet at {directory}: expected {MASKS_FILE} (and {INDEX_FILE}) there")
        index_path = masks_path.with_name(INDEX_FILE)
        model = _read_index(index_path)["model"] if index_path.is_file() else {}
        try:
            tensors = load_file(str(masks_path))
        except Exception as error:  # safetensors raises its own error types
            raise NeurolocError(f"{masks_path} is not a readable safetensors file: {error}") from None
        return cls(tensors, model)


LABELS_FILE = "labeled_units.json"


class LabeledUnits:
    """Units per label (language, relation, culture, POS class …): label → `UnitSet`.

    Saved as one safetensors file of masks keyed `label/site` plus a JSON index, so a folder holds every
    label's set; overlap and Jaccard tables compare the labels.
    """

    def __init__(self, sets: Mapping[str, UnitSet]) -> None:
        if not sets:
            raise NeurolocError("LabeledUnits needs at least one label")
        self.sets: dict[str, UnitSet] = dict(sets)

    @property
    def labels(self) -> list[str]:
        return list(self.sets)

    def __getitem__(self, label: str) -> UnitSet:
        try:
            return self.sets[label]
        except KeyError:
            raise NeurolocError(f"no units for label {label!r}; labels: {', '.join(self.sets)}") from None

    def items(self):
        return self.sets.items()

    def __contains__(self, label: object) -> bool:
        return label in self.sets

    def __len__(self) -> int:
        return len(self.sets)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabeledUnits) and self.sets == other.sets

    def __repr__(self) -> str:
        sizes = ", ".join(f"{label}: {len(units)}" for label, units in self.sets.items())
        return f"LabeledUnits({sizes})"

    def union(self) -> UnitSet:
        """Every unit selected for at least one label."""
        sets = list(self.sets.values())
        total = sets[0]
        for units in sets[1:]:
            total = total | units
        return total

    def label_counts(self) -> np.ndarray:
        """Per flat unit, how many labels selected it (unit order of the first set)."""
        return np.sum([units.flat_mask().numpy() for units in self.sets.values()], axis=0)

    def overlap(self) -> pd.DataFrame:
        """Label × label table of shared units (the diagonal: each label's size)."""
        labels = self.labels
        return pd.DataFrame([[len(self.sets[a] & self.sets[b]) for b in labels] for a in labels],
                            index=labels, columns=labels)

    def jaccard(self) -> pd.DataFrame:
        """Label × label Jaccard index of the unit sets."""
        labels = self.labels
        return pd.DataFrame([[self.sets[a].jaccard(self.sets[b]) for b in labels] for a in labels],
                            index=labels, columns=labels)

    def per_layer_counts(self) -> pd.DataFrame:
        """Long table: label, site, layer, n_units, n_selected."""
        return pd.DataFrame([{"label": label, **row} for label, units in self.sets.items()
                             for row in units.per_layer_counts()])

    def save(self, directory: str | Path) -> None:
        """Write `units.safetensors` (masks keyed `label/site`) and `labeled_units.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"{label}/{site.name}": mask.to(torch.uint8)
                   for label, units in self.sets.items() for site, mask in units.masks.items()}
        with atomic_path(directory / MASKS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "neuroloc.LabeledUnits/1"})
        atomic_write_json(directory / LABELS_FILE, {
            "format": "neuroloc.LabeledUnits/1",
            "labels": self.labels,
            "model": next(iter(self.sets.values())).model,
            "n_units": {label: len(units) for label, units in self.sets.items()},
            "names": {label: units.names() for label, units in self.sets.items()},
        })

    @classmethod
    def load(cls, directory: str | Path) -> "LabeledUnits":
        directory = Path(directory)
        index_path = directory / LABELS_FILE
        if not index_path.is_file():
            raise NeurolocError(f"no LabeledUnits at {directory}: expected {LABELS_FILE} and {MASKS_FILE} there")
        index = _read_index(index_path, keys=("model", "labels"))
        try:
            tensors = load_file(str(directory / MASKS_FILE))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise NeurolocError(f"{directory / MASKS_FILE} is not a readable safetensors file: {error}") from None
        sets = {}
        for label in index["labels"]:
            prefix = f"{label}/"
            sets[label] = UnitSet({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                  index.get("model"))
        return cls(sets)


# TransformerLens hook names of our site kinds (`mlp_gate` has none: TransformerLens hooks a gated MLP's
# pre-activation, its up projection and their product, not act(gate) alone).
_TRANSFORMER_LENS = {"residual": "blocks.{layer}.hook_resid_post", "mlp": "blocks.{layer}.mlp.hook_post",
                     "attn": "blocks.{layer}.attn.hook_z"}


class UnitIndex:
    """The units of some sites laid end to end: names, the unit table, the flat ↔ (site, index) mapping, and
    the names other tools use for the same places.

    Every flat unit vector in neuroloc (scores, masks, magnitudes) is laid out in this order: sites by
    (layer, kind), units within a site by index. Tables of units are built here (`table()`), so they agree.
    """

    def __init__(self, sites: Iterable[Site], widths: Iterable[int]) -> None:
        self.sites = list(sites)
        self.widths = [int(w) for w in widths]
        if len(self.sites) != len(self.widths):
            raise NeurolocError(f"{len(self.sites)} sites but {len(self.widths)} widths")
        self.offsets = np.concatenate([[0], np.cumsum(self.widths)]).astype(np.int64)

    @classmethod
    def of(cls, units: "UnitSet") -> "UnitIndex":
        return cls(units.sites, units.widths)

    @classmethod
    def from_layout(cls, layout: ModelLayout, kinds: str | Iterable[str],
                    layers: Iterable[int] | None = None) -> "UnitIndex":
        sites = layout.sites(kinds, layers)
        return cls(sites, [layout.width(s) for s in sites])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitIndex) and self.sites == other.sites and self.widths == other.widths

    def names(self) -> list[str]:
        return [unit_name(site, i) for site, width in zip(self.sites, self.widths) for i in range(width)]

    def table(self) -> pd.DataFrame:
        """One row per unit: unit (its name), site (kind), layer, index — the first columns of every scores
        table."""
        return pd.DataFrame({
            "unit": self.names(),
            "site": np.repeat([s.kind for s in self.sites], self.widths),
            "layer": np.repeat([s.layer for s in self.sites], self.widths),
            "index": np.concatenate([np.arange(w) for w in self.widths]) if self.widths else np.zeros(0, int),
        })

    def flat(self, site: Site | str, index: int) -> int:
        """The flat position of unit `index` of `site`."""
        site = site if isinstance(site, Site) else Site.parse(site)
        try:
            position = self.sites.index(site)
        except ValueError:
            raise NeurolocError(f"site {site.name} is not among these units' sites") from None
        if not 0 <= index < self.widths[position]:
            raise NeurolocError(f"unit {index} of {site.name}: the site has {self.widths[position]} units")
        return int(self.offsets[position] + index)

    def locate(self, flat: int) -> tuple[Site, int]:
        """(site, index) of a flat position."""
        if not 0 <= flat < len(self):
            raise NeurolocError(f"flat unit {flat} is outside 0..{len(self) - 1}")
        position = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return self.sites[position], int(flat - self.offsets[position])

    def split(self, values: np.ndarray | torch.Tensor) -> dict[Site, np.ndarray | torch.Tensor]:
        """A flat vector (or rows × flat) cut into its sites' parts (last dimension)."""
        if values.shape[-1] != len(self):
            raise NeurolocError(f"{values.shape[-1]} values for {len(self)} units")
        return {site: values[..., int(a):int(b)] for site, a, b in zip(self.sites, self.offsets[:-1], self.offsets[1:])}

    def units(self, flat_mask_or_indices: np.ndarray | torch.Tensor | Iterable[int],
              model: dict | None = None) -> "UnitSet":
        """A UnitSet from a flat mask or flat indices."""
        return UnitSet.from_flat(flat_mask_or_indices, self.sites, self.widths, model=model)

    def transformer_lens_hooks(self) -> dict[Site, str | None]:
        """Each site's TransformerLens hook name (`blocks.12.hook_resid_post`, `blocks.3.mlp.hook_post`,
        `blocks.5.attn.hook_z`: heads along its head axis), or None where TransformerLens has no such hook."""
        return {s: _TRANSFORMER_LENS[s.kind].format(layer=s.layer) if s.kind in _TRANSFORMER_LENS else None
                for s in self.sites}

    def module_paths(self, model: torch.nn.Module, layout: ModelLayout) -> dict[Site, tuple[str, str]]:
        """Each site's module in the model's own tree (its dotted path) and whether the units are that
        module's `input` or `output` — what nnsight and baukit address (`model.layers.3.mlp.down_proj`, input)."""
        paths = {id(module): name for name, module in model.named_modules()}
        return {site: (paths[id(layout.module(site))], "output" if layout.reads_output(site) else "input")
                for site in self.sites}
