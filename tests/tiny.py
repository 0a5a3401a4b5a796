"""Tiny random models of every supported family, and a real byte-level BPE tokenizer built offline."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox", "opt"]
# One family per layout kind beyond the dense ones: fused-expert MoE, MoE with a shared expert, mixed
# dense/MoE layers, Mamba, an attention/Mamba/MoE hybrid, and experts held as one nn.Linear MLP each.
LAYOUT_FAMILIES = ["qwen3_moe", "qwen2_moe", "deepseek_v3", "mamba", "jamba", "linear_experts"]
_MOE = dict(moe_intermediate_size=24, num_experts_per_tok=2)
_EXTRA = {
    "qwen3_moe": dict(num_experts=4, norm_topk_prob=True, **_MOE),
    "qwen2_moe": dict(num_experts=4, shared_expert_intermediate_size=40, **_MOE),
    "deepseek_v3": dict(num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1,
                        q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
                        **_MOE),
    "jamba": dict(num_experts=4, num_experts_per_tok=2, attn_layer_period=2, attn_layer_offset=1,
                  expert_layer_period=2, expert_layer_offset=1, mamba_d_state=4, mamba_dt_rank=8,
                  use_mamba_kernels=False),
}

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sentences and non-word strings: the language localizer contrasts them.",
    "POME OY REE HOLILY SHOURN NE SLEOMING WHIMP",
    "She didn't know that the keys were in the drawer, so she looked elsewhere!",
    "1 + 2 = 3; 117 - 104 = 13. What is 15 + 4?",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE (leading-space tokens, offsets) trained on a few sentences; a fresh
    copy each call, so that one test setting a pad token never changes what another test sees."""
    return copy.deepcopy(_trained_tokenizer())


@functools.lru_cache(maxsize=1)
def _trained_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    return fast


def tiny_config(family: str, vocab_size: int):
    """A two-layer config with small widths for `family`."""
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    if family == "mamba":
        return AutoConfig.for_model(family, **common, num_hidden_layers=2, hidden_size=32, state_size=4,
                                    intermediate_size=64, time_step_rank=8, use_mambapy=False)
    if family == "gpt2":
        kw = dict(n_layer=2, n_embd=32, n_head=4, n_positions=128, n_inner=48)
    elif family == "gpt_neox":
        kw = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=128)
    elif family == "opt":
        kw = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=48,
                  max_position_embeddings=128, word_embed_proj_dim=32)
    else:
        kw = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=128, head_dim=8)
        if family in ("gemma2", "gemma3_text"):
            kw.update(sliding_window=16)
        if family == "phi3":
            kw.pop("head_dim")
        kw.update(_EXTRA.get(family, {}))
    config = AutoConfig.for_model(family, **common, **kw)
    return config


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised two-layer model of `family`, in float32 and eval mode."""
    tokenizer = tiny_tokenizer()
    if family == "linear_experts":
        return linear_experts_model(len(tokenizer), seed)
    config = tiny_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    kwargs = {} if family == "mamba" else {"attn_implementation": "eager"}
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    return model.float().eval()


class _ExpertMLP(nn.Module):
    """One expert as its own module of nn.Linear layers (transformers 4's Mixtral `w1`/`w3` gate/up, `w2` down)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.w1, self.w3 = nn.Linear(hidden, width, bias=False), nn.Linear(hidden, width, bias=False)
        self.w2 = nn.Linear(width, hidden, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act_fn(self.w1(x)) * self.w3(x))


class _SparseMoeBlock(nn.Module):
    """transformers 4.x Mixtral's sparse block: an nn.Linear router, softmax, top-k renormalised, and a loop
    feeding each expert the rows of its tokens (ordered by top-k slot, then token)."""

    def __init__(self, hidden: int, width: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(hidden, n_experts, bias=False)
        self.experts = nn.ModuleList([_ExpertMLP(hidden, width) for _ in range(n_experts)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = hidden_states.shape
        flat = hidden_states.view(-1, hidden)
        routing = torch.softmax(self.gate(flat), dim=1, dtype=torch.float)
        weights, chosen = torch.topk(routing, self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(flat.dtype)
        out = torch.zeros_like(flat)
        mask = nn.functional.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, token = torch.where(mask[e])
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        return out.view(batch, length, hidden)


def linear_experts_model(vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A tiny Llama whose MLPs are transformers 4-style sparse blocks of per-expert nn.Linear modules (the
    layout of Mixtral and Qwen-MoE before transformers 5 fused the experts, and of many remote-code MoEs)."""
    config = tiny_config("llama", vocab_size)
    config.model_type = "linear_experts"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    for layer in model.model.layers:
        layer.mlp = _SparseMoeBlock(config.hidden_size, 24, n_experts=4, top_k=2)
    return model.float().eval()
