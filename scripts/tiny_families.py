"""Tiny random models of any causal-LM family of the installed transformers, from its own config class.

The default config of a family is shrunk by rules on attribute names (hidden ~64, 2 layers, 4 heads, 4
experts, small state-space dimensions, every sub-config likewise); per-layer type lists keep one layer
of each type, so a hybrid's tiny model has every block kind. `EXTRA` holds the few keys a family needs
beyond those rules. `build` refuses a model whose parameters would still exceed `MAX_PARAMETERS`.
"""

from __future__ import annotations

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

MAX_PARAMETERS = 20_000_000
HIDDEN = 64
# attribute name → tiny value (only attributes the family's default config has are set)
SIZES = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "n_embed", "word_embed_proj_dim",
                     "hidden_size_per_layer_input_dim", "hidden_size_global"), HIDDEN),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers",
                     "encoder_layers", "num_decoder_layers"), 2),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads",
                     "encoder_attention_heads", "num_attention_heads_per_layer"), 4),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num", "kv_n_heads"), 2),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim",
                     "ffn_hidden_size", "d_ff", "inner_hidden_size", "ffn_intermediate_size"), 128),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
                     "moe_ffn_hidden_size", "expert_hidden_size", "shared_intermediate_size",
                     "moe_shared_expert_intermediate_size"), 32),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k", "moe_k", "num_experts_per_token",
                     "num_selected_experts", "moe_top_k"), 2),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), 1),
    **dict.fromkeys(("n_group", "topk_group", "num_expert_group", "topk_groups"), 1),
    **dict.fromkeys(("first_k_dense_replace", "decoder_sparse_step", "moe_layer_start_index"), 1),
    "head_dim": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "q_lora_rank": 32,
    "kv_lora_rank": 32, "qk_head_dim": 16, "rotary_dim": 8, "rotary_emb_base": 10000,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx", "max_sequence_length"), 256),
    **dict.fromkeys(("state_size", "mamba_d_state", "ssm_state_size", "d_state", "mamba_d_ssm_state"), 8),
    **dict.fromkeys(("time_step_rank", "mamba_dt_rank", "dt_rank"), 8),
    **dict.fromkeys(("mamba_n_heads", "mamba_num_heads", "num_mamba_heads", "linear_num_value_heads",
                     "linear_num_key_heads"), 4),
    **dict.fromkeys(("mamba_d_head", "mamba_head_dim"), 2 * HIDDEN // 4),
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim"), 16),
    **dict.fromkeys(("mamba_n_groups", "n_groups", "mamba_ngroups"), 1),
    "mamba_d_ssm": 128, "lru_width": HIDDEN, "attention_window_size": 64, "sliding_window": 64,
    "num_hidden_groups": 1, "zero_expert_num": 2, "expert_ffn_hidden_size": 32, "emb_dim": HIDDEN,
    "index_num_heads": 2, "index_n_heads": 4, "index_head_dim": 8, "o_lora_rank": 32, "encoder_hash_byte_group_vocab": 1000,
    "adapter_in_dim": HIDDEN, "adapter_out_dim": HIDDEN, "adapter_input_size": HIDDEN,
}
LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers")
SUBCONFIGS = ("text_config", "vision_config", "audio_config", "decoder", "encoder", "attention_config",
              "ffn_config", "speech_config", "depth_decoder_config", "vq_config", "text_encoder", "audio_encoder")
