"""Find what one decoder layer holds, by structure: attention, a dense MLP (gated or not), a mixture of
experts (router, experts, shared expert), a state-space / recurrent mixer.

Each part is found independently: a part discovery cannot pin down is absent *with a reason*, and its
absence never hides the others. Paths are dotted module paths inside the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from torch import nn

# Token mixers that are not softmax attention; matched on class names (outermost match wins).
MIXER_CLASS = re.compile(r"mamba|mixer|ssm|rglru|recurrentblock|deltanet|delta_net|deltaattention|linearattention|"
                         r"shortconv|lstm|rwkv|retention|hyena|lightning", re.IGNORECASE)
ATTENTION_CLASS = re.compile(r"attention|attn", re.IGNORECASE)
NOT_A_BLOCK = re.compile(r"norm|rotary|embedding|dropout|activation|cache", re.IGNORECASE)
# Query/key/value projections also map hidden → hidden; the output projection is none of them.
INPUT_PROJECTION = re.compile(r"(^|\.|_)(q|k|v|qkv|query|key|value|query_key_value|c_attn|wqkv|qkv_proj|in_proj)"
                              r"(_proj)?$")
OUTPUT_NAMES = re.compile(r"(^|\.)(o_proj|out_proj|dense|c_proj|wo|o|output|proj|linear_out)$")
DOWN_NAMES = re.compile(r"down|fc2|fc_out|c_proj|4h_to_h|w2|wo|out|output")
GATE_NAMES = re.compile(r"gate|w1|wi_0")
CROSS_NAMES = re.compile(r"cross|encoder_attn")


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a Linear (or a subclass, e.g. quantized linears) or GPT-2 style Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None:
        return weight.shape[0], weight.shape[1]
    return None


def is_activation(module: nn.Module) -> bool:
    """An activation module: torch.nn's activations or transformers' (`ACT2CLS`)."""
    if type(module).__module__ == "torch.nn.modules.activation":
        return True
    from transformers.activations import ACT2CLS

    classes = {c[0] if isinstance(c, tuple) else c for c in ACT2CLS.values()}
    return isinstance(module, tuple(classes)) or type(module).__name__.endswith("Activation")


def _within(path: str, roots: list[str]) -> bool:
    return any(root == "" or path == root or path.startswith(root + ".") for root in roots)


def _outermost(paths: list[str]) -> list[str]:
    return [p for p in paths if not any(q != p and p.startswith(q + ".") for q in paths)]


@dataclass(frozen=True)
class MlpParts:
    """A feed-forward block: its down projection (input = the neurons), the activation module whose output
    is act(gate) when the MLP is gated, and how its input projections look."""

    down: str
    gated: bool
    gate_act: str | None = None
    inputs: tuple[str, ...] = ()
    fused: bool = False


@dataclass(frozen=True)
class MoeParts:
    """A mixture-of-experts block: the block, its experts (`fused`: one module with 3-D weights, else a
    ModuleList of expert MLPs whose down projection is `expert_down`), its router and shared expert."""

    block: str
    experts: str
    fused: bool
    n_experts: int
    router: str | None
    expert_down: str | None = None
    shared: MlpParts | None = None


@dataclass
class LayerParts:
    """What one layer holds (paths inside the layer) and, per absent part, why."""

    attn: str | None = None
    n_heads: int | None = None
    mlp: MlpParts | None = None
    moe: MoeParts | None = None
    ssm: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


# -- MLPs ------------------------------------------------------------------------------------------------
def _mlp_in(parent: nn.Module, parent_path: str, hidden: int, excluded: list[str]) -> list[MlpParts]:
    """Candidate MLPs whose projections are direct children of `parent`."""
    linears = {name: dims for name, child in parent.named_children()
               if (dims := linear_dims(child)) is not None and not _within(_join(parent_path, name), excluded)}
    found = []
    for down, (width, out) in linears.items():
        if out != hidden:
            continue
        ins = {n: d for n, d in linears.items() if n != down and d[0] == hidden}
        plain = [n for n, d in ins.items() if d[1] == width]
        fused = [n for n, d in ins.items() if d[1] == 2 * width]
        acts = [n for n, child in parent.named_children() if is_activation(child)]
        act = _join(parent_path, acts[0]) if len(acts) == 1 else None
        if len(plain) == 2:
            found.append(MlpParts(_join(parent_path, down), True, act, tuple(_join(parent_path, n) for n in plain)))
        elif len(plain) == 1 and not fused:
            found.append(MlpParts(_join(parent_path, down), False, None, (_join(parent_path, plain[0]),)))
        elif len(fused) == 1 and not plain:
            found.append(MlpParts(_join(parent_path, down), True, act, (_join(parent_path, fused[0]),), fused=True))
    if len(found) > 1:  # e.g. hidden == intermediate: names decide which projection comes down
        named = [m for m in found if DOWN_NAMES.search(m.down.rsplit(".", 1)[-1])]
        found = named if named else found
    return found


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1:] if root else path


def _prefixed(mlp: MlpParts, root: str) -> MlpParts:
    """`mlp` with its paths (relative to `root`) made relative to root's parent."""
    return replace(mlp, down=_join(root, mlp.down), gate_act=mlp.gate_act and _join(root, mlp.gate_act),
                   inputs=tuple(_join(root, i) for i in mlp.inputs))


