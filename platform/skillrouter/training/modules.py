"""The models under training: each wraps the inference model (same input format, pooling and head) with its loss,
as one `nn.Module` whose forward returns the loss, which is the shape DeepSpeed's engine wants.

Each forward is split into chunks of at most `max_batch_tokens` tokens: a micro-batch of 8 groups with 10
negatives is 88 skill texts of very different lengths. Decoders (Qwen3) pack each chunk's sequences end to end in
one row (`models.packing`: no padding at all); BERT-style models pad length-sorted chunks, and one padded tensor
would waste most of its work on padding. The chunks join one autograd graph, so the loss is the same as with one
big batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from skillrouter.models import packing
from skillrouter.models.encoder import Encoder, length_batches
from skillrouter.models.loading import EXPORT_INFO, transformer_layers
from skillrouter.models.packing import Packed
from skillrouter.models.reranker import Reranker
from skillrouter.training.losses import InfoNCELoss, ListwiseCELoss, PointwiseBCELoss


class _Trainable(nn.Module):
    """Common parts: chunked scoring of token-id lists and the Hugging Face export."""

    def __init__(self, wrapped: Encoder | Reranker, max_batch_tokens: int | None):
        super().__init__()
        self.backbone = wrapped.model  # registered: DeepSpeed sees (and shards) every parameter through it
        self.wrapped, self.max_batch_tokens = wrapped, max_batch_tokens
        self.tokens = self.padded_tokens = 0  # counted per forward, read by the loop for throughput figures
        # Under ZeRO-3 every forward of a layer gathers its shards from all ranks: ranks must run as many
        # forwards, or the one with more waits forever. The training loop sets this with several ZeRO-3 workers.
        self.sync_chunks = False

    def _as_input(self, ids: Sequence[Sequence[int]]) -> Packed | dict[str, torch.Tensor]:
        """One chunk's model input: a packed row for a decoder with packing on, else a padded batch."""
        return packing.pack(ids) if packing.is_enabled(self.backbone) else self.wrapped.pad(ids)

    def _inputs(self, ids: Sequence[Sequence[int]]) -> tuple[list, list[int]]:
        """The model inputs of one forward's chunks, and the order of `ids` they hold."""
        lengths = [len(x) for x in ids]
        if packing.is_enabled(self.backbone):
            runs = packing.pack_batches(lengths, self.max_batch_tokens)
        else:
            runs = [idx.tolist() for idx in length_batches(lengths, len(ids), self.max_batch_tokens)]
        chunks = [self._as_input([ids[i] for i in idx]) for idx in runs]
        self.tokens += sum(lengths)
        self.padded_tokens += sum(c.tokens if isinstance(c, Packed) else c["input_ids"].numel() for c in chunks)
        return chunks, [i for idx in runs for i in idx]

    def _chunked(self, ids: Sequence[Sequence[int]], score) -> torch.Tensor:
        chunks, order = self._inputs(ids)
        out = torch.cat([score(c) for c in chunks])
        out = out[torch.as_tensor(order, device=out.device).argsort()]
        if self.sync_chunks:
            counted = torch.tensor([len(chunks)], device=next(self.backbone.parameters()).device)
            torch.distributed.all_reduce(counted, op=torch.distributed.ReduceOp.MAX)
            missing = int(counted) - len(chunks)
            filler = self._as_input([[self.wrapped.tokenizer.pad_token_id]]) if missing else None
            for _ in range(missing):
                # a one-token forward whose score counts for nothing, but whose forward and backward gather every
                # layer as the other ranks' extra chunks do
                out = out + 0.0 * score(filler).sum()
        return out

    def export(self, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None, info: dict) -> Path:
        """Save the backbone in Hugging Face format with its tokenizer; `state_dict` (keys as in this module) is
        what ZeRO-3 gathered, None to use the live weights."""
        out = Path(out_dir)
        if state_dict is not None:
            state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
        self.backbone.save_pretrained(str(out), state_dict=state_dict)
        self.wrapped.tokenizer.save_pretrained(str(out))
        (out / EXPORT_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
        return out


class ContrastiveEncoder(_Trainable):
    """Bi-encoder + InfoNCE: queries against the batch's positives and every group's hard negatives."""

    def __init__(self, encoder: Encoder, loss: InfoNCELoss, max_batch_tokens: int | None = None):
        super().__init__(encoder, max_batch_tokens)
        self.loss = loss

    def forward(self, query_ids: Sequence[Sequence[int]], doc_ids: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        b, k = len(doc_ids), len(doc_ids[0]) - 1
        queries = self._chunked(query_ids, self.wrapped.forward)
        docs = self._chunked([d for group in doc_ids for d in group], self.wrapped.forward).view(b, k + 1, -1)
        with fp32_loss(queries):  # cosines over a temperature of 0.05: bf16's 3 digits would blur the logits
            return self.loss(queries.float(), docs[:, 0].float(), docs[:, 1:].float() if k else None)


class GroupReranker(_Trainable):
    """Cross-encoder scored over each group's [positive, negatives] pairs, listwise (default) or pointwise."""

    def __init__(self, reranker: Reranker, loss: ListwiseCELoss | PointwiseBCELoss,
                 max_batch_tokens: int | None = None):
        super().__init__(reranker, max_batch_tokens)
        self.loss = loss

    def forward(self, query_ids: Sequence[Sequence[int]], doc_ids: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        b, n = len(doc_ids), len(doc_ids[0])
        scores = self._chunked([d for group in doc_ids for d in group], self.wrapped.forward)
        with fp32_loss(scores):
            return self.loss(scores.view(b, n).float())


def fp32_loss(like: torch.Tensor):
    """The loss outside any autocast region (`precision: bf16-autocast` runs the forward in one)."""
    return torch.autocast(like.device.type, enabled=False)


def build_module(kind: str, model: str, max_length: int, temperature: float, *, device: str,
                 max_batch_tokens: int | None = None, gradient_checkpointing: bool = False,
                 mask_margin: float | None = None, loss: str = "listwise", packed: bool = False,
                 checkpoint_share: float = 1.0, compile: bool = False) -> _Trainable:
    """The trainable module for `kind` ('encoder' or 'reranker'), in fp32 on `device` (DeepSpeed casts to bf16
    and keeps fp32 master weights itself). `packed` packs a decoder's sequences (see `models.packing`); BERT-style
    models pad whatever it says. `checkpoint_share` and `compile`: see `TrainConfig`."""
    from skillrouter.models.encoder import EncoderSpec
    from skillrouter.models.reranker import RerankerSpec

    if kind == "encoder":
        wrapped = Encoder.load(EncoderSpec(model=model, max_length=max_length), device=device, dtype=torch.float32)
        module: _Trainable = ContrastiveEncoder(wrapped, InfoNCELoss(temperature, mask_margin), max_batch_tokens)
    elif kind == "reranker":
        wrapped = Reranker.load(RerankerSpec(model=model, max_length=max_length), device=device, dtype=torch.float32)
        objective = ListwiseCELoss(temperature) if loss == "listwise" else PointwiseBCELoss()
        module = GroupReranker(wrapped, objective, max_batch_tokens)
    else:
        raise ValueError(f"unknown model kind '{kind}': encoder or reranker")
    wrapped.model.train()
    if packed and wrapped.decoder:
        packing.enable(wrapped.model)
    if gradient_checkpointing:
        wrapped.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(wrapped.model.config, "use_cache"):
            wrapped.model.config.use_cache = False
        # evenly spaced: share 0.5 recomputes every other one
        for i, layer in enumerate(transformer_layers(wrapped.model)):
            layer.gradient_checkpointing = math.floor((i + 1) * checkpoint_share) > math.floor(i * checkpoint_share)
    if compile:
        for layer in transformer_layers(wrapped.model):
            # per layer, not the whole model: one graph reused by every layer, and packed rows of any length
            layer.compile(dynamic=True)
    return module
