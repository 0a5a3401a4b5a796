"""The verified-family record: every causal-LM family of the installed transformers, site by site.

For each family in transformers' causal-LM model mapping (not a hand list) this builds a tiny random
model from the family's own config class (`tiny_families.py`), loads it in neuroloc, and for every site
kind the model exposes:

1. records it with neuroloc's Recorder (mean pooling and per-token statistics) at batch size 3, with
   padding on the left and on the right;
2. computes the same values independently, one text at a time without padding, with plain PyTorch hooks
   on the model's own modules — and, where the kind has a meaning beyond its hook point, from that
   meaning: `router` is the softmax of `output_router_logits`,
   `expert` is recomputed from the experts' own weights and `_apply_gate`, and checked to reproduce the
   experts module's own output for that expert alone; `mlp_gate` counts only where a probe confirmed
   that the down projection's input is act(gate) × up;
3. localizes on it (Welch t, two conditions) and lesions the selected units (`zero`; `unroute` for the
   router), checking that the model's output changes and the lesioned units read 0.

A site is `exact` when every check passes and the recorded values agree with the independent ones to
float32 rounding (relative error ≤ 1e-4), `differs` otherwise (with the error), or unavailable with the
layout's reason. Families run in worker processes (a crash or an out-of-memory kill costs one family),
and the table is written to docs/families.md:

    python scripts/verify_families.py                      # every family → docs/families.md
    python scripts/verify_families.py llama qwen3_moe      # some families, printed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A dog.", "She didn't know that the keys were in the drawer",
         "POME OY REE HOLILY SHOURN", "1 + 2 = 3; what is 15 + 4?", "Sentences and non-word strings: the localizer"]
CONDITIONS = ["S", "N", "S", "N", "S", "N"]


# -- one family (runs inside a worker) -------------------------------------------------------------------
def _relative_error(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(a.abs().max()) if a.numel() else 0.0, float(b.abs().max()) if b.numel() else 0.0, 1e-6)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _reference(lm, sites, ids, routed_tokens: dict) -> dict:
    """Per site, the (tokens, width) values for one unpadded text, from plain hooks on the model's modules;
    `routed_tokens[site]` receives the token positions routed to an expert."""
    import torch

    layout, model = lm.layout, lm.model
    seen, handles = {}, []

    def out_hook(key):
        return lambda _m, _a, out: seen.__setitem__(key, _hidden(out).detach())

    def in_hook(key):
        return lambda _m, args: seen.__setitem__(key, args[0].detach())

    for site in sites:
        layer = layout.layers[site.layer]
        parts = layout.parts(site.layer)
        key = site.name
        if site.kind == "residual":
            handles.append(layer.register_forward_hook(out_hook(key)))
        elif site.kind == "ssm":
            handles.append(layer.get_submodule(parts.ssm).register_forward_hook(out_hook(key)))
        elif site.kind == "mlp" or (site.kind == "mlp_gate" and not parts.mlp.gated):
            handles.append(layer.get_submodule(parts.mlp.down).register_forward_pre_hook(in_hook(key)))
        elif site.kind == "mlp_gate":
            handles.append(layer.get_submodule(parts.mlp.gate_act).register_forward_hook(out_hook(key)))
        elif site.kind == "attn":
            handles.append(layer.get_submodule(parts.attn).register_forward_pre_hook(in_hook(key)))
        elif site.kind == "shared_expert":
            handles.append(layer.get_submodule(parts.moe.shared.down).register_forward_pre_hook(in_hook(key)))
        elif site.kind == "expert" and f"experts{site.layer}" not in seen:
            seen[f"experts{site.layer}"] = None
            handles.append(layer.get_submodule(parts.moe.experts).register_forward_hook(
                lambda m, a, kw, out, k=f"experts{site.layer}": seen.__setitem__(k, (m, a, kw, out)), with_kwargs=True))
        elif site.kind == "router" and f"router{site.layer}" not in seen:
            seen[f"router{site.layer}"] = None
            handles.append(layer.get_submodule(parts.moe.router).register_forward_hook(
                lambda m, a, out, k=f"router{site.layer}": seen.__setitem__(k, out)))
    try:
        with torch.no_grad():
            kwargs = {"output_router_logits": True} if any(s.kind == "router" for s in sites) else {}
            kwargs.update(_no_cache(model))
            try:
                output = model(input_ids=ids, **kwargs)
            except TypeError:
                output = model(input_ids=ids, **_no_cache(model))
    finally:
        for handle in handles:
            handle.remove()
    values = {}
    router_logits = getattr(output, "router_logits", None)
    moe_layers = [i for i in range(layout.n_layers) if layout.has(i, "router")]
    for site in sites:
        key = site.name
        if site.kind == "router":
            logits = None
            if isinstance(router_logits, (tuple, list)) and len(router_logits) == len(moe_layers):
                logits = router_logits[moe_layers.index(site.layer)]
            if logits is None:
                out = seen[f"router{site.layer}"]
                logits = out[0] if isinstance(out, tuple) else out
            n_experts = layout.parts(site.layer).moe.n_experts  # columns past the experts score e.g. a skip
            values[key] = torch.softmax(logits.float().reshape(-1, logits.shape[-1])[:, :n_experts], -1)
        elif site.kind == "expert":
            values[key] = _expert_reference(site, *seen[f"experts{site.layer}"], routed_tokens)
        else:
            values[key] = _per_token(seen[key], ids.shape[1], model.config)
    return values


def _per_token(value, length: int, config):
    """A site's value as (tokens, units), by the model's own layout: hyper-connection streams (tokens,
    streams, hidden) side by side, and Gemma 3n's AltUp streams (streams, batch, tokens, hidden) likewise; CPM-Ant's `prompt_length` prompt positions before the text dropped, as
    its model drops them; ProphetNet's main stream, the first of its 1 + `ngram` streams of positions."""
    if value.dim() == 4 and value.shape[:2] == (1, length):
        return value.reshape(length, -1)
    if value.dim() == 4 and value.shape[1:3] == (1, length):  # Gemma 3n: (streams, batch, tokens, hidden)
        return value[:, 0].transpose(0, 1).reshape(length, -1)
    if value.dim() == 3 and value.shape[0] == 1 and value.shape[1] != length:
        extra = value.shape[1] - length
        if extra == getattr(config, "prompt_length", None):
            return value[0, extra:]
        if value.shape[1] == (1 + getattr(config, "ngram", -1)) * length:
            return value[0, :length]
        raise AssertionError(f"a {tuple(value.shape)} value for {length} tokens: no known layout")
    return value.reshape(-1, value.shape[-1])


