"""Packed batches for decoder models: the sequences of a batch laid end to end in one row, each attending only to
itself, so no padding token is ever computed.

Training forwards hundreds of skill texts of very different lengths; padded chunks spent about a tenth of their
work on padding even when sorted by length. A packed row has none. On CUDA the attention runs torch's varlen
FlashAttention (`torch.nn.attention.varlen`, with document boundaries given as cumulative lengths); elsewhere a
per-sequence causal SDPA computes the same thing, which is what the CPU tests compare against padded forwards.

Positions restart at 0 for each sequence, so rotary embeddings see what they would see unpacked, and each
sequence's last token is at `cu_seq_lens[1:] - 1`.

Use: `enable(model)` once (padded calls keep working: without packing arguments the attention is plain SDPA), then
`model(**packed.model_inputs())` with a `Packed` from `pack(ids)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VARLEN = "skillrouter_varlen"


@dataclass
class Packed:
    """Token ids of several sequences in one row: `input_ids` and `position_ids` of shape (1, total tokens),
    `cu_seq_lens` (n + 1,) int32 offsets of each sequence, `max_length` the longest one."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seq_lens: torch.Tensor
    max_length: int

    @property
    def last_positions(self) -> torch.Tensor:
        """Index of each sequence's last token in the row."""
        return (self.cu_seq_lens[1:] - 1).long()

    @property
    def tokens(self) -> int:
        return self.input_ids.shape[1]

    def to(self, device) -> Packed:
        return Packed(self.input_ids.to(device), self.position_ids.to(device), self.cu_seq_lens.to(device),
                      self.max_length)

    def model_inputs(self) -> dict:
        """Keyword arguments for a transformers decoder whose attention is `VARLEN` (the names are transformers'
        own flash-attention ones, so they travel through every layer's `**kwargs`). No KV cache: a decoder
        otherwise builds one on every forward, copies included, that nothing reads."""
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "cu_seq_lens_q": self.cu_seq_lens,
                "cu_seq_lens_k": self.cu_seq_lens, "max_length_q": self.max_length, "max_length_k": self.max_length,
                "use_cache": False}


def pack(ids: Sequence[Sequence[int]]) -> Packed:
    lengths = [len(x) for x in ids]
    if not lengths or min(lengths) == 0:
        raise ValueError("packing needs at least one sequence and no empty one")
    flat = torch.tensor([t for x in ids for t in x], dtype=torch.long)[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return Packed(flat, positions, cu, max(lengths))


def last_token_states(model, packed: Packed, device) -> torch.Tensor:
    """The hidden state of each packed sequence's last token, from a transformers base decoder (no LM head) with
    packing enabled: what the encoder pools and the reranker's yes/no head reads."""
    packed = packed.to(device)
    return model(**packed.model_inputs()).last_hidden_state[0][packed.last_positions]


def pack_batches(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Consecutive runs of indices of at most `max_tokens` tokens each (a longer sequence alone): the packed rows
    of one forward, whose activations `max_tokens` bounds as `max_batch_tokens` bounds a padded chunk's."""
    out: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if out[-1] and max_tokens is not None and used + n > max_tokens:
            out.append([])
            used = 0
        out[-1].append(i)
        used += n
    return out if out[-1] else []


def _varlen_kernel():
    """torch's varlen FlashAttention (`torch.nn.attention.varlen`: in the torch 2.11 of the GPU image and the 2.13
    pinned here), and whether it takes grouped KV heads itself (2.13 does, 2.11 does not). Looked up once, by
    `enable`, outside any compiled region."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn, "enable_gqa" in inspect.signature(varlen_attn).parameters


_KERNEL: tuple | None = None


def _per_sequence(q, k, v, cu, scaling):
    """The reference: one causal SDPA per sequence. q (T, H, D), k and v (T, H, D) with KV heads repeated."""
    out = torch.empty_like(q)
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        part = F.scaled_dot_product_attention(*(x[start:end].transpose(0, 1) for x in (q, k, v)), is_causal=True,
                                              scale=scaling)
        out[start:end] = part.transpose(0, 1)
    return out


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """A transformers attention function. Packed calls (with `cu_seq_lens_q`) attend within each sequence;
    others fall through to SDPA. Inputs are (batch, heads, tokens, head_dim); the output (batch, tokens, heads,
    head_dim), as transformers expects of every attention function."""
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"a packed batch is one row, got {query.shape[0]}")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (T, heads, D)
    groups = q.shape[1] // k.shape[1]
    flash = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)  # FlashAttention's dtypes; fp32: the reference
    kernel, takes_gqa = _KERNEL if flash else (None, False)
    if groups > 1 and not takes_gqa:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if flash:
        extra = {"enable_gqa": True} if takes_gqa and groups > 1 else {}
        out = kernel(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, scale=scaling,
                     window_size=(-1, 0), **extra)  # window (-1, 0): causal
    else:
        out = _per_sequence(q, k, v, cu_seq_lens_q, scaling)
    return out[None], None


def enable(model) -> None:
    """Route `model`'s attention through `varlen_attention` (registered with transformers on first use)."""
    from transformers import AttentionInterface

    global _KERNEL
    if _KERNEL is None:
        try:
            _KERNEL = _varlen_kernel()
        except ImportError as exc:  # CPUs do without: they use the per-sequence reference
            if torch.cuda.is_available():
                raise RuntimeError(f"packing needs torch.nn.attention.varlen, which torch {torch.__version__} "
                                   "lacks: set packing: false") from exc
    AttentionInterface.register(VARLEN, varlen_attention)
    model.set_attn_implementation(VARLEN)


def is_enabled(model) -> bool:
    return getattr(model.config, "_attn_implementation", None) == VARLEN