def find_mlps(root: nn.Module, hidden: int, excluded: list[str]) -> list[MlpParts]:
    """Every MLP inside `root` outside the `excluded` subtrees: projections that are siblings, or else
    (BERT's `intermediate.dense` / `output.dense`) the one pair of projections hidden → I → hidden."""
    found = []
    for path, module in root.named_modules():
        if path and _within(path, excluded):
            continue
        found.extend(_mlp_in(module, path, hidden, excluded))
    return found or _split_mlp(root, hidden, excluded)


def _split_mlp(root: nn.Module, hidden: int, excluded: list[str]) -> list[MlpParts]:
    linears = {path: dims for path, module in root.named_modules()
               if path and not _within(path, excluded) and (dims := linear_dims(module)) is not None}
    found = []
    for down, (width, out) in linears.items():
        if out != hidden or width == hidden:
            continue
        ups = [p for p, d in linears.items() if d[0] == hidden and d[1] in (width, 2 * width)]
        if len(ups) != 1:
            continue
        gated = linears[ups[0]][1] == 2 * width
        acts = [p for p, m in root.named_modules() if p and not _within(p, excluded) and is_activation(m)]
        found.append(MlpParts(down, gated, acts[0] if gated and len(acts) == 1 else None, (ups[0],), fused=gated))
    return found


def _describe_mlps(mlps: list[MlpParts]) -> str:
    return ", ".join(m.down for m in mlps) or "none"


# -- mixtures of experts -------------------------------------------------------------------------------
def is_fused_experts(module: nn.Module) -> bool:
    """transformers' fused experts (`use_experts_implementation`): 3-D `down_proj` and `gate_up_proj` or
    `up_proj` parameters, `num_experts`, and the attributes that say how they are laid out."""
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", None) if getattr(module, "has_gate", False) else getattr(module, "up_proj", None)
    return (isinstance(down, nn.Parameter) and down.ndim == 3 and isinstance(up, nn.Parameter) and up.ndim == 3
            and isinstance(getattr(module, "num_experts", None), int) and hasattr(module, "is_transposed"))


def _router(block: nn.Module, block_path: str, experts: str, n_experts: int, hidden: int,
            router_classes: tuple[type, ...]) -> str | None:
    candidates = []
    for path, module in block.named_modules():
        full = _join(block_path, path)
        if not path or _within(full, [experts]):
            continue
        if router_classes and isinstance(module, router_classes):
            return full
        dims = linear_dims(module)
        weight = getattr(module, "weight", None)
        if dims == (hidden, n_experts) or (dims is None and isinstance(weight, nn.Parameter)
                                            and tuple(weight.shape) == (n_experts, hidden)):
            candidates.append(full)
    candidates = _outermost(candidates)
    return candidates[0] if len(candidates) == 1 else None