def _no_cache(model) -> dict:
    """use_cache=False where the forward takes it: recording needs no cache (and xLSTM's tiny cache breaks)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in parameters else {}


def _expert_reference(site, module, args, kwargs, output, routed_tokens: dict):
    """Expert `site.expert`'s neurons on its routed tokens (those with a routing slot of nonzero weight on
    it), from the experts module's own weights and `_apply_gate` / `act_fn`; checked to reproduce that
    module's own forward for this expert alone."""
    import inspect

    import torch

    bound = list(inspect.signature(module.forward).bind(*args, **kwargs).arguments.values())
    x, index, slot_weights = bound[0].reshape(-1, bound[0].shape[-1]), bound[1], bound[2]
    e = site.expert
    # a slot of weight 0 adds nothing to the output (LongCat-Flash's zero-computation experts): not routed
    tokens = ((index == e) & (slot_weights != 0)).any(-1).nonzero().flatten()
    routed_tokens[site.name] = tokens
    rows = x[tokens]
    transposed = module.is_transposed

    def linear(v, weight, bias):
        out = v @ weight if transposed else v @ weight.T
        return out + bias if bias is not None else out

    if module.has_gate:
        h = module._apply_gate(linear(rows, module.gate_up_proj[e], module.gate_up_proj_bias[e] if module.has_bias else None))
    else:
        h = module.act_fn(linear(rows, module.up_proj[e], module.up_proj_bias[e] if module.has_bias else None))
    down = linear(h, module.down_proj[e], module.down_proj_bias[e] if module.has_bias else None)
    if getattr(module, "has_post_expert_norm", False):
        down = module.post_expert_norm(down)
    one_hot = torch.full((len(tokens), index.shape[-1]), e, dtype=index.dtype)
    weights = torch.zeros(len(tokens), index.shape[-1], dtype=x.dtype)
    weights[:, 0] = 1  # the other slots point at the same expert with weight 0
    with torch.no_grad():
        own = module(rows, one_hot, weights)
    if _relative_error(own, down) > TOLERANCE:
        raise AssertionError(f"the experts module's own forward for expert {e} differs from down(neurons) "
                             f"(relative error {_relative_error(own, down):.1e})")
    dense = torch.zeros(x.shape[0], h.shape[-1], dtype=h.dtype)
    dense[tokens] = h
    return dense


