"""Mixture-of-experts sites on the unmodified model: expert neurons and router probabilities.

Experts come in two layouts. transformers 5 fuses them into one module with 3-D weights (the experts
interface, `use_experts_implementation`): it is called with the tokens, their top-k expert indices and
weights, and computes act(gate)·up and the down projection inside one forward, so no module boundary
exposes an expert's neurons. Where the module's own code passes every routed (token, expert) row to its
down projection in one call — transformers' `grouped_mm` (rows grouped by the sort of the routing) and
`batched_mm` (rows in token order) implementations — neuroloc catches that call's input while the module
runs (a torch function mode: the first operation taking the down weight, or a view or selection of it,
and another floating tensor), reads the neurons there without computing anything twice, and an edit is
handed to the model's own down projection and mixing. Which order a module's rows take is found once per
module on a probe through its bare forward (`down_order`), checked against the hidden layer computed from
its weights. Otherwise (the eager loop over experts) neuroloc hooks the module's forward, takes the
routing from its arguments and recomputes each routed pair's hidden layer with the module's own weights
and its own `_apply_gate` / `act_fn` — the model's code, not a copy; an edit there changes the experts'
output by Σ weight × (down(h') − down(h)) over the edited pairs. Older and remote-code models hold one MLP module
per expert: there the expert's down projection is hooked directly, and its rows are matched back to
their tokens by their exact input rows (whatever order the block fed them in).

A token is routed to an expert where a routing slot names the expert with a nonzero weight: the
expert's neurons are recorded (and edited) on exactly the tokens it computes on and adds to the output. A
slot of weight 0 adds nothing whatever the expert computes there — LongCat-Flash sends a token to a
zero-computation (identity) expert by pointing the slot at a real expert's index with weight 0, so one
token may even name that expert twice — and is left out (`_spans`; the eager path likewise). Per-expert
modules see the tokens their block hands them (the block's own routing decides).

Before use, fused experts are probed (`check_fused`): their own forward must equal Σ weight × down(h)
as computed here, else the `expert` site is unavailable with that reason (a family whose experts module
adds steps of its own).

Routers: the router's logits are caught as they are computed inside the router's forward (the first
result computed with the router's (m ≥ n_experts, d) weight; its first n_experts columns are the
experts' logits, the rest e.g. shared experts' gates), so an edit reaches the model's own top-k and
normalisation. Observers see p = softmax over the experts' logits; an edited p' goes back as
logits + log(p'/p) — p' = 0 masks the expert out (−∞), and an unchanged p leaves the logits untouched.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import NeurolocError
from .discovery import linear_dims

Apply = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # (value, routed mask) -> value
Rows = Callable[[torch.Tensor, torch.Tensor], None]  # (routed rows, their flat token positions)
Wanted = dict[int, tuple[Apply, bool, "Rows | None"]]  # expert -> (apply, edits, rows observer)


class FusedExperts:
    """Read transformers' fused experts: per expert, the hidden layer and the down projection."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.n_experts = module.num_experts
        self.transposed = bool(module.is_transposed)
        down = module.down_proj  # (E, hidden, I), or (E, I, hidden) when transposed
        self.width = down.shape[1] if self.transposed else down.shape[2]

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = x @ weight if self.transposed else x @ weight.T
        return out + bias if bias is not None else out

    def hidden(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """The expert's hidden layer (its down projection's input) for rows `x` (n, hidden)."""
        m = self.module
        if m.has_gate:
            proj = self._linear(x, m.gate_up_proj[expert], m.gate_up_proj_bias[expert] if m.has_bias else None)
            return m._apply_gate(proj)
        return m.act_fn(self._linear(x, m.up_proj[expert], m.up_proj_bias[expert] if m.has_bias else None))

    def hidden_sorted(self, x: torch.Tensor, experts: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The hidden layers of rows `x` sorted by their `experts` (`counts[e]` rows each): one grouped
        matrix product where torch has one for these shapes (as transformers' own `grouped_mm` path), else
        expert by expert."""
        m = self.module
        weight = m.gate_up_proj if m.has_gate else m.up_proj
        bias = (m.gate_up_proj_bias if m.has_gate else m.up_proj_bias) if m.has_bias else None
        grouped = getattr(torch.nn.functional, "grouped_mm", None)
        if grouped is not None and x.shape[0]:
            try:
                offsets = torch.tensor(counts, device=x.device).cumsum(0).to(torch.int32)
                proj = grouped(x.to(weight.dtype), weight if self.transposed else weight.transpose(-2, -1), offs=offsets)
                if bias is not None:
                    proj = proj + bias[experts]
                return m._apply_gate(proj) if m.has_gate else m.act_fn(proj)
            except (RuntimeError, NotImplementedError):  # unaligned or unsupported shapes: one by one
                pass
        starts = [0]
        for count in counts:
            starts.append(starts[-1] + count)
        parts = [self.hidden(x[starts[e]:starts[e + 1]], e) for e in range(len(counts)) if counts[e]]
        return torch.cat(parts) if parts else x.new_zeros(0, self.width)

    def down(self, h: torch.Tensor, expert: int) -> torch.Tensor:
        """The expert's output for hidden rows `h` (before the routing weight)."""
        m = self.module
        out = self._linear(h, m.down_proj[expert], m.down_proj_bias[expert] if m.has_bias else None)
        return m.post_expert_norm(out) if getattr(m, "has_post_expert_norm", False) else out


class ModuleExperts:
    """Experts held as one MLP module each (a ModuleList); `down` is the path of the down projection."""

    def __init__(self, module: nn.ModuleList, down: str) -> None:
        self.module = module
        self.n_experts = len(module)
        self.down_path = down
        self.width = linear_dims(module[0].get_submodule(down))[0]


def check_fused(reader: FusedExperts, hidden: int) -> str | None:
    """None when the experts module's own forward, on a probe, equals Σ weight × down(hidden layer) as
    neuroloc computes it per expert (so recording and editing its neurons mean what they say); else why not."""
    module = reader.module
    parameter = module.down_proj
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, hidden, generator=generator).to(parameter.device, parameter.dtype)
    k = min(2, reader.n_experts)
    index = (torch.arange(3)[:, None] + torch.arange(k)[None]) % reader.n_experts
    weights = torch.rand(3, k, generator=generator).to(parameter.device, parameter.dtype)
    index = index.to(parameter.device)
    try:
        with torch.no_grad():
            own = module(x, index, weights)
            mine = torch.zeros_like(own)
            for slot in range(k):
                for e in index[:, slot].unique().tolist():
                    rows = index[:, slot] == e
                    mine[rows] += reader.down(reader.hidden(x[rows], e), e) * weights[rows, slot, None]
    except Exception as error:  # noqa: BLE001 - any failure: the layout cannot be read, say why
        return f"{type(module).__name__} could not be probed ({type(error).__name__}: {str(error)[:100]})"
    scale = float(own.abs().max()) or 1.0
    tolerance = 1e-4 if parameter.dtype == torch.float32 else 2e-2
    if float((own - mine).abs().max()) > tolerance * scale:
        return (f"{type(module).__name__}'s output is not Σ weight × down(hidden layer) of its experts "
                "(its forward adds steps of its own), so its neurons cannot be read or edited faithfully")
    return None


def experts_reader(layout, layer: int) -> FusedExperts | ModuleExperts:
    moe = layout.parts(layer).moe
    module = layout.layers[layer].get_submodule(moe.experts)
    return FusedExperts(module) if moe.fused else ModuleExperts(module, moe.expert_down)


def _block(layout, layer: int) -> nn.Module:
    moe = layout.parts(layer).moe
    return layout.layers[layer].get_submodule(moe.block) if moe.block else layout.layers[layer]


class _Shape:
    """The (batch, tokens) of the tokens entering a MoE block, recorded by a pre-hook on the block, so
    flattened rows can be shown as (batch, tokens, width) whatever the caller declared."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.hidden: torch.Tensor | None = None

    def pre_hook(self, _module, args, kwargs):
        hidden = args[0] if args else next(iter(kwargs.values()))
        self.shape = tuple(hidden.shape[:-1])
        self.hidden = hidden.reshape(-1, hidden.shape[-1])

    def tokens(self, n: int) -> tuple[int, ...]:
        if self.shape is not None and _numel(self.shape) == n:
            return self.shape if len(self.shape) == 2 else (1, n)
        return (1, n)


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


@functools.lru_cache(maxsize=None)
def _forward_signature(cls: type, forward) -> inspect.Signature:
    signature = inspect.signature(forward)
    return signature.replace(parameters=list(signature.parameters.values())[1:])  # bound: no self


def _signature(module: nn.Module) -> inspect.Signature:
    """The signature of a module's forward (as a bound method), read once per class and forward."""
    return _forward_signature(type(module), module.forward.__func__) if hasattr(module.forward, "__func__") \
        else inspect.signature(module.forward)


def _routing(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden states, top-k expert indices, top-k weights) from a fused experts call."""
    bound = _signature(module).bind(*args, **kwargs)
    values = list(bound.arguments.values())
    if len(values) < 3:
        raise NeurolocError(f"{type(module).__name__} was called without (hidden states, expert indices, weights); "
                            "neuroloc cannot read its routing")
    return values[0], values[1], values[2]


def install_experts(layout, layer: int, wanted: Wanted, handles: list) -> None:
    """Hooks for the `expert` sites of one layer: `wanted[e]` = (apply, edits, rows observer) for expert e;
    a rows observer takes the routed rows themselves, without a dense (batch, tokens, width) view."""
    reader = experts_reader(layout, layer)
    shape = _Shape()
    handles.append(_block(layout, layer).register_forward_pre_hook(shape.pre_hook, with_kwargs=True))
    if isinstance(reader, FusedExperts):
        order = down_order(reader, layout.hidden_size)
        if order is not None:
            _install_inside(reader, shape, wanted, order, handles)
            return
        handles.append(reader.module.register_forward_hook(_fused_hook(reader, shape, wanted), with_kwargs=True))
        handles.append(_Forget(reader.module))
    else:
        _install_module_experts(reader, shape, wanted, handles, _block(layout, layer))


# -- fused experts, read inside: the input of their own down projection ------------------------------------
class _DownInput(TorchFunctionMode):
    """While a fused experts module runs: the sort of its routing (the order it groups its rows in), when it
    sorts it, and the input of its down projection — the first operation taking both the down weight (or a
    view or selection of it) and another floating tensor — handed to `on_rows(input, sort)`, which may give
    back a replacement, so the model's own down projection runs on the edited neurons."""

    def __init__(self, weight: torch.Tensor, index: torch.Tensor, on_rows, *, once: bool = True) -> None:
        super().__init__()
        self.weights, self.index, self.on_rows, self.once = [weight], index, on_rows, once
        self.sort: tuple[torch.Tensor, torch.Tensor] | None = None
        self.seen = 0

    def _weight(self, t: torch.Tensor) -> bool:
        return any(t is w for w in self.weights)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.seen and self.once:  # past the down projection (found once on the probe): nothing to read
            return func(*args, **kwargs)
        # the weight (or a view of it) is the first or second argument of its views and of the projection
        if not any(self._weight(a) for a in args[:2]):
            out = func(*args, **kwargs)
            if self.sort is None and args and getattr(func, "__name__", "") == "sort" \
                    and isinstance(args[0], torch.Tensor) and self._routing(args[0]):
                self.sort = (out[0], out[1])
            return out
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        data = [t for t in tensors if not self._weight(t) and t.is_floating_point() and t.ndim >= 2]
        if not data:  # a view or selection of the weight (transpose, per-expert index)
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                self.weights.append(out)
            return out
        self.seen += 1
        new = self.on_rows(data[0], self.sort)
        if new is not None:
            swap = lambda a: new if a is data[0] else a  # noqa: E731
            args, kwargs = tuple(swap(a) for a in args), {key: swap(a) for key, a in kwargs.items()}
        return func(*args, **kwargs)

    def _routing(self, t: torch.Tensor) -> bool:
        return not t.is_floating_point() and t.numel() == self.index.numel() \
            and torch.equal(t.reshape(-1), self.index.reshape(-1))


# Per fused experts module: (its experts implementation, how its down projection's input rows are ordered:
# "sorted" by the sort of its routing, "flat" in (token, slot) order, or None: not readable inside).
_ORDER: "weakref.WeakKeyDictionary[nn.Module, tuple[object, str | None]]" = weakref.WeakKeyDictionary()


def _implementation(module: nn.Module) -> object:
    return getattr(getattr(module, "config", None), "_experts_implementation", None)


def down_order(reader: FusedExperts, hidden: int) -> str | None:
    """How the experts module's own down projection receives its rows, found once per module (and experts
    implementation) on a probe through its bare forward (no hooks run): "sorted" when it is one call over
    every routed (token, expert) pair grouped by the sort of the routing, "flat" when in (token, slot)
    order — each checked against the hidden layer neuroloc computes from the weights — else None (e.g. a
    loop over experts), and the hidden layer is then recomputed after the module runs."""
    module = reader.module
    cached = _ORDER.get(module)
    if cached is not None and cached[0] == _implementation(module):
        return cached[1]
    parameter = module.down_proj
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, hidden, generator=generator).to(parameter.device, parameter.dtype)
    k = min(2, reader.n_experts)
    index = ((torch.arange(5)[:, None] * 3 + torch.arange(k)[None]) % reader.n_experts).to(parameter.device)
    weights = torch.rand(5, k, generator=generator).to(parameter.device, parameter.dtype)
    try:
        with torch.no_grad():
            order = _probe_order(reader, parameter, x, index, weights)
    except Exception:  # noqa: BLE001 - not readable inside: the hidden layer is recomputed instead
        order = None
    _ORDER[module] = (_implementation(module), order)
    return order


def _probe_order(reader: FusedExperts, parameter: torch.Tensor, x: torch.Tensor, index: torch.Tensor,
                 weights: torch.Tensor) -> str | None:
    caught: list[tuple[torch.Tensor, tuple | None]] = []
    with _DownInput(parameter, index, lambda rows, sort: caught.append((rows, sort)), once=False):
        reader.module.forward(x, index, weights)
    if len(caught) != 1 or caught[0][0].numel() != index.numel() * reader.width:
        return None
    rows, sort = caught[0]
    rows, k = rows.reshape(index.numel(), reader.width), index.shape[-1]
    pair = sort[1] if sort is not None else torch.arange(index.numel(), device=x.device)
    flat = index.reshape(-1)[pair]
    expected = torch.cat([reader.hidden(x[pair[flat == e] // k], e) for e in range(reader.n_experts)])
    got = torch.cat([rows[flat == e] for e in range(reader.n_experts)])
    tolerance = 1e-4 if parameter.dtype == torch.float32 else 2e-2
    if float((expected - got).abs().max()) > tolerance * (float(expected.abs().max()) or 1.0):
        return None
    return "sorted" if sort is not None else "flat"


def _install_inside(reader: FusedExperts, shape: _Shape, wanted: Wanted, order: str, handles: list) -> None:
    """Hooks reading (and editing) the experts' neurons where the module's own code passes them to its down
    projection: no recomputation, and an edit runs through the model's own down projection and mixing."""
    module, experts, width = reader.module, sorted(wanted), reader.width
    signature = _signature(module)
    active: list[_DownInput] = []

    def on_rows(data: torch.Tensor, sort, *, x: torch.Tensor, index: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor | None:
        n, k = x.reshape(-1, x.shape[-1]).shape[0], index.shape[-1]
        if data.numel() != n * k * width or (order == "sorted" and sort is None):
            raise NeurolocError(f"{type(module).__name__} did not pass its {n}×{k} routed rows to its down "
                                "projection as it did on its probe; neuroloc cannot read its experts' neurons")
        rows = data.reshape(n * k, width)
        if order == "sorted":
            ids, pair = sort
        else:
            flat = index.reshape(-1)
            pair = torch.argsort(flat, stable=True)
            ids, rows = flat.index_select(0, pair), rows.index_select(0, pair)
        spans = _spans(ids, weights.reshape(-1).index_select(0, pair) != 0, reader.n_experts)
        token = pair // k
        batch_tokens = shape.tokens(n)
        edited = None
        for e in experts:
            apply, edits, observe_rows = wanted[e]
            at = spans[e]
            current = (edited if edited is not None else rows)[at]
            if observe_rows is not None:
                observe_rows(current, token[at])
                continue
            dense = current.new_zeros(n, width).index_copy_(0, token[at], current)
            routed = torch.zeros(n, dtype=torch.bool, device=current.device).index_fill_(0, token[at], True)
            new = apply(dense.view(*batch_tokens, width), routed.view(batch_tokens))
            if edits and new is not None and not _same(new, dense):
                edited = rows.clone() if edited is None else edited
                edited[at] = new.reshape(n, width).index_select(0, token[at]).to(edited.dtype)
        if edited is None:
            return None
        if order == "flat":
            edited = torch.empty_like(edited).index_copy_(0, pair, edited)
        return edited.reshape(data.shape)

    def enter(_module, args, kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        x, index, weights = list(bound.values())[:3]
        mode = _DownInput(module.down_proj, index, functools.partial(on_rows, x=x, index=index, weights=weights))
        mode.__enter__()
        active.append(mode)

    def leave(_module, _args, _kwargs, _output):
        if active:  # also when the forward raised (always_call): the mode never outlives the module
            mode = active.pop()
            mode.__exit__(None, None, None)
            if not mode.seen and _output is not None:
                raise NeurolocError(f"{type(module).__name__} never called its down projection (it did once on "
                                    "its probe); neuroloc cannot read its experts' neurons")

    # A hook installed later (a recording inside a lesion) enters its mode first, so the earlier one, inner,
    # edits before the later one sees the rows — as at a module boundary; modes leave in reverse order.
    handles.append(module.register_forward_pre_hook(enter, with_kwargs=True, prepend=True))
    handles.append(module.register_forward_hook(leave, with_kwargs=True, always_call=True))


# Per fused experts module, the hidden rows an earlier hook of the same pass left (edited or not), keyed
# by the identity of the pass's input: a hook installed later (a recording inside a lesion) sees the
# edited neurons, as it would at a module boundary, and edits on top of them.
_PASS: "weakref.WeakKeyDictionary[nn.Module, tuple[torch.Tensor, dict[int, torch.Tensor]]]" = weakref.WeakKeyDictionary()


class _Forget:
    """A handle whose removal drops the module's cached rows (hooks gone, nothing held)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def remove(self) -> None:
        _PASS.pop(self.module, None)


def _fused_hook(reader: FusedExperts, shape: _Shape, wanted: Wanted):
    experts = sorted(wanted)

    def hook(module, args, kwargs, output):
        x, index, weights = _routing(module, args, kwargs)
        cached = _PASS.get(module)
        known = cached[1] if cached is not None and cached[0] is x else {}
        _PASS[module] = (x, known)
        n, k = x.reshape(-1, x.shape[-1]).shape[0], index.shape[-1]
        flat = index.reshape(-1)
        token = torch.arange(n, device=flat.device).repeat_interleave(k)
        weight = weights.reshape(-1)
        chosen = torch.isin(flat, torch.tensor(experts, device=flat.device)) & (weight != 0)  # see `_spans`
        flat, token, weight = flat[chosen], token[chosen], weight[chosen]
        order = torch.argsort(flat, stable=True)
        flat, token, weight = flat[order], token[order], weight[order]
        counts = torch.bincount(flat, minlength=reader.n_experts).tolist()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        batch_tokens = shape.tokens(n)
        missing = [e for e in experts if e not in known]
        if missing:  # one grouped product for every expert not yet computed in this pass
            fresh = torch.isin(flat, torch.tensor(missing, device=flat.device))
            computed = reader.hidden_sorted(x.reshape(-1, x.shape[-1]).index_select(0, token[fresh]), flat[fresh],
                                            [counts[e] if e in missing else 0 for e in range(reader.n_experts)])
            offset = 0
            for e in missing:
                known[e] = computed[offset:offset + counts[e]]
                offset += counts[e]
        delta = None
        for e in experts:
            apply, edits, observe_rows = wanted[e]
            rows_at = slice(starts[e], starts[e + 1])
            tokens = token[rows_at]
            rows = known[e]
            if observe_rows is not None:
                observe_rows(rows, tokens)
                continue
            dense = rows.new_zeros(n, reader.width).index_copy_(0, tokens, rows)
            routed = torch.zeros(n, dtype=torch.bool, device=rows.device).index_fill_(0, tokens, True)
            new = apply(dense.view(*batch_tokens, reader.width), routed.view(batch_tokens))
            if edits and new is not None and not _same(new, dense):
                new_rows = new.reshape(n, reader.width).index_select(0, tokens)
                known[e] = new_rows
                change = (reader.down(new_rows, e) - reader.down(rows, e)) * weight[rows_at, None].to(rows.dtype)
                out = output.reshape(-1, output.shape[-1])
                delta = torch.zeros_like(out) if delta is None else delta
                delta.index_add_(0, tokens, change.to(out.dtype))
        if delta is not None:
            return (output.reshape(-1, output.shape[-1]) + delta).reshape(output.shape)
        return None

    return hook


def _spans(ids: torch.Tensor, live: torch.Tensor, n_experts: int) -> list[slice | torch.Tensor]:
    """Per expert, where its routed rows lie among rows sorted by expert `ids`: the rows whose routing
    weight is nonzero (`live`). A slot of weight 0 adds nothing to the output whatever the expert computes
    there — LongCat-Flash points its zero-computation (identity) experts' slots at a real expert's index
    with weight 0 — so that token is not routed to the expert. A slice where every row is live."""
    if bool(live.all()):
        kept, counts = None, torch.bincount(ids, minlength=n_experts).tolist()
    else:
        kept = live.nonzero().flatten()
        counts = torch.bincount(ids.index_select(0, kept), minlength=n_experts).tolist()
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    return [slice(starts[e], starts[e + 1]) if kept is None else kept[starts[e]:starts[e + 1]]
            for e in range(n_experts)]


def _same(new: torch.Tensor, old: torch.Tensor) -> bool:
    """Whether an editor handed back the value it was given (a view of it): nothing to write back."""
    return new.data_ptr() == old.data_ptr() and new.numel() == old.numel()


# -- per-expert modules ---------------------------------------------------------------------------------
_HASH: dict[tuple[int, torch.device], torch.Tensor] = {}


def _row_keys(x: torch.Tensor) -> torch.Tensor:
    """An exact integer key per row: a fixed random combination of the rows' bit patterns (no overflow)."""
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    raw = x.contiguous().view(bits).long()
    raw = raw & 0xFFFFFFFF if x.element_size() >= 4 else raw & 0xFFFF
    key = (x.shape[-1], x.device)
    if key not in _HASH:
        generator = torch.Generator().manual_seed(x.shape[-1])
        _HASH[key] = torch.randint(1, 2**15, (x.shape[-1],), generator=generator).to(x.device)
    return (raw * _HASH[key]).sum(-1)


def match_rows(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each row of `rows`, the index of an equal row of `table`, one-to-one (a row repeated k times in
    `rows` takes k distinct equal rows of `table`). Raises when a row has no partner."""
    if rows.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=rows.device)
    table_keys, row_keys = _row_keys(table), _row_keys(rows)
    sorted_keys, table_order = torch.sort(table_keys, stable=True)
    row_sorted, row_order = torch.sort(row_keys, stable=True)
    first = torch.searchsorted(row_sorted, row_sorted, right=False)
    rank = torch.arange(len(row_sorted), device=rows.device) - first
    start = torch.searchsorted(sorted_keys, row_sorted, right=False)
    position = (start + rank).clamp(max=len(sorted_keys) - 1)
    matched = torch.empty_like(row_order)
    matched[row_order] = table_order[position]
    if not torch.equal(table.index_select(0, matched), rows):
        raise NeurolocError("an expert's input rows do not match the tokens entering its mixture-of-experts block: "
                            "neuroloc cannot tell which tokens were routed to it")
    return matched


def _install_module_experts(reader: ModuleExperts, shape: _Shape, wanted: Wanted,
                            handles: list, block: nn.Module) -> None:
    ran: set[int] = set()
    tokens_of: dict[int, torch.Tensor] = {}

    def reset(_module, _args, _kwargs):
        ran.clear()

    def inputs(e: int):
        def pre(_module, args):
            tokens_of[e] = match_rows(args[0].reshape(-1, args[0].shape[-1]), shape.hidden)
        return pre

    def down(e: int):
        apply, edits, observe_rows = wanted[e]

        def pre(_module, args):
            ran.add(e)
            rows, tokens = args[0], tokens_of.pop(e)
            n = shape.hidden.shape[0]
            flat = rows.reshape(-1, rows.shape[-1])
            if observe_rows is not None:
                observe_rows(flat, tokens)
                return None
            dense = flat.new_zeros(n, flat.shape[-1]).index_copy_(0, tokens, flat)
            routed = torch.zeros(n, dtype=torch.bool, device=flat.device).index_fill_(0, tokens, True)
            batch_tokens = shape.tokens(n)
            new = apply(dense.view(*batch_tokens, flat.shape[-1]), routed.view(batch_tokens))
            if edits and new is not None and not _same(new, dense):
                return (new.reshape(n, -1).index_select(0, tokens).reshape(rows.shape), *args[1:])
            return None
        return pre

    def unrouted(_module, _args, _output):
        """Experts that received no token still report (an all-False routed mask), so every site runs."""
        n = shape.hidden.shape[0]
        for e in sorted(set(wanted) - ran):
            apply, _, observe_rows = wanted[e]
            if observe_rows is not None:
                observe_rows(shape.hidden.new_zeros(0, reader.width), torch.zeros(0, dtype=torch.long,
                                                                                    device=shape.hidden.device))
                continue
            zeros = shape.hidden.new_zeros(*shape.tokens(n), reader.width)
            apply(zeros, torch.zeros(shape.tokens(n), dtype=torch.bool, device=zeros.device))

    handles.append(block.register_forward_pre_hook(reset, with_kwargs=True))
    for e in wanted:
        expert = reader.module[e]
        handles.append(expert.register_forward_pre_hook(inputs(e)))
        handles.append(expert.get_submodule(reader.down_path).register_forward_pre_hook(down(e)))
    handles.append(block.register_forward_hook(unrouted))


# -- routers --------------------------------------------------------------------------------------------
class _Logits(TorchFunctionMode):
    """While the router runs: the first result computed with a tensor of the router weight's shape among
    its arguments, and as wide as its rows, is the logits; hand them to `edit`, return what it gives back."""

    def __init__(self, weight_shape: tuple[int, int], edit: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.weight_shape, self.edit, self.done = weight_shape, edit, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.done and isinstance(out, torch.Tensor) and out.ndim >= 1 and out.shape[-1] == self.weight_shape[0] \
                and any(isinstance(a, torch.Tensor) and tuple(a.shape) == self.weight_shape
                        for a in (*args, *kwargs.values())):
            self.done = True
            out = self.edit(out)
        return out


def router_weight_shape(router: nn.Module, n_experts: int) -> tuple[int, int] | None:
    """The shape of the router's (m, d) weight that scores the experts, m ≥ n_experts (rows past n_experts:
    e.g. shared experts' gates, which some routers score alongside), or None: the smallest matrix with that
    many rows — a plain router's only one (d = hidden); a router that is a small MLP of its own (ZAYA: a
    down projection, two hidden layers, an output projection) scores with its last, smallest one."""
    matrices = [p for p in router.parameters() if p.ndim == 2 and p.shape[0] >= n_experts]
    return tuple(min(matrices, key=lambda p: p.numel()).shape) if matrices else None


def install_router(layout, layer: int, apply: Apply, edits: bool, handles: list) -> None:
    """Hooks for the `router` site of one layer: units are the first n_experts logits' softmax."""
    parts = layout.parts(layer)
    router = layout.layers[layer].get_submodule(parts.moe.router)
    shape = _Shape()
    handles.append(_block(layout, layer).register_forward_pre_hook(shape.pre_hook, with_kwargs=True))
    n = parts.moe.n_experts
    weight_shape = router_weight_shape(router, n)
    active: list[_Logits] = []

    def edit(logits: torch.Tensor) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        routed = flat[:, :n].float()
        probs = torch.softmax(routed, dim=-1)
        batch_tokens = shape.tokens(flat.shape[0])
        new = apply(probs.view(*batch_tokens, -1), None)
        if not edits or new is None or _same(new, probs):
            return logits
        new = new.reshape(probs.shape).to(probs.dtype)
        shifted = torch.where(new != probs, routed + torch.log(new / probs), routed).to(logits.dtype)
        return torch.cat([shifted, flat[:, n:]], dim=1).reshape(logits.shape)

    def enter(_module, _args):
        mode = _Logits(weight_shape, edit)
        mode.__enter__()
        active.append(mode)

    def leave(_module, _args, _output):
        if active:  # also when the forward raised (always_call): the mode never outlives the router
            active.pop().__exit__(None, None, None)

    handles.append(router.register_forward_pre_hook(enter))
    # prepend: a router hooked twice (a recording inside a lesion) leaves its modes in reverse order
    handles.append(router.register_forward_hook(leave, always_call=True, prepend=True))
