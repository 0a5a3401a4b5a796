"""Where the sites live in an unmodified Hugging Face module tree, layer by layer.

Only the decoder layer list is needed to load a model (it gives `residual`); every other site kind is
resolved per layer and independently — by a small declarative table for known families, by rules given
to `register_family`, and by structural discovery (`models/discovery.py`) for the rest. A kind a layer
lacks is unavailable there with a reason (`ModelLayout.availability`), never a load failure. What
structure suggests is then checked on probes at construction: a gated MLP's gate (`models/gates.py`)
and fused experts' arithmetic (`models/moe.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

from torch import nn

from ..errors import NeurolocError
from .discovery import LayerParts, MlpParts, discover_layer, heads_of, linear_dims
from .sites import KIND_MEANINGS, SITE_KINDS, UNIT_NAME, Site
from .streams import LayerShape, probe_layer_shapes, run_probe

__all__ = ["FAMILIES", "FamilyPaths", "KIND_MEANINGS", "ModelLayout", "SITE_KINDS", "Site", "UNIT_NAME",
           "register_family"]

LayerRule = Union[Callable[[int, nn.Module], Mapping[str, Union[str, None]]], Mapping[str, Mapping[str, Union[str, None]]]]
RULE_KEYS = ("attn_out", "mlp_out", "gate_act", "ssm")


@dataclass(frozen=True)
class FamilyPaths:
    """Dotted module paths: the decoder layer list, and inside each layer the module whose *input* is
    the MLP's post-activation neurons (down projection), the one whose input is the concatenated
    per-head attention outputs (output projection), and the activation module of a gated MLP (its output
    is act(gate); None for MLPs without a gate, whose `mlp_gate` is the post-activation). `per_layer`
    overrides paths layer by layer (see `register_family`). A path left None is discovered."""

    layers: str
    mlp_out: str | None = None
    attn_out: str | None = None
    gate_act: str | None = None
    per_layer: LayerRule | None = None


_LLAMA_LIKE = FamilyPaths("model.layers", "mlp.down_proj", "self_attn.o_proj", "mlp.act_fn")
FAMILIES: dict[str, FamilyPaths] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
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


def register_family(model_type: str, *, layers: str, mlp_out: str | None = None, attn_out: str | None = None,
                    gate_act: str | None = None, per_layer: LayerRule | None = None) -> None:
    """Teach neuroloc an architecture by naming its module paths (see `FamilyPaths`); paths left out are
    discovered. `per_layer` gives paths layer by layer, for models whose layers differ: a function
    `(index, layer module) -> {"attn_out": ..., "mlp_out": ..., "gate_act": ..., "ssm": ...}` or a mapping
    from a layer's class name to such a dict; a path set to None there means the layer has no such part."""
    if per_layer is not None and not callable(per_layer):
        for rules in per_layer.values():
            unknown = set(rules) - set(RULE_KEYS)
            if unknown:
                raise NeurolocError(f"register_family({model_type!r}): unknown per-layer keys {sorted(unknown)}; "
                                    f"use {', '.join(RULE_KEYS)}")
    FAMILIES[model_type] = FamilyPaths(layers, mlp_out, attn_out, gate_act, per_layer)


def _config_int(config, *names: str) -> int | None:
    for name in names:
        try:
            value = getattr(config, name, None)
        except RuntimeError:  # a per-layer attribute that refuses a global read
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _declared(model: nn.Module, key: str) -> tuple[type, ...]:
    """Module classes a transformers model declares for `key` in `_can_record_outputs` (the decoder layers
    for "hidden_states", attention for "attentions", routers for "router_logits"), over every submodel (a
    multimodal model declares its vision and text parts apart)."""
    classes: list[type] = []
    for module in model.modules():
        declared = getattr(module, "_can_record_outputs", None)
        if isinstance(declared, dict) and key in declared:
            entries = declared[key] if isinstance(declared[key], (list, tuple)) else [declared[key]]
            classes.extend(c for c in (getattr(e, "target_class", e) for e in entries) if isinstance(c, type))
    return tuple(dict.fromkeys(classes))