def _record(lm, sites, padding_side: str, batch_size: int = 3):
    """Per text: neuroloc's mean row (None where an expert saw no token), token sums and token counts."""
    from neuroloc.record.recorder import Recorder

    recorder = Recorder(lm, sites, pooling="mean", batch_size=batch_size, padding_side=padding_side, bos="prepend")
    rows, sums, counts = {}, {}, {}
    for batch in recorder.iter_batches(TEXTS, token_stats=True):
        for j, text in enumerate(batch.texts):
            for site in sites:
                sums[(text, site)] = batch.token_sums[site][j]
                counts[(text, site)] = int((batch.routed_counts[site] if site in batch.routed_counts
                                            else batch.token_counts)[j])
        for site in sites:
            present = batch.present.get(site)
            kept = range(len(batch.rows)) if present is None else present.nonzero().flatten().tolist()
            got = {batch.rows[i][0]: r for r, i in enumerate(kept)}
            for j, text in enumerate(batch.texts):
                rows[(text, site)] = batch.features[site][got[text]] if text in got else None
    return rows, sums, counts


def _check_recording(lm, sites, batch_size: int = 3) -> float:
    """Largest relative error between neuroloc's recording (batch 3, both padding sides) and the
    independent per-text computation."""
    import torch

    from neuroloc.record.pooling import head_norms
    from neuroloc.text.encoding import encode

    encoded = encode(lm.tokenizer, TEXTS, bos="prepend")
    worst = 0.0
    recorded = [_record(lm, sites, side, batch_size) for side in ("left", "right")]
    for text in range(len(TEXTS)):
        ids = torch.tensor([encoded.input_ids[text]])
        own = torch.tensor(encoded.special[text]) == 0
        routed: dict = {}
        reference = _reference(lm, sites, ids, routed)
        for site in sites:
            value = reference[site.name].float()
            if site.kind == "attn":
                value = head_norms(value, lm.layout.parts(site.layer).n_heads)
            mask = torch.ones(value.shape[0], dtype=torch.bool)
            if site.name in routed:
                mask = torch.zeros_like(mask)
                mask[routed[site.name]] = True
            mean = value[mask].mean(0) if mask.any() else None
            raw = reference[site.name].double()
            token_mask = own & mask
            token_sum = (raw * token_mask[:, None]).sum(0)
            for rows, sums, counts in recorded:
                row = rows[(text, site)]
                if (row is None) != (mean is None):
                    return float("inf")
                if row is not None:
                    worst = max(worst, _relative_error(row, mean))
                worst = max(worst, _relative_error(sums[(text, site)], token_sum))
                if counts[(text, site)] != int(token_mask.sum()):
                    return float("inf")
    return worst


