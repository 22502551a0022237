"""Qwen3 models built here, offline: a byte-level BPE tokenizer trained on our own text, and Qwen3 configs from a
tiny test size up to the 0.6B and 8B architectures (random weights: right for tests and speed figures, not for
quality). They save and load through transformers exactly like the published checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

QWEN3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3-Embedding / Qwen3-Reranker architectures (config.json of the published checkpoints).
QWEN3_SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128),
}


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 4096):
    """A byte-level BPE tokenizer with Qwen3's special tokens, saved as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN3_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    # Qwen3-Reranker reads its answer from the single tokens "yes" and "no"; make sure they exist.
    fast.add_tokens([AddedToken("yes", single_word=True), AddedToken("no", single_word=True)])
    fast.save_pretrained(str(out_dir))
    return fast


def qwen3_config(size: str = "tiny", vocab_size: int = 151_669, **overrides):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, max_position_embeddings=40_960, rope_theta=1_000_000.0,
                       tie_word_embeddings=size != "8b", rms_norm_eps=1e-6, **{**QWEN3_SIZES[size], **overrides})


def save_qwen3(out_dir: str | Path, tokenizer, size: str = "tiny", causal_lm: bool = False, seed: int = 0,
               device: str = "cpu", dtype=None):
    """A randomly initialised Qwen3 (base model for the encoder, causal LM for the reranker) with `tokenizer`.
    On a GPU give `device="cuda"` and `dtype=torch.bfloat16`: the weights are drawn there, in the dtype they are
    saved in (an 8B model drawn on the CPU in fp32 takes minutes)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = qwen3_config(size, vocab_size=len(tokenizer))
    with torch.device(device):
        model = (AutoModel if not causal_lm else AutoModelForCausalLM).from_config(config,
                                                                                    dtype=dtype or torch.float32)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)