def _decoder_path(model: nn.Module) -> str | None:
    """The path of the model's text decoder (`get_decoder()`), when it names a proper submodule."""
    try:
        decoder = model.get_decoder()
    except Exception:  # noqa: BLE001 - not every model implements it
        return None
    if not isinstance(decoder, nn.Module) or decoder is model:
        return None
    return next((name for name, module in model.named_modules() if module is decoder), None)


class ModelLayout:
    """Resolved sites of one model: the layer list, and per layer the module each site kind hooks."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.model = model
        self.config = config
        self.model_type: str = getattr(config, "model_type", None) or type(model).__name__
        self.hidden_size = _config_int(config, "hidden_size", "n_embd", "d_model", "dim")
        self.n_heads = _config_int(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
        config_layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
        self.family = FAMILIES.get(self.model_type)
        self._parallel: str | None = None  # set when the block's parts are parallel lists (`_parallel_parts`)
        self.layers_path, self.layers = self._layer_list(model, config_layers)
        self.n_layers = len(self.layers)
        if self.hidden_size is None or self.n_heads is None:  # a composite config: the layers' own submodel's
            own = self._stack_config(model)
            self.hidden_size = self.hidden_size or _config_int(own, "hidden_size", "n_embd", "d_model", "dim")
            self.n_heads = self.n_heads or _config_int(own, "num_attention_heads", "n_head", "num_heads", "n_heads")
        if self.hidden_size is None:
            raise NeurolocError(f"model type {self.model_type!r}: the config does not give a hidden size "
                                f"(hidden_size, n_embd or d_model). {self._how_to_register()}")
        self._attention_classes = _declared(model, "attentions")
        self._router_classes = _declared(model, "router_logits")
        self._parts: dict[int, LayerParts] = {}
        self._gate_checks: dict[int, str | None] | None = None
        self._experts_checked: set[int] = set()
        self._shapes: dict[int, LayerShape] = {}
        self._attention_calls: dict[int, int] = {}
        self._idle: dict[int, str] = {}  # layers a text-only pass skips: no site of any kind
        self._modules: dict[Site, nn.Module] = {}
        self._verify()

    def _stack_config(self, model: nn.Module):
        """The config of the innermost submodel holding the layer list (BLT's local decoder: its top config
        only gathers its submodels'), or None."""
        path = self.layers_path.split(".")
        for end in range(len(path) - 1, 0, -1):
            config = getattr(model.get_submodule(".".join(path[:end])), "config", None)
            if config is not None and config is not self.config:
                return config
        return None

    def _verify(self) -> None:
        """Run the probes now, on the bare model: a gated MLP's gate (one forward pass on 5 tokens) and
        fused experts (one call each), and what each layer outputs per token (`models/streams.py`: one pass),
        so no probe ever runs while a caller's hooks are installed."""
        from .gates import probe_ids

        attention = {i: self.layers[i].get_submodule(self.parts(i).attn) for i in range(self.n_layers)
                     if self.parts(i).attn is not None}
        probe = probe_layer_shapes(self.model, self.layers, probe_ids(self.model), self.hidden_size, attention)
        refusal = probe.refusal(self.model_type, self.layers_path)
        if refusal:
            raise NeurolocError(refusal)
        self._shapes, self._attention_calls = probe.shapes, probe.calls
        self._idle = {i: f"{type(self.layers[i]).__name__} does not run on a text-only forward pass (it needs "
                         "inputs neuroloc does not give, e.g. image features for cross-attention)"
                      for i, n in probe.runs.items() if n == 0}
        self.gate_checks()
        for layer in range(self.n_layers):
            if self.parts(layer).moe is not None:
                self._experts_readable(layer)

    # -- the layer list -------------------------------------------------------------------------
    def _layer_list(self, model: nn.Module, config_layers: int | None) -> tuple[str, list[nn.Module]]:
        """The decoder layers: the table's path when the model has it (a multimodal wrapper of a tabled text
        model has them elsewhere), else the module list of the layers transformers declares (inside the
        model's decoder), else the one list as long as the config says."""
        if self.family is not None:
            try:
                layers = model.get_submodule(self.family.layers)
            except AttributeError:
                layers = None
            if layers is not None:
                if config_layers is not None and len(layers) != config_layers:
                    raise NeurolocError(
                        f"model type {self.model_type!r}: {self.family.layers!r} has {len(layers)} modules but the "
                        f"config says {config_layers} layers")
                return self.family.layers, list(layers)
        lists = [(name, module) for name, module in model.named_modules()
                 if isinstance(module, nn.ModuleList) and len(module) > 0]
        decoder = _decoder_path(model)
        inside = [(n, m) for n, m in lists if decoder is None or n.startswith(decoder)] or lists
        declared = _declared(model, "hidden_states")
        chosen = [(n, m) for n, m in inside if declared and all(isinstance(layer, declared) for layer in m)]
        if len(chosen) > 1:
            chosen = [(n, m) for n, m in chosen if len(m) == config_layers]
        candidates = chosen
        if len(chosen) != 1:
            chosen = [(n, m) for n, m in inside if len(m) == config_layers]
        if len(chosen) != 1 and not candidates:  # the only list of like modules (a decoder's own count)
            chosen = [(n, m) for n, m in inside if len(m) > 1 and len({type(layer) for layer in m}) == 1]
        if len(chosen) != 1:
            return self._layers_that_run(model, candidates or chosen, config_layers)
        return chosen[0][0], list(chosen[0][1])

    def _layers_that_run(self, model: nn.Module, pool: list[tuple[str, nn.Module]],
                         config_layers: int | None) -> tuple[str, list[nn.Module]]:
        """Among several candidate lists (a multimodal model's text decoder beside its vision or audio
        encoders), the one whose layers each run once on a text-only probe pass; when several do, the one
        that finishes last — the stack that feeds the LM head (BLT's local decoder after its byte encoder,
        patch-level global transformer and entropy patcher; of lists holding a block's parts side by side,
        as XLM's attentions, layer_norm1, ffns and layer_norm2, the one whose i-th module ends block i, so
        its output is the residual stream after block i — see `_parallel`). A model whose layers run
        several times per pass (recurrent stacks) has no layer list neuroloc can name, and says so."""
        from .gates import probe_ids

        found = ", ".join(f"{n} ({len(m)})" for n, m in pool) or "none"
        why = ""
        if len(pool) > 1:
            calls = {name: 0 for name, _ in pool}
            ended: dict[str, list[tuple[int, int]]] = {name: [] for name, _ in pool}  # per list: when each layer finished
            clock = [0]

            def done(name: str, index: int):
                def hook(*_):
                    clock[0] += 1
                    ended[name].append((clock[0], index))
                return hook

            handles = [layer.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
                       for name, layers in pool for layer in layers]
            handles += [layer.register_forward_hook(done(name, i)) for name, layers in pool
                        for i, layer in enumerate(layers)]
            try:
                run_probe(model, probe_ids(model), use_cache=False)
                runs = {name: calls[name] / len(layers) for name, layers in pool}
            except Exception as error:  # noqa: BLE001 - the probe only settles ambiguity; say why it could not
                runs, why = {}, f"; a text-only probe pass failed: {type(error).__name__}: {str(error)[:120]}"
            finally:
                for handle in handles:
                    handle.remove()
            once = [(n, m) for n, m in pool if runs.get(n) == 1]
            if len(once) > 1:
                last = max(once, key=lambda item: max(ended[item[0]])[0])
                self._parallel = self._parallel_parts(last[0], once, ended)
                return last[0], list(last[1])
            if len(once) == 1:
                return once[0][0], list(once[0][1])
            repeated = {n: r for n, r in runs.items() if r > 1}
            if repeated:
                ran = " and of ".join(f"{n} ran {r:g} times" for n, r in repeated.items())
                raise NeurolocError(
                    f"model type {self.model_type!r} applies its layers recurrently: on one text, each layer of {ran} "
                    f"in one forward pass (the config counts {config_layers} layer applications), so no layer has "
                    "one output per token and neuroloc has no layer list to name its sites by")
            ran = [n for n, r in runs.items() if r == 1]
            why = why or (f"; on a text-only probe pass {', '.join(ran)} ran" if ran else
                          "; none of them ran on a text-only probe pass")
        raise NeurolocError(
            f"model type {self.model_type!r} is not in neuroloc's table and discovery cannot tell its layer "
            f"list (the config says {config_layers} layers; candidates: {found}{why}). {self._how_to_register()}")

    def _parallel_parts(self, chosen: str, once: list[tuple[str, nn.Module]],
                        ended: dict[str, list[tuple[int, int]]]) -> str | None:
        """When `chosen` holds the last part of each block and the block's other parts are lists beside it
        (same parent, same length, block i's modules all finishing before block i + 1's start and
        `chosen`'s i-th last of them): why a layer in which discovery finds no part has no site but
        `residual` (BLT's decoder layers, beside their cross-attention list, are whole blocks), else None."""
        parent = chosen.rsplit(".", 1)[0] if "." in chosen else ""
        length = len(dict(once)[chosen])
        siblings = [n for n, m in once if n != chosen and len(m) == length
                    and (n.rsplit(".", 1)[0] if "." in n else "") == parent]
        if not siblings:
            return None
        events = sorted((t, i, n) for n in (chosen, *siblings) for t, i in ended[n])
        blocks = [i for _, i, _ in events]
        if blocks != sorted(blocks) or any(events[j][2] != chosen for j in range(len(events))
                                           if j + 1 == len(events) or events[j + 1][1] != events[j][1]):
            return None
        return (f"{self.model_type!r} holds each block's parts in parallel lists ({', '.join(siblings)}, {chosen}): "
                f"layer i is {chosen}[i] (its output is the residual stream after block i), which holds no other "
                "part of the block, and sites are paths inside a layer")

    def _how_to_register(self) -> str:
        return (
            "Add the family with neuroloc.register_family("
            f"{self.model_type!r}, layers='...', mlp_out='...', attn_out='...'), naming the decoder layer "
            "list, and inside a layer the MLP down projection and the attention output projection."
        )

    # -- per-layer parts ------------------------------------------------------------------------
    def parts(self, layer: int) -> LayerParts:
        """What layer `layer` holds (discovered once, then cached)."""
        if layer not in self._parts:
            module = self.layers[layer]
            parts = discover_layer(module, self.hidden_size, self.n_heads, attention_classes=self._attention_classes,
                                   router_classes=self._router_classes)
            rules = self._rules(layer, module)
            if rules:
                self._apply_rules(parts, rules, layer, module)
            if self._parallel and not (parts.attn or parts.mlp or parts.moe or parts.ssm):
                # the layer module is only the last part of its block (XLM's norm): residual only, and why
                parts = LayerParts(reasons=dict.fromkeys(SITE_KINDS[1:], self._parallel))
            self._parts[layer] = parts
        return self._parts[layer]

    def _rules(self, layer: int, module: nn.Module) -> dict[str, str | None]:
        family = self.family
        if family is None:
            return {}
        rules = {key: value for key, value in (("attn_out", family.attn_out), ("mlp_out", family.mlp_out))
                 if value is not None}
        if family.mlp_out is not None:
            rules["gate_act"] = family.gate_act
        if family.per_layer is not None:
            extra = family.per_layer(layer, module) if callable(family.per_layer) else \
                family.per_layer.get(type(module).__name__, {})
            rules.update(extra or {})
        return rules

    def _apply_rules(self, parts: LayerParts, rules: dict[str, str | None], layer: int, module: nn.Module) -> None:
        """Table and registered paths replace what discovery found (a missing path: the part is absent)."""
        kind = type(module).__name__

        def present(path: str | None, what: str, site: str) -> bool:
            if path is None:
                parts.reasons[site] = f"{kind} has no {what} (registered for {self.model_type!r})"
                return False
            try:
                module.get_submodule(path)
                return True
            except AttributeError:
                parts.reasons[site] = f"{kind} has no {what} at {path!r}, the path given for {self.model_type!r}"
                return False

        if "attn_out" in rules:
            parts.attn = rules["attn_out"] if present(rules["attn_out"], "attention output projection", "attn") else None
            if parts.attn is not None:
                parts.reasons.pop("attn", None)
                block = module.get_submodule(parts.attn.rsplit(".", 1)[0]) if "." in parts.attn else module
                parts.n_heads = heads_of(block, self.n_heads)
        if "mlp_out" in rules:
            if present(rules["mlp_out"], "MLP down projection", "mlp"):
                gate = rules.get("gate_act")
                found = parts.mlp if parts.mlp is not None and parts.mlp.down == rules["mlp_out"] else None
                parts.mlp = MlpParts(rules["mlp_out"], gate is not None, gate, found.inputs if found else (),
                                     found.fused if found else False)
                parts.reasons.pop("mlp", None)
                parts.reasons.pop("mlp_gate", None)
                if gate is not None and not present(gate, "MLP gate activation", "mlp_gate"):
                    parts.mlp = MlpParts(rules["mlp_out"], True, None)
            else:
                parts.mlp = None
                parts.reasons["mlp_gate"] = parts.reasons["mlp"]
        if "ssm" in rules:
            parts.ssm = rules["ssm"] if present(rules["ssm"], "state-space mixer", "ssm") else None
            if parts.ssm is not None:
                parts.reasons.pop("ssm", None)

    # -- availability ---------------------------------------------------------------------------
    def reason(self, layer: int, kind: str) -> str | None:
        """Why layer `layer` has no site of `kind` (None when it has one)."""
        if layer in self._idle:
            return f"layer {layer}: {self._idle[layer]}"
        if kind == "residual":
            shape = self._shapes.get(layer)
            return f"layer {layer}: {shape.reason}" if shape is not None and shape.reason else None
        parts = self.parts(layer)
        has = {"mlp": parts.mlp is not None, "attn": parts.attn is not None, "ssm": parts.ssm is not None,
               "expert": parts.moe is not None and self._experts_readable(layer),
               "router": parts.moe is not None and parts.moe.router is not None,
               "shared_expert": parts.moe is not None and parts.moe.shared is not None,
               "mlp_gate": parts.mlp is not None and (not parts.mlp.gated or parts.mlp.gate_act is not None)}
        if has[kind] and kind == "attn" and self._attention_calls.get(layer, 1) > 1:
            return (f"layer {layer}: its attention output projection {parts.attn} runs "
                    f"{self._attention_calls[layer]} times per forward pass (once per stream), so a head has no "
                    "single output per token")
        if has[kind] and kind == "mlp_gate" and parts.mlp.gated:
            failed = self.gate_checks().get(layer)
            if failed:
                return failed
        if has[kind]:
            return None
        return f"layer {layer}: {parts.reasons.get(kind, 'not found')}"

    def _experts_readable(self, layer: int) -> bool:
        """Fused experts are probed once: their output must be what neuroloc computes from their neurons
        (and `down_order` finds where their own code hands the neurons to the down projection)."""
        parts = self.parts(layer)
        if parts.moe.fused and "expert" not in parts.reasons and layer not in self._experts_checked:
            from .moe import check_fused, down_order, experts_reader
            reader = experts_reader(self, layer)
            failed = check_fused(reader, self.hidden_size)
            self._experts_checked.add(layer)
            if failed:
                parts.reasons["expert"] = failed
            else:
                down_order(reader, self.hidden_size)
        return "expert" not in parts.reasons

    def has(self, layer: int, kind: str) -> bool:
        return self.reason(layer, kind) is None

    def availability(self) -> dict[str, dict]:
        """Per site kind: the layers that have it and their width, or why no layer has it — what
        `neuroloc info` prints. Widths are per site (`expert`: per expert; `attn`: heads)."""
        table = {}
        for kind in SITE_KINDS:
            layers = [i for i in range(self.n_layers) if self.has(i, kind)]
            if layers:
                widths = sorted({self.width(s) for s in self.sites(kind, layers)})
                entry = {"layers": layers, "width": widths[0] if len(widths) == 1 else widths,
                         "meaning": KIND_MEANINGS[kind]}
                if kind == "expert":
                    entry["experts"] = sorted({self.parts(i).moe.n_experts for i in layers})
                    entry["experts"] = entry["experts"][0] if len(entry["experts"]) == 1 else entry["experts"]
                if len(layers) < self.n_layers:
                    entry["absent"] = self._reasons(kind, [i for i in range(self.n_layers) if i not in layers])
                table[kind] = entry
            else:
                table[kind] = {"unavailable": self._reasons(kind, range(self.n_layers))}
        return table

    def _reasons(self, kind: str, layers: Iterable[int]) -> str:
        """One line: the distinct reasons, each with the layers it applies to."""
        by_reason: dict[str, list[int]] = {}
        for layer in layers:
            text = self.reason(layer, kind).split(": ", 1)[-1]
            by_reason.setdefault(text, []).append(layer)
        return "; ".join(f"{_span(ls)}: {text}" for text, ls in by_reason.items())

    def table(self) -> str:
        """`availability()` as text, one line per site kind: where it is and how wide, or why it is not
        there (what `neuroloc info` prints)."""
        lines = [f"{self.model_type}: {self.n_layers} layers, hidden size {self.hidden_size}"]
        for kind, entry in self.availability().items():
            if "unavailable" in entry:
                lines.append(f"  {kind:<14} unavailable — {entry['unavailable']}")
                continue
            width = entry["width"]
            units = f"{entry['experts']} experts × {width} neurons" if kind == "expert" else \
                f"{width} {'heads' if kind == 'attn' else 'units'}"
            line = f"  {kind:<14} {_span(entry['layers'])}: {units} — {entry['meaning']}"
            if "absent" in entry:
                line += f" (absent in {entry['absent']})"
            lines.append(line)
        lines.append(f"  mlp_gate holds: {self.gate_description()}")
        return "\n".join(lines)

    def available_kinds(self) -> list[str]:
        return [kind for kind in SITE_KINDS if any(self.has(i, kind) for i in range(self.n_layers))]

    # -- sites ----------------------------------------------------------------------------------
    def sites(self, kinds: str | Iterable[str] | None = None, layers: Iterable[int] | None = None) -> list[Site]:
        """The sites of `kinds` (all kinds the model has when None) in `layers`, ordered by layer, kind and
        expert. A kind asked for by name that no chosen layer has is an error saying why."""
        explicit = kinds is not None
        kinds = list(SITE_KINDS) if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
        for kind in kinds:
            Site(0, kind, 0 if kind == "expert" else None)  # validates the kind
        chosen = range(self.n_layers) if layers is None else sorted(set(layers))
        for layer in chosen if layers is not None else ():
            self.check(Site(layer, "residual"))
        found = []
        for kind in kinds:
            here = [layer for layer in chosen if self.has(layer, kind)]
            if explicit and not here:
                raise NeurolocError(f"model type {self.model_type!r} has no {kind!r} site"
                                    f"{' in the layers asked for' if layers is not None else ''}: "
                                    f"{self._reasons(kind, chosen)}")
            for layer in here:
                if kind == "expert":
                    found.extend(Site(layer, kind, e) for e in range(self.parts(layer).moe.n_experts))
                else:
                    found.append(Site(layer, kind))
        return sorted(found)

    def check(self, site: Site) -> Site:
        """`site` itself, when the model has it; else an error naming why not."""
        if not 0 <= site.layer < self.n_layers:
            raise NeurolocError(
                f"site {site.name}: layer {site.layer} does not exist; the model has layers 0..{self.n_layers - 1}"
            )
        why = self.reason(site.layer, site.kind)
        if why:
            raise NeurolocError(f"site {site.name} does not exist in model type {self.model_type!r}: {why}")
        if site.kind == "expert" and not site.expert < self.parts(site.layer).moe.n_experts:
            raise NeurolocError(f"site {site.name}: layer {site.layer} has experts 0..{self.parts(site.layer).moe.n_experts - 1}")
        return site

    def width(self, site: Site | str) -> int:
        """Number of units at a site (attention: heads; expert: one expert's neurons). Given a kind, the
        width its sites share (an error when it differs between layers: ask per site)."""
        if isinstance(site, str):
            widths = {self.width(s) for s in self.sites(site)}
            if len(widths) > 1:
                raise NeurolocError(f"model type {self.model_type!r}: the {site!r} sites differ in width between "
                                    f"layers ({sorted(widths)}); ask for the width of one site")
            return widths.pop()
        self.check(site)
        parts = self.parts(site.layer)
        layer = self.layers[site.layer]
        if site.kind == "residual" and site.layer in self._shapes:
            return self._shapes[site.layer].width
        if site.kind in ("residual", "ssm"):
            return self.hidden_size
        if site.kind in ("mlp", "mlp_gate"):
            return linear_dims(layer.get_submodule(parts.mlp.down))[0]
        if site.kind == "attn":
            return parts.n_heads
        if site.kind == "router":
            return parts.moe.n_experts
        if site.kind == "shared_expert":
            return linear_dims(layer.get_submodule(parts.moe.shared.down))[0]
        from .moe import experts_reader
        return experts_reader(self, site.layer).width

    def head_dim_at(self, layer: int) -> int:
        parts = self.parts(layer)
        return linear_dims(self.layers[layer].get_submodule(parts.attn))[0] // parts.n_heads

    @property
    def head_dim(self) -> int | None:
        """Width of one head's output (the same in every attention layer), or None without attention."""
        dims = {self.head_dim_at(i) for i in range(self.n_layers) if self.has(i, "attn")}
        if len(dims) > 1:
            raise NeurolocError(f"model type {self.model_type!r}: head widths differ between layers ({sorted(dims)})")
        return dims.pop() if dims else None

    def coordinate_width(self, site: Site | str) -> int:
        """Width of the hooked tensor's last dimension (attention: heads × head_dim)."""
        kind = site if isinstance(site, str) else site.kind
        if kind == "attn":
            layer = self.sites("attn")[0].layer if isinstance(site, str) else site.layer
            return self.width(site) * self.head_dim_at(layer)
        return self.width(site)

    def module(self, site: Site) -> nn.Module:
        """The module to hook (see `reads_output`); for `expert` sites the experts, for `router` the router.
        Answered once per site (hooks are installed for every batch)."""
        if site not in self._modules:
            self._modules[site] = self._module(site)
        return self._modules[site]

    def _module(self, site: Site) -> nn.Module:
        self.check(site)
        parts, layer = self.parts(site.layer), self.layers[site.layer]
        path = {"residual": "", "ssm": parts.ssm, "attn": parts.attn,
                "mlp": parts.mlp and parts.mlp.down, "mlp_gate": parts.mlp and (parts.mlp.gate_act or parts.mlp.down),
                "shared_expert": parts.moe and parts.moe.shared and parts.moe.shared.down,
                "expert": parts.moe and parts.moe.experts, "router": parts.moe and parts.moe.router}[site.kind]
        return layer.get_submodule(path) if path else layer

    def layer_shape(self, layer: int) -> LayerShape | None:
        """How a layer's output holds its tokens (`models/streams.py`); None for one (tokens, hidden) row
        per token, batch first."""
        return self._shapes.get(layer)

    def reads_output(self, site: Site) -> bool:
        """Whether the site is its module's output (residual, ssm, a gated MLP's activation) or its first
        input (`mlp`, `attn`, `shared_expert`, and `mlp_gate` of an MLP without a gate)."""
        if site.kind in ("residual", "ssm"):
            return True
        return site.kind == "mlp_gate" and self.parts(site.layer).mlp.gated

    # -- gates, checked --------------------------------------------------------------------------
    def gate_checks(self) -> dict[int, str | None]:
        """Per layer with a gated MLP: None when a probe forward pass confirmed that the down projection's
        input is act(gate) × up with act(gate) the hooked activation's output, else what failed."""
        if self._gate_checks is None:
            from .gates import check_gates
            self._gate_checks = {}  # while the probe runs, no layer counts as failed
            self._gate_checks = check_gates(self)
        return self._gate_checks

    # -- compatibility views ----------------------------------------------------------------------
    def _first(self, part: str) -> int | None:
        return next((i for i in range(self.n_layers) if getattr(self.parts(i), part) is not None), None)

    @property
    def paths(self) -> FamilyPaths:
        """The paths of the first layer with an MLP / attention (the whole story for uniform models)."""
        mlp_layer, attn_layer = self._first("mlp"), self._first("attn")
        mlp = self.parts(mlp_layer).mlp if mlp_layer is not None else None
        return FamilyPaths(self.layers_path, mlp and mlp.down, self.parts(attn_layer).attn if attn_layer is not None
                           else None, mlp and mlp.gate_act)

    @property
    def mlp_modules(self) -> list[nn.Module | None]:
        return [self.layers[i].get_submodule(self.parts(i).mlp.down) if self.parts(i).mlp else None
                for i in range(self.n_layers)]

    @property
    def attn_modules(self) -> list[nn.Module | None]:
        return [self.layers[i].get_submodule(self.parts(i).attn) if self.parts(i).attn else None
                for i in range(self.n_layers)]

    @property
    def gate_modules(self) -> list[nn.Module | None]:
        return [self.module(Site(i, "mlp_gate")) if self.has(i, "mlp_gate") else None for i in range(self.n_layers)]

    @property
    def gated(self) -> bool:
        """Whether every MLP of the model is gated."""
        mlps = [self.parts(i).mlp for i in range(self.n_layers) if self.parts(i).mlp is not None]
        return bool(mlps) and all(m.gated for m in mlps)

    @property
    def mlp_width(self) -> int:
        return self.width("mlp")

    def gate_description(self) -> str:
        """What `mlp_gate` holds in this model, as checked (recorded in manifests)."""
        layers = [i for i in range(self.n_layers) if self.parts(i).mlp is not None]
        if not layers:
            return f"no MLP site: {self._reasons('mlp', range(self.n_layers))}"
        gated = [i for i in layers if self.parts(i).mlp.gated]
        if not gated:
            return "MLP post-activation (the MLP has no gate: one input projection)"
        failed = {i: self.reason(i, "mlp_gate") for i in gated if self.reason(i, "mlp_gate")}
        if failed:
            return f"unavailable where unchecked: {self._reasons('mlp_gate', failed)}"
        text = "act(gate) of a gated MLP (checked: the down projection's input = act(gate) × up on a probe input)"
        if len(gated) < len(layers):
            text += f" in {_span(gated)}; MLP post-activation (no gate) in {_span([i for i in layers if i not in gated])}"
        return text

    def describe(self) -> dict:
        """The model's sites: kinds with layers and widths, the absent kinds with reasons, what
        `mlp_gate` holds, and the paths of a first layer."""
        availability = self.availability()
        try:
            head_dim = self.head_dim
        except NeurolocError:
            head_dim = "differs by layer"
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "widths": {kind: entry["width"] for kind, entry in availability.items() if "width" in entry},
            "head_dim": head_dim,
            "paths": {k: v for k, v in vars(self.paths).items() if k != "per_layer"},
            "mlp_gate": self.gate_description(),
            "sites": {kind: entry for kind, entry in availability.items() if "unavailable" not in entry},
            "unavailable": {kind: entry["unavailable"] for kind, entry in availability.items() if "unavailable" in entry},
        }


def _span(layers: list[int]) -> str:
    """'layers 0-3, 7' style summary."""
    layers = sorted(layers)
    runs, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            runs.append(f"{start}" if start == layer else f"{start}-{layer}")
            start = None
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(runs)
