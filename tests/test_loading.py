"""load_model's GGUF cache: verified by content hash, rebuilt when damaged; pad tokens always set."""

import json

import pytest
import torch

import neuroloc.models.loading as loading
from neuroloc import NeurolocError, load_model, wrap_model
from tests.tiny import tiny_model, tiny_tokenizer


def _fake_convert(calls):
    def convert(gguf, target):
        calls.append(target)
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.safetensors").write_bytes(b"weights")
        files = {"model.safetensors": loading.file_sha256(target / "model.safetensors")}
        (target / loading._CACHE_RECORD).write_text(json.dumps({"files": files}))
    return convert


def test_gguf_cache_is_reused_and_rebuilt_when_corrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROLOC_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(loading, "_convert_gguf", _fake_convert(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    digest = loading.file_sha256(gguf)
    first = loading.gguf_cache(gguf, digest)
    assert loading.gguf_cache(gguf, digest) == first and len(calls) == 1
    (first / "model.safetensors").write_bytes(b"weighs")  # corrupted, same size
    loading.gguf_cache(gguf, digest)
    assert len(calls) == 2
    (first / loading._CACHE_RECORD).unlink()  # partial conversion
    loading.gguf_cache(gguf, digest)
    assert len(calls) == 3


def test_unknown_model_and_dtype_are_clear_errors(tmp_path):
    with pytest.raises(NeurolocError, match="no such file or directory"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(NeurolocError, match="dtype"):
        load_model("smollm2", dtype="int3")
    with pytest.raises(NeurolocError, match="cannot load model"):
        load_model(str(tmp_path))  # a directory with no model in it


def test_local_directory_round_trip_and_pad_token(tmp_path):
    model, tokenizer = tiny_model("qwen2"), tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.identity["config_sha256"]
    assert lm.tokenizer.pad_token is not None
    bare = tiny_tokenizer().__class__(tokenizer_object=tiny_tokenizer().backend_tokenizer)
    assert bare.pad_token is None
    assert wrap_model(tiny_model("gpt2"), bare).tokenizer.pad_token is not None


def test_gguf_cache_is_keyed_by_transformers_major_version(tmp_path, monkeypatch):
    """A conversion written by transformers 5 is not read by transformers 4 (its tokenizer class,
    TokenizersBackend, does not exist there): each major version gets its own cache."""
    monkeypatch.setenv("NEUROLOC_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(loading, "_convert_gguf", _fake_convert(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    digest = loading.file_sha256(gguf)
    monkeypatch.setattr(loading.transformers, "__version__", "5.3.0")
    five = loading.gguf_cache(gguf, digest)
    monkeypatch.setattr(loading.transformers, "__version__", "4.57.1")
    four = loading.gguf_cache(gguf, digest)
    assert four != five and len(calls) == 2
    monkeypatch.setattr(loading.transformers, "__version__", "5.24.0")
    assert loading.gguf_cache(gguf, digest) == five and len(calls) == 2  # same major: reused


def test_cached_conversion_that_cannot_load_is_rebuilt(tmp_path, monkeypatch):
    """A cache that verifies but does not load under this transformers is converted again."""
    monkeypatch.setenv("NEUROLOC_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(gguf, target):
        calls.append(target)
        target.mkdir(parents=True, exist_ok=True)
        tiny_model("llama").save_pretrained(target)
        tiny_tokenizer().save_pretrained(target)
        if len(calls) == 1:  # what transformers 4.57 met in a cache written by transformers 5
            config = json.loads((target / "tokenizer_config.json").read_text())
            config["tokenizer_class"] = "TokenizersBackendFromTheFuture"
            (target / "tokenizer_config.json").write_text(json.dumps(config))
            (target / "tokenizer.json").unlink()  # no fast-tokenizer file to fall back on
        files = {p.name: loading.file_sha256(p) for p in target.iterdir() if p.is_file()}
        (target / loading._CACHE_RECORD).write_text(json.dumps({"files": files}))

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    lm = load_model(str(gguf), dtype="float32")
    assert len(calls) == 2 and lm.identity["model_type"] == "llama"
    assert lm.tokenizer("the dog")["input_ids"] == tiny_tokenizer()("the dog")["input_ids"]