def find_moe(layer: nn.Module, hidden: int, router_classes: tuple[type, ...]) -> tuple[MoeParts | None, str | None]:
    """The layer's mixture-of-experts block, or (None, why an `experts` module could not be read)."""
    unread = None
    for path, module in layer.named_modules():
        if not path:
            continue
        fused = is_fused_experts(module)
        expert_mlps: list[MlpParts] = []
        if not fused and isinstance(module, nn.ModuleList) and len(module) > 1 and path.rsplit(".", 1)[-1].startswith("expert"):
            expert_mlps = find_mlps(module[0], hidden, [])
            if len(expert_mlps) != 1 or len({type(m) for m in module}) != 1:
                unread = f"{path} holds {len(module)} modules that are not one MLP each"
                continue
        elif not fused:
            if re.fullmatch(r"experts?", path.rsplit(".", 1)[-1]) and unread is None and \
                    any(p.ndim == 3 for p in module.parameters(recurse=False)):
                unread = (f"{path} ({type(module).__name__}) stores its experts in a layout neuroloc does not read "
                          f"(neither transformers' experts interface nor one module per expert)")
            continue
        n_experts = module.num_experts if fused else len(module)
        block_path = path.rsplit(".", 1)[0] if "." in path else ""
        block = layer.get_submodule(block_path) if block_path else layer
        router = _router(block, block_path, path, n_experts, hidden, router_classes)
        if router is not None:
            from .moe import router_weight_shape
            if router_weight_shape(layer.get_submodule(router), n_experts) is None:
                router = None
        relative = [_relative(p, block_path) for p in (path, router) if p]
        shared = [_prefixed(m, block_path) for m in find_mlps(block, hidden, relative)] if block_path else []
        return MoeParts(block_path, path, fused, n_experts, router,
                        None if fused else expert_mlps[0].down, shared[0] if len(shared) == 1 else None), None
    return None, unread