def _padding_effect(lm, batch_size: int = 3) -> float:
    """Largest relative error between the model's own logits on each text's tokens in padded batches (both
    sides) and on the text alone: above float32 rounding, the model itself does not ignore padding."""
    import torch

    from neuroloc.text.encoding import batches, encode, pad_id

    encoded = encode(lm.tokenizer, TEXTS, bos="prepend")
    worst = 0.0
    with torch.no_grad():
        alone = [lm.model(input_ids=torch.tensor([ids]), **_no_cache(lm.model)).logits[0]
                 for ids in encoded.input_ids]
        for side in ("left", "right"):
            for batch in batches(encoded, batch_size, pad=pad_id(lm.tokenizer), padding_side=side):
                inputs = batch.inputs("cpu")
                logits = lm.model(**inputs, **_no_cache(lm.model)).logits
                for row, text in enumerate(batch.example_ids):
                    real = inputs["attention_mask"][row].bool()
                    worst = max(worst, _relative_error(logits[row][real], alone[text]))
    return worst


def _check_localize_and_lesion(lm, kind: str) -> str | None:
    """None when localize runs and its lesion changes the output and silences the units; else what failed."""
    import torch

    from neuroloc import Localizer, StimulusSet, UnitSet, lesion
    from neuroloc.models.hooks import record, run_forward
    from neuroloc.text.encoding import batches, encode, pad_id

    stimuli = StimulusSet(name="record", texts=TEXTS, conditions=CONDITIONS)
    localizer = Localizer(site=kind, design="S:N", pooling="mean", batch_size=3, padding_side="left", count=3)
    localizer.fit(lm, stimuli)
    units = localizer.units_
    if len(units) == 0:
        return "localize selected no unit"
    layout = lm.layout
    site = next(s for s, m in units.masks.items() if m.any())
    encoded = encode(lm.tokenizer, TEXTS, bos="prepend")
    batch = next(batches(encoded, len(TEXTS), pad=pad_id(lm.tokenizer), padding_side="left"))
    inputs = {**batch.inputs("cpu"), **_no_cache(lm.model)}
    if kind == "router":  # the expert lesion: the expert the router favours most goes out of routing
        with torch.no_grad(), record(layout, [site], stop_early=False) as probabilities:
            run_forward(lm.model, **inputs)
        real = inputs["attention_mask"].bool()
        favourite = int(probabilities[site.name].reshape(*real.shape, -1)[real].mean(0).argmax())
        units = UnitSet({site: torch.nn.functional.one_hot(torch.tensor(favourite), layout.width(site)).bool()})
    mode = "unroute" if kind == "router" else "zero"
    watch = [site]
    if kind == "router" and layout.has(site.layer, "expert"):
        watch.append(type(site)(site.layer, "expert", int(units.masks[site].nonzero()[0])))
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        base = run_forward(lm.model, **inputs).logits
        with lesion(lm, units, mode), record(layout, watch, stop_early=False) as got:
            lesioned = run_forward(lm.model, **inputs).logits
    if torch.equal(base, lesioned):
        return f"the {mode} lesion of {len(units)} units left the output unchanged"
    value = got[site.name].reshape(*real.shape, -1)[real]
    if site.kind == "attn":
        value = value.unflatten(-1, (layout.parts(site.layer).n_heads, -1)).norm(dim=-1)
    if value[:, units.masks[site]].abs().max() != 0:
        return f"lesioned units of {site.name} do not read 0"
    if len(watch) > 1 and got[watch[1].name].reshape(*real.shape, -1).abs().max() != 0:
        return f"expert {watch[1].expert} still receives tokens after unroute"
    return None


