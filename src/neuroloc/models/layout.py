"""Where the sites live in an unmodified Hugging Face module tree.

A small declarative table covers known families; anything else goes through discovery, and a layout
that discovery cannot pin down is an error naming the model type and what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from torch import nn

from ..errors import NeurolocError

SITE_KINDS = ("residual", "mlp", "mlp_gate", "attn")
# Query/key/value projections also map hidden → hidden; the output projection is none of them.
_INPUT_PROJECTION = re.compile(r"(^|\.|_)(q|k|v|qkv|query|key|value|query_key_value|c_attn)(_proj)?$")
_SITE_NAME = re.compile(r"^layers\.(\d+)\.(residual|mlp_gate|mlp|attn)$")


@dataclass(frozen=True, order=True)
class Site:
    """One hook point of one layer: the residual output, MLP neurons (`mlp`: the down projection's
    input), MLP gate activations (`mlp_gate`: act(gate) before it multiplies the up projection), or
    attention heads."""

    layer: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise NeurolocError(f"unknown site kind {self.kind!r}; choose one of {', '.join(SITE_KINDS)}")

    @property
    def name(self) -> str:
        return f"layers.{self.layer}.{self.kind}"

    @classmethod
    def parse(cls, name: str) -> "Site":
        match = _SITE_NAME.match(name)
        if not match:
            raise NeurolocError(f"cannot parse site name {name!r}; expected e.g. 'layers.3.mlp'")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class FamilyPaths:
    """Dotted module paths: the decoder layer list, and inside each layer the module whose *input* is
    the MLP's post-activation neurons (down projection) and the one whose input is the concatenated
    per-head attention outputs (output projection). `gate_act` is the activation module of a gated MLP,
    whose output is act(gate); None for MLPs without a gate (their `mlp_gate` is the post-activation)."""

    layers: str
    mlp_out: str
    attn_out: str
    gate_act: str | None = None


_LLAMA_LIKE = FamilyPaths("model.layers", "mlp.down_proj", "self_attn.o_proj", "mlp.act_fn")
FAMILIES: dict[str, FamilyPaths] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama", "mistral", "mixtral_dense", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
            "olmo", "olmo2", "granite", "cohere", "stablelm", "smollm3", "ministral",
        )
    },
    "phi3": FamilyPaths("model.layers", "mlp.down_proj", "self_attn.o_proj", "mlp.activation_fn"),
    "gpt2": FamilyPaths("transformer.h", "mlp.c_proj", "attn.c_proj"),
    "gpt_neox": FamilyPaths("gpt_neox.layers", "mlp.dense_4h_to_h", "attention.dense"),
    "opt": FamilyPaths("model.decoder.layers", "fc2", "self_attn.out_proj"),
    "phi": FamilyPaths("model.layers", "mlp.fc2", "self_attn.dense"),
    "falcon": FamilyPaths("transformer.h", "mlp.dense_4h_to_h", "self_attention.dense"),
    "gptj": FamilyPaths("transformer.h", "mlp.fc_out", "attn.out_proj"),
}


def register_family(model_type: str, *, layers: str, mlp_out: str, attn_out: str, gate_act: str | None = None) -> None:
    """Teach neuroloc a new architecture by naming its module paths (see `FamilyPaths`)."""
    FAMILIES[model_type] = FamilyPaths(layers, mlp_out, attn_out, gate_act)


def _in_out_features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a Linear or GPT-2 style Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None:
        return weight.shape[0], weight.shape[1]
    return None


def _config_int(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


class ModelLayout:
    """Resolved sites of one model: layer modules, widths, and the module each site hooks."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.model_type: str = getattr(config, "model_type", type(model).__name__)
        self.n_layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers")
        self.hidden_size = _config_int(config, "hidden_size", "n_embd", "d_model")
        self.n_heads = _config_int(config, "num_attention_heads", "n_head", "num_heads")
        if not (self.n_layers and self.hidden_size and self.n_heads):
            raise NeurolocError(
                f"model type {self.model_type!r}: the config lacks layer count, hidden size or head count "
                f"(found {self.n_layers}, {self.hidden_size}, {self.n_heads})"
            )
        paths = FAMILIES.get(self.model_type) or self._discover(model, config)
        self.paths = paths
        self.layers: list[nn.Module] = list(self._get(model, paths.layers, "layer list"))
        if len(self.layers) != self.n_layers:
            raise NeurolocError(
                f"model type {self.model_type!r}: {paths.layers!r} has {len(self.layers)} modules but the "
                f"config says {self.n_layers} layers"
            )
        self.mlp_modules = [self._get(layer, paths.mlp_out, "MLP down projection") for layer in self.layers]
        self.attn_modules = [self._get(layer, paths.attn_out, "attention output projection") for layer in self.layers]
        self.gated = paths.gate_act is not None
        self.gate_modules = ([self._get(layer, paths.gate_act, "MLP gate activation") for layer in self.layers]
                             if self.gated else self.mlp_modules)
        mlp_dims = _in_out_features(self.mlp_modules[0])
        attn_dims = _in_out_features(self.attn_modules[0])
        if mlp_dims is None or attn_dims is None:
            raise NeurolocError(
                f"model type {self.model_type!r}: {paths.mlp_out!r} or {paths.attn_out!r} is not a linear layer"
            )
        self.mlp_width = mlp_dims[0]
        attn_in = attn_dims[0]
        if attn_in % self.n_heads:
            raise NeurolocError(
                f"model type {self.model_type!r}: attention output input width {attn_in} is not divisible "
                f"by {self.n_heads} heads"
            )
        self.head_dim = attn_in // self.n_heads

    # -- resolution -----------------------------------------------------------------------------
    def _get(self, root: nn.Module, path: str, what: str) -> nn.Module:
        try:
            return root.get_submodule(path)
        except AttributeError as error:
            raise NeurolocError(
                f"model type {self.model_type!r}: no {what} at {path!r} ({error}). "
                f"{self._how_to_register()}"
            ) from None

    def _how_to_register(self) -> str:
        return (
            "Add the family with neuroloc.register_family("
            f"{self.model_type!r}, layers='...', mlp_out='...', attn_out='...'), naming the decoder layer "
            "list, and inside a layer the MLP down projection and the attention output projection."
        )

    def _discover(self, model: nn.Module, config) -> FamilyPaths:
        """Find the decoder layer list and, in its first layer, the two output projections."""
        lists = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) == self.n_layers
        ]
        if len(lists) != 1:
            found = ", ".join(f"{n} ({len(m)})" for n, m in lists) or "none"
            raise NeurolocError(
                f"model type {self.model_type!r} is not in neuroloc's table and discovery found "
                f"{len(lists)} module lists of length {self.n_layers}: {found}. {self._how_to_register()}"
            )
        layers_path, layer_list = lists[0]
        intermediate = _config_int(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
        mlp, attn = [], []
        for name, module in layer_list[0].named_modules():
            dims = _in_out_features(module)
            if dims is None or dims[1] != self.hidden_size:
                continue
            if intermediate is not None and dims[0] == intermediate or dims[0] > self.hidden_size:
                mlp.append(name)
            elif (re.search(r"attn|attention", name) and dims[0] % self.n_heads == 0
                  and not _INPUT_PROJECTION.search(name)):
                attn.append(name)
        if len(mlp) != 1 or len(attn) != 1:
            raise NeurolocError(
                f"model type {self.model_type!r} is not in neuroloc's table; in {layers_path}.0 discovery "
                f"found MLP down-projection candidates {mlp or 'none'} and attention output candidates "
                f"{attn or 'none'}. {self._how_to_register()}"
            )
        return FamilyPaths(layers_path, mlp[0], attn[0])

    # -- sites ----------------------------------------------------------------------------------
    def width(self, kind: str) -> int:
        """Number of units at a site kind (attention: heads)."""
        return {"residual": self.hidden_size, "mlp": self.mlp_width, "mlp_gate": self.mlp_width,
                "attn": self.n_heads}[Site(0, kind).kind]

    def coordinate_width(self, kind: str) -> int:
        """Width of the hooked tensor's last dimension (attention: heads × head_dim)."""
        return self.n_heads * self.head_dim if kind == "attn" else self.width(kind)

    def sites(self, kinds: str | Iterable[str] = SITE_KINDS, layers: Iterable[int] | None = None) -> list[Site]:
        """All sites of the given kinds (and layers), ordered by layer then kind."""
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        chosen = range(self.n_layers) if layers is None else sorted(set(layers))
        return sorted(Site(layer, kind) for layer in chosen for kind in kinds)

    def check(self, site: Site) -> Site:
        if not 0 <= site.layer < self.n_layers:
            raise NeurolocError(
                f"site {site.name}: layer {site.layer} does not exist; the model has layers 0..{self.n_layers - 1}"
            )
        return site

    def module(self, site: Site) -> nn.Module:
        """The module to hook (see `reads_output`)."""
        self.check(site)
        if site.kind == "residual":
            return self.layers[site.layer]
        modules = {"mlp": self.mlp_modules, "mlp_gate": self.gate_modules, "attn": self.attn_modules}[site.kind]
        return modules[site.layer]

    def reads_output(self, site: Site) -> bool:
        """Whether the site is its module's output (residual; a gated MLP's activation) or its first input
        (`mlp`, `attn`, and `mlp_gate` of an MLP without a gate)."""
        return site.kind == "residual" or (site.kind == "mlp_gate" and self.gated)

    def describe(self) -> dict:
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "widths": {kind: self.width(kind) for kind in SITE_KINDS},
            "head_dim": self.head_dim,
            "paths": vars(self.paths),
            "mlp_gate": "act(gate) of a gated MLP" if self.gated else "MLP post-activation (the MLP has no gate)",
        }
