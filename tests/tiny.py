"""Tiny random models of every supported family, and a real byte-level BPE tokenizer built offline."""

from __future__ import annotations

import copy
import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox", "opt"]

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
    config = AutoConfig.for_model(family, **common, **kw)
    return config


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised two-layer model of `family`, in float32 and eval mode."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.float().eval()