def verify_family(model_type: str) -> dict:
    """The record's row for one family."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from tests.tiny import tiny_tokenizer
    from tiny_families import build

    from neuroloc import NeurolocError, wrap_model
    from neuroloc.models.sites import SITE_KINDS

    started = time.perf_counter()
    row: dict = {"family": model_type, "sites": {}}
    tokenizer = tiny_tokenizer()
    try:
        model = build(model_type, len(tokenizer))
    except Exception as error:  # noqa: BLE001 - the reason is the record
        row["built"] = f"cannot build a tiny model: {type(error).__name__}: {_one_line(error)}"
        if not _default_builds(model_type):
            row["built"] += " (transformers' own default config for this family does not build a model either)"
        return row
    row["built"] = type(model).__name__
    try:
        lm = wrap_model(model, tokenizer, name=model_type)
        availability = lm.layout.availability()
    except NeurolocError as error:
        row["built"] += f"; neuroloc cannot load it: {_one_line(error)}"
        return row
    for kind in SITE_KINDS:
        entry = availability[kind]
        if "unavailable" in entry:
            row["sites"][kind] = {"result": "unavailable", "detail": entry["unavailable"]}
            continue
        try:
            sites = lm.layout.sites(kind)
            error = _check_recording(lm, sites)
            failed = _check_localize_and_lesion(lm, kind)
            if failed:
                row["sites"][kind] = {"result": "differs", "detail": failed}
            elif error <= TOLERANCE:
                row["sites"][kind] = {"result": "exact", "detail": f"max relative error {error:.1e}"}
            else:
                alone = _check_recording(lm, sites, batch_size=1)
                detail = f"max relative error {error:.1e}"
                if alone <= TOLERANCE:
                    detail += f"; exact one text at a time ({alone:.1e}): only padded batches differ"
                    own = _padding_effect(lm)
                    if own > TOLERANCE:
                        detail += (f", and so do the model's own logits, padded vs one text at a time (relative "
                                   f"error {own:.1e}): model-side, the model's output depends on the padding")
                row["sites"][kind] = {"result": "differs", "detail": detail}
        except Exception as error:  # noqa: BLE001 - a failing check is a finding
            row["sites"][kind] = {"result": "error", "detail": f"{type(error).__name__}: {_one_line(error)}"}
        if "absent" in entry:
            row["sites"][kind]["detail"] += f" (absent in {entry['absent']})"
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _default_builds(model_type: str) -> bool:
    """Whether the family's default config builds a model at all (on the meta device: no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type))
        return True
    except Exception:  # noqa: BLE001 - any failure answers the question
        return False


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:400]


# -- orchestration ---------------------------------------------------------------------------------------
def worker(families: list[str]) -> None:
    """Verify families one after another, one JSON line each (the parent restarts us after a crash)."""
    resource.setrlimit(resource.RLIMIT_AS, (int(os.environ.get("NEUROLOC_RECORD_MEMORY", 6 * 2**30)),) * 2)
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    for family in families:
        print(json.dumps(verify_family(family)), flush=True)


def causal_lm_families() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def run_all(families: list[str], workers: int, timeout: float) -> list[dict]:
    """Rows for `families`, spread over `workers` processes; a family that crashes its worker or
    outlives `timeout` seconds gets a row saying so."""
    pending = list(families)
    rows: dict[str, dict] = {}
    chunks = [pending[i::workers] for i in range(workers)]
    while any(chunks):
        running = [(chunk, subprocess.Popen([sys.executable, __file__, "--worker", *chunk], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT))
                   for chunk in chunks if chunk]
        chunks = []
        for chunk, process in running:
            try:
                out, _ = process.communicate(timeout=timeout * len(chunk))
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    rows[row["family"]] = row
                    print(f"{row['family']}: {_summary(row)}", flush=True)
            done = [f for f in chunk if f in rows]
            rest = chunk[len(done):]
            if rest:  # the first unfinished family crashed or hung the worker
                rows[rest[0]] = {"family": rest[0], "sites": {},
                                 "built": f"the check crashed or ran out of time or memory (exit {process.returncode})"}
                print(f"{rest[0]}: {rows[rest[0]]['built']}", flush=True)
                if rest[1:]:
                    chunks.append(rest[1:])
    return [rows[f] for f in families]


