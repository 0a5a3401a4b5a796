"""`--dtype auto`: the hardware rule with mocked capabilities, the stored-dtype rule, and the agreement
probe (checked against a direct float32 / bfloat16 comparison and on a model bf16 cannot represent)."""

import numpy as np
import pytest
import torch

import neuroloc.models.loading as loading
import neuroloc.models.precision as precision
from neuroloc import load_model
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("flags, fast", [({"avx2", "avx512f"}, False), ({"avx512f", "avx512_bf16"}, True),
                                         ({"amx_tile", "amx_bf16"}, True), (set(), False)])
def test_cpu_rule_reads_the_bf16_flags(flags, fast):
    ok, reason = precision.bf16_hardware("cpu", flags=frozenset(flags))
    assert ok is fast
    assert ("amx_bf16" in reason or "avx512_bf16" in reason)


@pytest.mark.parametrize("capability, fast", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_rule_needs_compute_capability_8(capability, fast):
    ok, reason = precision.bf16_hardware("cuda:0", capability=lambda device: capability)
    assert ok is fast and f"{capability[0]}.{capability[1]}" in reason


def test_cpu_flags_are_parsed_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile\nbugs\t: none\n")
    assert precision._cpu_flags(info) == {"fpu", "sse", "avx512_bf16", "amx_tile"}
    assert precision._cpu_flags(tmp_path / "absent") == set()


def test_target_device_follows_device_then_device_map(monkeypatch):
    assert precision.target_device("cuda:1", None) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.target_device(None, "auto") == "cuda"
    assert precision.target_device(None, {"model": "cpu"}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.target_device(None, "auto") == "cpu"


def _saved(tmp_path, model=None, dtype=torch.float32):
    model = (model or tiny_model("llama")).to(dtype)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return str(tmp_path)


def _hardware(monkeypatch, fast):
    monkeypatch.setattr(loading, "bf16_hardware", lambda device: (fast, "mocked hardware"))


def test_auto_keeps_float32_on_slow_hardware_and_records_why(tmp_path, monkeypatch):
    _hardware(monkeypatch, False)
    lm = load_model(_saved(tmp_path), dtype="auto")
    assert lm.dtype == torch.float32
    assert lm.identity["precision"] == {"requested": "auto", "dtype": "float32", "reason": "mocked hardware",
                                        "fast_bf16": False, "probe": {}}


def test_auto_loads_a_bf16_checkpoint_in_bf16_without_a_probe(tmp_path, monkeypatch):
    _hardware(monkeypatch, True)
    monkeypatch.setattr(loading, "agreement_probe", lambda *a: pytest.fail("no probe for a bf16 checkpoint"))
    lm = load_model(_saved(tmp_path, dtype=torch.bfloat16), dtype="auto")
    assert lm.dtype == torch.bfloat16 and "stored in bfloat16" in lm.identity["precision"]["reason"]


def test_auto_probes_a_float32_checkpoint_and_takes_bf16_when_it_agrees(tmp_path, monkeypatch):
    _hardware(monkeypatch, True)
    lm = load_model(_saved(tmp_path), dtype="auto")
    record = lm.identity["precision"]
    assert lm.dtype == torch.bfloat16 and record["dtype"] == "bfloat16" and "agrees" in record["reason"]
    assert record["probe"]["min_layer_correlation"] >= precision.MIN_LAYER_CORRELATION


def test_auto_keeps_float32_when_bf16_cannot_represent_the_model(tmp_path, monkeypatch):
    """Embeddings of 256 + small differences: bf16's spacing at 256 is 2, so every token collapses."""
    model = tiny_model("llama")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(256 + 0.01 * torch.randn_like(emb))
    _hardware(monkeypatch, True)
    lm = load_model(_saved(tmp_path, model), dtype="auto")
    record = lm.identity["precision"]
    assert lm.dtype == torch.float32 and "keeps float32" in record["reason"]
    assert not record["probe"]["min_layer_correlation"] >= precision.MIN_LAYER_CORRELATION  # low or NaN


def test_probe_figures_match_a_direct_comparison():
    model, tokenizer = tiny_model("qwen2"), tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    texts = ("the quick brown fox", "she looked for the keys in the drawer")
    probe = precision.agreement_probe(model, tokenizer, texts)
    # independent: one text at a time (no padding), numpy correlations, log_softmax
    per_layer = {}
    shifts = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        outs = []
        for dtype in (torch.float32, torch.bfloat16):
            with torch.no_grad():
                out = model.to(dtype)(ids, output_hidden_states=True)
            outs.append(out)
        model.float()
        for layer, (a, b) in enumerate(zip(outs[0].hidden_states[1:], outs[1].hidden_states[1:])):
            per_layer.setdefault(layer, []).append((a[0].float().numpy(), b[0].float().numpy()))
        lps = [torch.log_softmax(o.logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
               for o in outs]
        shifts.append((lps[0] - lps[1]).abs().numpy())
    correlations = [np.corrcoef(np.concatenate([a.ravel() for a, _ in pairs]),
                                np.concatenate([b.ravel() for _, b in pairs]))[0, 1] for pairs in per_layer.values()]
    assert probe["min_layer_correlation"] == pytest.approx(min(correlations), abs=1e-4)
    assert probe["mean_logprob_shift"] == pytest.approx(np.concatenate(shifts).mean(), abs=2e-3)
    assert next(model.parameters()).dtype == torch.float32  # the probe worked on a copy


def test_verdict_thresholds():
    ok, _ = precision.probe_verdict({"min_layer_correlation": 0.9995, "worst_layer": 3, "mean_logprob_shift": 0.01})
    assert ok
    bad, reason = precision.probe_verdict({"min_layer_correlation": 0.99, "worst_layer": 3, "mean_logprob_shift": 0.0})
    assert not bad and "layer 3" in reason
    bad, reason = precision.probe_verdict({"min_layer_correlation": 1.0, "worst_layer": 0, "mean_logprob_shift": 0.2})
    assert not bad and "nats" in reason
    bad, _ = precision.probe_verdict({"min_layer_correlation": float("nan"), "worst_layer": 0,
                                      "mean_logprob_shift": 0.0})
    assert not bad  # a layer whose bf16 activations are constant has no correlation at all


def test_explicit_dtype_is_recorded(tmp_path):
    lm = load_model(_saved(tmp_path), dtype="bfloat16")
    assert lm.identity["precision"] == {"requested": "bfloat16", "dtype": "bfloat16",
                                        "reason": "requested explicitly"}


def test_auto_bf16_equals_loading_in_bf16(tmp_path, monkeypatch):
    """The probed-and-cast model is the model `from_pretrained(dtype=bfloat16)` gives: same parameters,
    same float32 rotary frequencies, same logits."""
    path = _saved(tmp_path)
    _hardware(monkeypatch, True)
    auto = load_model(path, dtype="auto")
    direct = load_model(path, dtype="bfloat16")
    for (name, a), (_, b) in zip(auto.model.state_dict().items(), direct.model.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    for (name, a), (_, b) in zip(auto.model.named_buffers(), direct.model.named_buffers()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    ids = torch.tensor([[0, 5, 9, 14, 30]])
    with torch.no_grad():
        assert torch.equal(auto.model(ids).logits, direct.model(ids).logits)
