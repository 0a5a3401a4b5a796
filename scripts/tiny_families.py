"""Tiny random models of any causal-LM family of the installed transformers, from its own config class.

The default config of a family is shrunk by rules on attribute names (hidden ~64, 2 layers, 4 heads, 4
experts, small state-space dimensions, every sub-config likewise); per-layer type lists keep one layer
of each type, so a hybrid's tiny model has every block kind. `EXTRA` holds the few keys a family needs
beyond those rules. `build` refuses a model whose parameters would still exceed `MAX_PARAMETERS`.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

MAX_PARAMETERS = 20_000_000
HIDDEN = 64
# attribute name → tiny value (only attributes the family's default config has are set)
SIZES = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "n_embed", "word_embed_proj_dim",
                     "hidden_size_per_layer_input_dim"), HIDDEN),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers",
                     "encoder_layers", "num_decoder_layers"), 2),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads",
                     "encoder_attention_heads", "num_attention_heads_per_layer"), 4),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"), 2),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim",
                     "ffn_hidden_size", "d_ff", "inner_hidden_size", "ffn_intermediate_size"), 128),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
                     "moe_ffn_hidden_size", "expert_hidden_size", "shared_intermediate_size",
                     "moe_shared_expert_intermediate_size"), 32),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k", "moe_k", "num_experts_per_token",
                     "num_selected_experts"), 2),
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
    "num_hidden_groups": 1, "zero_expert_num": 2, "expert_ffn_hidden_size": 32,
}
LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers")
SUBCONFIGS = ("text_config", "vision_config", "audio_config", "decoder", "encoder", "attention_config",
              "ffn_config", "speech_config", "depth_decoder_config", "vq_config")
EXTRA: dict[str, dict] = {
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
    "deepseek_v2": dict(num_key_value_heads=4), "deepseek_v3": dict(num_key_value_heads=4),
    "deepseek_v32": dict(num_key_value_heads=4), "mamba2": dict(head_dim=2 * HIDDEN // 4),
    "recurrent_gemma": dict(num_hidden_layers=3), "bamba": dict(attn_layer_indices=[1]),
    "granitemoehybrid": dict(layer_types=["linear_attention", "full_attention"]),
    "zamba": dict(num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1,
                  layer_types=["linear_attention", "hybrid"] * 2),
}


def _is_layer_list(value, n_layers: int | None) -> bool:
    return isinstance(value, (list, tuple)) and n_layers is not None and len(value) == n_layers and \
        len(value) > 1 and all(isinstance(v, (str, int, bool)) for v in value)


def _distinct(value: list | tuple) -> list:
    """One entry per distinct type, in order of first appearance (at least two entries)."""
    kinds = list(dict.fromkeys(value))
    return kinds if len(kinds) > 1 else [kinds[0], kinds[0]]


def shrunk(defaults: dict, vocab_size: int, extra: dict | None = None) -> dict:
    """Keyword overrides that make a config with these `defaults` tiny."""
    kwargs = {k: v for k, v in SIZES.items() if isinstance(defaults.get(k), int) and not isinstance(defaults.get(k), bool)}
    n_layers = next((defaults[k] for k in LAYER_COUNTS if isinstance(defaults.get(k), int)), None)
    for key, value in defaults.items():
        if _is_layer_list(value, n_layers):
            kwargs[key] = _distinct(value)
            for count in LAYER_COUNTS:
                if count in kwargs:
                    kwargs[count] = len(kwargs[key])
        elif isinstance(value, str) and n_layers and len(value) == n_layers and key.endswith("pattern"):
            kwargs[key] = "".join(dict.fromkeys(value)) if len(set(value)) > 1 else value[:2]
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("_period"):
            kwargs[key] = 2
        elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("_offset"):
            kwargs[key] = 1
        elif key in SUBCONFIGS and isinstance(value, dict):
            kwargs[key] = {**value, **shrunk(value, vocab_size)}
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
        if key in defaults:
            kwargs[key] = vocab_size
    for key, token in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)):
        if key in defaults:
            kwargs[key] = token
    kwargs.update(extra or {})
    return kwargs


def tiny_config(model_type: str, vocab_size: int):
    defaults = AutoConfig.for_model(model_type).to_dict()
    kwargs = shrunk(defaults, vocab_size, EXTRA.get(model_type))
    return AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if k != "model_type"})


def build(model_type: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random float32 model of `model_type` in eval mode (eager attention where the family has it)."""
    config = tiny_config(model_type, vocab_size)
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config)
    n_parameters = sum(p.numel() for p in shell.parameters())
    if n_parameters > MAX_PARAMETERS:
        largest = max(shell.named_parameters(), key=lambda item: item[1].numel())
        raise ValueError(f"the shrunk config still has {n_parameters:,} parameters (largest: {largest[0]} "
                         f"{tuple(largest[1].shape)})")
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except (ValueError, TypeError):
        model = AutoModelForCausalLM.from_config(config)
    if hasattr(model, "set_default_language") and getattr(config, "languages", None):  # X-MOD's adapters
        model.set_default_language(config.languages[0])
    with torch.no_grad():  # routers and gates some families initialise to zero would route by ties
        for parameter in model.parameters():
            if parameter.ndim >= 2 and not parameter.any():
                parameter.normal_(0, 0.02)
    return model.float().eval()