# -- attention and mixers --------------------------------------------------------------------------------
def heads_of(module: nn.Module, default: int | None) -> int | None:
    for name in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
        value = getattr(module, name, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(module, "config", None)
    value = getattr(config, "num_attention_heads", None) if config is not None and \
        not _ambiguous(config, "num_attention_heads") else None
    return value if isinstance(value, int) and value > 0 else default


def _ambiguous(config, name: str) -> bool:
    try:
        getattr(config, name, None)
        return False
    except RuntimeError:  # transformers' per-layer attributes refuse a global read
        return True


def find_attention(layer: nn.Module, hidden: int, n_heads: int | None,
                   attention_classes: tuple[type, ...]) -> tuple[str | None, int | None, str | None]:
    """(path of the attention output projection, heads, reason when absent)."""
    blocks = [p for p, m in layer.named_modules() if p and (
        isinstance(m, attention_classes) if attention_classes else
        ATTENTION_CLASS.search(type(m).__name__) and not MIXER_CLASS.search(type(m).__name__)
        and not NOT_A_BLOCK.search(type(m).__name__))
              and not isinstance(m, nn.ModuleList)]
    blocks = _outermost(blocks)
    own = [p for p in blocks if not CROSS_NAMES.search(p)]
    blocks = own or blocks
    if not blocks:
        return None, None, "no attention block"
    if len(blocks) > 1:
        return None, None, f"several attention blocks ({', '.join(blocks)})"
    path = blocks[0]
    block = layer.get_submodule(path)
    heads = heads_of(block, n_heads)
    if heads is None:
        return None, None, f"attention block {path} ({type(block).__name__}) does not say its head count"
    while True:  # the block's output projection, or its parent's (BERT: attention.self → attention.output.dense)
        outs = _output_projections(layer.get_submodule(path) if path else layer, hidden, heads)
        if outs or "." not in path:
            break
        path = path.rsplit(".", 1)[0]
    if len(outs) != 1:
        return None, None, (f"attention block {blocks[0]} ({type(block).__name__}) has output projection candidates "
                            f"{outs or 'none'}")
    return _join(path, outs[0]), heads, None


def _output_projections(block: nn.Module, hidden: int, heads: int) -> list[str]:
    outs = []
    for name, module in block.named_modules():
        dims = linear_dims(module)
        if dims and dims[1] == hidden and dims[0] % heads == 0 and not INPUT_PROJECTION.search(name):
            outs.append(name)
    if len(outs) > 1:
        outs = [n for n in outs if OUTPUT_NAMES.search(n)] or outs
    return outs


def find_mixer(layer: nn.Module, excluded: list[str]) -> str | None:
    """The outermost state-space / recurrent token mixer (by class name), when exactly one."""
    found = _outermost([p for p, m in layer.named_modules()
                        if p and MIXER_CLASS.search(type(m).__name__) and not NOT_A_BLOCK.search(type(m).__name__)
                        and not _within(p, excluded)
                        and not isinstance(m, nn.ModuleList)])
    return found[0] if len(found) == 1 else None


def _attention_block(layer: nn.Module, attn_out: str | None) -> str | None:
    """The outermost attention-named module holding the output projection (BERT's `attention`, which holds
    `attention.output.dense`), or the projection's parent."""
    if attn_out is None or "." not in attn_out:
        return None
    parts = attn_out.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if ATTENTION_CLASS.search(type(layer.get_submodule(prefix)).__name__) or ATTENTION_CLASS.search(parts[i - 1]):
            return prefix
    return attn_out.rsplit(".", 1)[0]


def discover_layer(layer: nn.Module, hidden: int, n_heads: int | None, *, attention_classes: tuple[type, ...] = (),
                   router_classes: tuple[type, ...] = ()) -> LayerParts:
    """Everything discovery can say about one layer (paths relative to it), with reasons for the rest."""
    parts = LayerParts()
    kind = type(layer).__name__
    parts.attn, parts.n_heads, reason = find_attention(layer, hidden, n_heads, attention_classes)
    if reason:
        parts.reasons["attn"] = f"{kind} has {reason}" if reason.startswith("no ") else reason
    attention_block = _attention_block(layer, parts.attn)
    parts.moe, unread = find_moe(layer, hidden, router_classes)
    excluded = [p for p in (attention_block, parts.moe.block if parts.moe else None) if p]
    parts.ssm = find_mixer(layer, excluded)
    if parts.ssm is None:
        parts.reasons["ssm"] = f"{kind} has no state-space or recurrent mixer"
    if parts.moe is None:
        why = unread or f"{kind} has no mixture of experts"
        for name in ("expert", "router", "shared_expert"):
            parts.reasons[name] = why
    else:
        parts.reasons.pop("expert", None)
        if parts.moe.router is None:
            parts.reasons["router"] = f"no single router module (a {parts.moe.n_experts}-way linear map) in {parts.moe.block}"
        if parts.moe.shared is None:
            parts.reasons["shared_expert"] = f"the mixture of experts {parts.moe.block or kind} has no shared expert"
    mlps = find_mlps(layer, hidden, [p for p in (*excluded, parts.ssm) if p])
    if parts.moe is not None and parts.moe.block == "":
        mlps = []
    if len(mlps) == 1:
        parts.mlp = mlps[0]
        if parts.mlp.gated and parts.mlp.gate_act is None:
            parts.reasons["mlp_gate"] = (f"the gated MLP around {parts.mlp.down} applies its activation without an "
                                         "activation module neuroloc could hook")
    else:
        if parts.moe is not None:
            why = (f"the feed-forward block {parts.moe.block or kind} is a mixture of experts: use the 'expert', "
                   "'router' and 'shared_expert' sites")
        elif mlps:
            why = f"several MLP candidates ({_describe_mlps(mlps)})"
        else:
            why = f"{kind} has no MLP"
        parts.reasons["mlp"] = parts.reasons["mlp_gate"] = why
    return parts