def _summary(row: dict) -> str:
    if not row["sites"]:
        return row["built"]
    return ", ".join(f"{k} {v['result']}" for k, v in row["sites"].items() if v["result"] != "unavailable")


def write_markdown(rows: list[dict], path: Path, seconds: float) -> None:
    import transformers

    from neuroloc.models.sites import KIND_MEANINGS, SITE_KINDS

    loaded = [r for r in rows if r["sites"]]
    counts = {kind: {result: sum(1 for r in loaded if r["sites"][kind]["result"] == result)
                     for result in ("exact", "differs", "error", "unavailable")} for kind in SITE_KINDS}
    lines = [
        "# Verified families",
        "",
        f"Generated by `python scripts/verify_families.py` with transformers {transformers.__version__} "
        f"({len(rows)} causal-LM families in its model mapping; {seconds / 60:.0f} min). Do not edit by hand.",
        "",
        "Each family is a tiny random model built from its own config class (hidden 64, two layers — more where "
        "a hybrid needs one layer of each block type). For every site kind the model exposes, neuroloc records it "
        "(mean pooling and per-token statistics, batch size 3, padding on the left and on the right), the same "
        "values are computed independently one text at a time with plain PyTorch hooks on the model's own "
        "modules (router probabilities from `output_router_logits`, expert neurons from the experts' own weights, checked against the experts "
        "module's own output), then the site is localized and lesioned (`zero`; `unroute` for routers). "
        f"**exact**: every check passed and values agree to float32 rounding (relative error ≤ {TOLERANCE:g}); "
        "**differs** / **error**: a check failed (the detail says which); **—**: the model has no such site "
        "(the reason is listed below the table).",
        "",
        f"{len(loaded)} of {len(rows)} families load; {len(rows) - len(loaded)} cannot be built or loaded (reasons "
        "at the end).",
        "",
        "| site | meaning | exact | differs | error | unavailable |",
        "|---|---|---|---|---|---|",
        *[f"| `{kind}` | {KIND_MEANINGS[kind]} | {c['exact']} | {c['differs']} | {c['error']} | {c['unavailable']} |"
          for kind, c in counts.items()],
        "",
        "| family | " + " | ".join(SITE_KINDS) + " |",
        "|---|" + "---|" * len(SITE_KINDS),
    ]
    mark = {"exact": "exact", "differs": "**differs**", "error": "**error**", "unavailable": "—"}
    for row in loaded:
        lines.append(f"| {row['family']} | " + " | ".join(mark[row["sites"][k]["result"]] for k in SITE_KINDS) + " |")
    lines += ["", "## Details", ""]
    for row in loaded:
        notes = [f"`{k}` {v['result']}: {v['detail']}" for k, v in row["sites"].items()
                 if v["result"] in ("differs", "error") or "absent" in v["detail"]]
        missing = [f"`{k}`: {v['detail']}" for k, v in row["sites"].items() if v["result"] == "unavailable"]
        lines.append(f"- **{row['family']}** ({row['built']}). " + "; ".join(notes + missing))
    lines += ["", "## Families that cannot be built or loaded", ""]
    for row in rows:
        if not row["sites"]:
            lines.append(f"- **{row['family']}**: {row['built']}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help="model types (default: every causal-LM family)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=240, help="seconds per family")
    parser.add_argument("--out", type=Path, default=None, help="markdown table (default: docs/families.md when "
                                                                "every family is checked)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.worker:
        worker(args.families)
        return
    families = args.families or causal_lm_families()
    started = time.perf_counter()
    rows = run_all(families, args.workers, args.timeout)
    out = args.out or (ROOT / "docs" / "families.md" if not args.families else None)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if out:
        write_markdown(rows, out, time.perf_counter() - started)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