# counts of the first / last layers that are alike ("the first 3 layers are dense"), kept as such
LEADING, TRAILING = ("num_dense_layers",), ("num_kv_shared_layers",)
# config values a real checkpoint of the family carries, where the family's defaults leave them unset or
# inconsistent (the defaults then do not build a model); applied before shrinking
CHECKPOINT: dict[str, dict] = {
    **dict.fromkeys(("hunyuan_v1_dense", "hunyuan_v1_moe", "ministral"), dict(head_dim=128)),
    "nemotron": dict(num_key_value_heads=8),
    "dots1": dict(n_routed_experts=128, num_experts_per_tok=6, n_shared_experts=2, first_k_dense_replace=1),
    "lfm2_moe": dict(layer_types=["conv", "conv", "full_attention"] * 8 + ["conv"] * 8),
    "cohere_compass_text": dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    "dbrx": dict(attn_config={"rope_theta": 500000.0, "kv_n_heads": 8, "clip_qkv": 8}),
    "qwen4_exp_text": dict(indexer_n_heads=8, indexer_kv_heads=1, indexer_head_dim=64, indexer_budget=256,
                           indexer_compress_ratio=4),
    "moshi": dict(audio_vocab_size=2048),
    "reformer": dict(is_decoder=True, num_buckets=[8, 8]),
    **dict.fromkeys(("gemma4_assistant", "gemma4_unified_assistant"), dict(
        text_config={"hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0})),
}
# families whose causal LM takes a sub-config of the family's config
CHECKPOINT["qwen4_exp"] = dict(text_config=CHECKPOINT["qwen4_exp_text"])
CAUSAL_LM_SUBCONFIG = {"musicgen": "decoder", "musicgen_melody": "decoder", "qwen4_exp": "text_config"}
EXTRA: dict[str, dict] = {
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
    "deepseek_v2": dict(num_key_value_heads=4), "deepseek_v3": dict(num_key_value_heads=4),
    "deepseek_v32": dict(num_key_value_heads=4), "mamba2": dict(head_dim=2 * HIDDEN // 4),
    "recurrent_gemma": dict(num_hidden_layers=3), "bamba": dict(attn_layer_indices=[1]),
    "granitemoehybrid": dict(layer_types=["linear_attention", "full_attention"]),
    "zamba": dict(num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1,
                  layer_types=["linear_attention", "hybrid"] * 2),
    "zaya": dict(num_experts_per_tok=1),
    # given no attention mask XLM counts a text's length by its ids that are not its pad id: a checkpoint's
    # pad (2) is not its BOS (0), while the tiny tokenizer's BOS is 0, so the pad id is one no text uses
    "xlm": dict(pad_token_id=3),
    # stored with an "mlp" block after each layer (halved on load); an input, a recurrent and an output layer
    "dots3_note_text": dict(head_dim=16), "dots3_note": dict(text_config=dict(head_dim=16)),  # qk_nope + qk_rope
    "reformer": dict(axial_pos_embds_dim=[HIDDEN // 2, HIDDEN // 2]),
    "dory": dict(layer_types=["sliding_attention", "mlp", "full_attention", "mlp", "sliding_attention", "mlp"],
                 num_hidden_layers=6, n_input_layers=2, n_recurrent_layers=2, n_output_layers=2),
}


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _layer_keys(defaults: dict, n_layers: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """The config keys that describe layers one by one: lists with a value per layer, lists with a layer
    index per layer (a layer that reuses another's keys and values), lists of layer indices, and a
    `per_layer_config`-style dict keyed by layer index."""
    values, sources, indices, keyed = [], [], [], []
    for key, value in defaults.items():
        if isinstance(value, (list, tuple)) and len(value) == n_layers and all(_is_scalar(v) for v in value):
            is_source = "layer" in key and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= i
                                               for i, v in enumerate(value))
            (sources if is_source else values).append(key)
        elif isinstance(value, (list, tuple)) and "layer" in key and len(value) < n_layers and \
                all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_layers for v in value) and \
                list(value) == sorted(set(value)):
            indices.append(key)
        elif _is_layer_dict(key, value) and all(int(k) < n_layers for k in value):
            keyed.append(key)
    return values, sources, indices, keyed


def kept_layers(defaults: dict, n_layers: int) -> list[int]:
    """The layers a tiny model keeps: the first layer of each distinct kind, a layer's kind being everything
    the config says of it alone (its entry in every per-layer list and dict, whether a layer-index list names
    it, whether it is among the first / last layers a count sets apart, whether it reuses another layer),
    plus the layers the kept ones reuse; at least two."""
    values, sources, indices, keyed = _layer_keys(defaults, n_layers)
    counts = [(k, defaults[k], True) for k in LEADING if isinstance(defaults.get(k), int)] + \
        [(k, defaults[k], False) for k in TRAILING if isinstance(defaults.get(k), int)]

    def kind(i: int) -> tuple:
        return (tuple(defaults[k][i] for k in values), tuple(defaults[k][i] == i for k in sources),
                tuple(i in defaults[k] for k in indices),
                tuple(repr(next((v for c, v in defaults[k].items() if int(c) == i), None)) for k in keyed),
                tuple(i < c if first else i >= n_layers - c for _, c, first in counts))

    kept = set(dict((kind(i), i) for i in reversed(range(n_layers))).values())
    kept |= {defaults[k][i] for k in sources for i in kept}
    kept = sorted(kept)
    return kept if len(kept) > 1 else [0, 1]


def _keep_layers(defaults: dict, n_layers: int, kwargs: dict) -> None:
    """Set in `kwargs` every per-layer key of `defaults` for the `kept_layers` alone (renumbered)."""
    kept = kept_layers(defaults, n_layers)
    new = {old: i for i, old in enumerate(kept)}
    values, sources, indices, keyed = _layer_keys(defaults, n_layers)
    for key in values:
        kwargs[key] = [SIZES.get(key, defaults[key][i]) if isinstance(defaults[key][i], int) and key in SIZES
                       else defaults[key][i] for i in kept]
    for key in sources:
        kwargs[key] = [new[defaults[key][i]] for i in kept]
    for key in indices:
        kwargs[key] = [new[i] for i in defaults[key] if i in new]
    for key in keyed:
        width = max(len(str(k)) for k in defaults[key])
        kwargs[key] = {(str(new[int(k)]).zfill(width) if isinstance(k, str) else new[int(k)]): _sized(v)
                       for k, v in defaults[key].items() if int(k) in new}
    for key in LEADING:
        if isinstance(defaults.get(key), int):
            kwargs[key] = sum(1 for i in kept if i < defaults[key])
    for key in TRAILING:
        if isinstance(defaults.get(key), int):
            kwargs[key] = sum(1 for i in kept if i >= n_layers - defaults[key])
    for count in LAYER_COUNTS:
        if count in defaults:
            kwargs[count] = len(kept)


def _sized(values):
    """A layer's own config values (a dict) with the `SIZES` rules applied."""
    if not isinstance(values, dict):
        return values
    sized = {k: SIZES[k] if k in SIZES and isinstance(v, int) and not isinstance(v, bool) and v > 0 else v
             for k, v in values.items()}
    if "num_attention_heads" in values and values.get("num_key_value_heads") == values["num_attention_heads"]:
        sized["num_key_value_heads"] = sized["num_attention_heads"]  # no key/value groups stays so
    return sized


def _is_layer_dict(key: str, value) -> bool:
    return isinstance(value, dict) and bool(value) and "layer" in key and all(str(k).isdigit() for k in value)


def _is_subconfig(key: str, value) -> bool:
    return isinstance(value, dict) and not _is_layer_dict(key, value) and \
        (key in SUBCONFIGS or key.endswith("_config") or "model_type" in value)


def shrunk(defaults: dict, vocab_size: int, extra: dict | None = None) -> dict:
    """Keyword overrides that make a config with these `defaults` tiny."""
    kwargs = {k: v for k, v in SIZES.items() if isinstance(defaults.get(k), int) and not isinstance(defaults.get(k), bool)
              and defaults[k] > 0}
    n_layers = next((defaults[k] for k in LAYER_COUNTS if isinstance(defaults.get(k), int)), None)
    if n_layers is not None and n_layers > 1:
        _keep_layers(defaults, n_layers, kwargs)
    for key, value in defaults.items():
        if isinstance(value, str) and n_layers and len(value) == n_layers and key.endswith("pattern"):
            kwargs[key] = "".join(dict.fromkeys(value)) if len(set(value)) > 1 else value[:2]
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("_period"):
            kwargs[key] = 2
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("_offset"):
            kwargs[key] = 1
        elif _is_subconfig(key, value):
            kwargs[key] = {**value, **shrunk(value, vocab_size, (extra or {}).get(key))}
    if "qk_rope_head_dim" in defaults:  # multi-head latent attention: head_dim is the rope part, no kv groups
        if "head_dim" in defaults:
            kwargs["head_dim"] = SIZES["qk_rope_head_dim"]
        if "num_key_value_heads" in defaults:
            kwargs["num_key_value_heads"] = SIZES["num_attention_heads"]
    for key in ("num_experts_per_tok", "moe_topk", "top_k"):
        if key in defaults and defaults[key] is None and any(isinstance(defaults.get(k), int) and defaults[k] > 1
                                                             for k in ("n_routed_experts", "num_experts")):
            kwargs[key] = 2
    for key in ("vocab_size", "vocab_size_per_layer_input"):
        if key in defaults and defaults[key] != 0:
            kwargs[key] = vocab_size
    for key, token in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)):
        if key in defaults:
            kwargs[key] = token
    kwargs.update({k: v for k, v in (extra or {}).items() if not isinstance(v, dict) or k not in kwargs})
    return kwargs


def _merged(base: dict, changes: dict) -> dict:
    """`base` with `changes`, sub-dicts merged key by key."""
    return {**base, **{k: _merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in changes.items()}}


def tiny_config(model_type: str, vocab_size: int):
    """The family's config with a real checkpoint's missing values (`CHECKPOINT`), shrunk; for a family whose
    causal LM takes a sub-config (`CAUSAL_LM_SUBCONFIG`), that sub-config."""
    checkpoint = CHECKPOINT.get(model_type, {})
    try:
        defaults = _merged(AutoConfig.for_model(model_type).to_dict(), checkpoint)
    except Exception:  # noqa: BLE001 - defaults that do not validate: a checkpoint's values first
        defaults = _merged(AutoConfig.for_model(model_type, **checkpoint).to_dict(), checkpoint)
    kwargs = _merged(checkpoint, shrunk(defaults, vocab_size, EXTRA.get(model_type)))
    config = AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if k != "model_type"})
    sub = CAUSAL_LM_SUBCONFIG.get(model_type)
    return getattr(config, sub) if sub else config


def build(model_type: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random float32 model of `model_type` in eval mode (eager attention where the family has it)."""
    config = tiny_config(model_type, vocab_size)
    causal_lm = AutoModelForCausalLM.from_config if model_type not in CAUSAL_LM_SUBCONFIG else \
        getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])._from_config
    with torch.device("meta"):
        shell = causal_lm(config)
    n_parameters = sum(p.numel() for p in shell.parameters())
    if n_parameters > MAX_PARAMETERS:
        largest = max(shell.named_parameters(), key=lambda item: item[1].numel())
        raise ValueError(f"the shrunk config still has {n_parameters:,} parameters (largest: {largest[0]} "
                         f"{tuple(largest[1].shape)})")
    torch.manual_seed(seed)
    try:
        model = causal_lm(config, attn_implementation="eager")
    except (ValueError, TypeError):
        model = causal_lm(config)
    if hasattr(model, "set_default_language") and getattr(config, "languages", None):  # X-MOD's adapters
        model.set_default_language(config.languages[0])
    with torch.no_grad():  # routers and gates some families initialise to zero would route by ties
        for parameter in model.parameters():
            if parameter.ndim >= 2 and not parameter.any():
                parameter.normal_(0, 0.02)
        _fill_routing_tables(model, config)
    return model.float().eval()


def _fill_routing_tables(model: torch.nn.Module, config) -> None:
    """A token → experts table (an integer (vocab, k) buffer, DeepSeek-V4's hash routing) is all zeros at
    initialisation, which sends every token to expert 0 k times; a checkpoint's table names k distinct
    experts per token: draw such a table."""
    experts = next((getattr(config, k) for k in ("n_routed_experts", "num_local_experts", "num_experts")
                    if isinstance(getattr(config, k, None), int)), None)
    vocab = getattr(config, "vocab_size", None)
    for buffer in model.buffers():
        if experts and buffer.ndim == 2 and not buffer.is_floating_point() and buffer.shape[0] == vocab and \
                1 < buffer.shape[1] <= experts and not buffer.any():
            buffer.copy_(torch.rand(vocab, experts).argsort(-1)[:, :buffer.shape[1]])
