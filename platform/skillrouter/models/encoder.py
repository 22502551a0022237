"""Bi-encoders: Qwen3-Embedding (last-token pooling) and BERT-style models such as MiniLM (mean pooling).

Input formats, used alike by mining, training, indexing, serving and evaluation:
- Qwen3-Embedding: a query becomes `Instruct: {task}\\nQuery:{query}` (query capped at 1500 characters); a skill is
  `name | description | body` with no instruction. Left padding, the last token's hidden state, L2 norm.
- BERT-style: the text as it is, right padding, mean over the attention mask, L2 norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from skillrouter.corpus.skill import Skill, SkillText
from skillrouter.models import packing
from skillrouter.models.loading import (
    device_and_dtype,
    dtype_kwargs,
    fit_to_model,
    is_decoder,
    prepare_tokenizer,
    resolve_model_path,
    transformer_layers,
)
from skillrouter.models.packing import Packed, last_token_states, pack, pack_batches
from skillrouter.models.windows import mean_rows, skill_windows, windowed

DEFAULT_TASK = "Given a user's request, retrieve the agent skill that best serves it"
QUERY_MAX_CHARS = 1500


@dataclass(frozen=True)
class EncoderSpec:
    model: str = "minilm"
    max_length: int = 512
    task: str = DEFAULT_TASK
    query_max_chars: int = QUERY_MAX_CHARS
    windows: int = 1  # a skill longer than max_length: the mean of up to this many windows (models/windows.py)

    def cache_key(self) -> str:
        key = f"{self.model}|{self.max_length}|{self.task}|{self.query_max_chars}"
        return key + (f"|windows={self.windows}" if self.windows > 1 else "")  # keys written before stay valid

    @classmethod
    def from_cache_key(cls, key: str) -> EncoderSpec:
        """The spec a cache key (or an index's recorded encoder) was made from."""
        parts = key.split("|")
        windows = int(parts.pop().removeprefix("windows=")) if parts[-1].startswith("windows=") else 1
        model, max_length, *task, query_max_chars = parts
        return cls(model, int(max_length), "|".join(task), int(query_max_chars), windows)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each sequence's last real token, whichever side the padding is on."""
    if bool(mask[:, -1].all()):  # left padding: the last position is real for every row
        return hidden[:, -1]
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[np.ndarray]:
    """Indices sorted longest first and cut into batches of at most `batch_size` rows and, with
    `max_batch_tokens`, at most that many tokens including padding: little padding, bounded memory."""
    order = np.argsort([-n for n in lengths], kind="stable")
    out, start = [], 0
    while start < len(order):
        longest = max(1, lengths[order[start]])
        rows = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // longest))
        out.append(order[start:start + rows])
        start += rows
    return out


class EncoderInputs:
    """The encoder's input format without its weights: what Ray Data tokenizer actors and training share with
    inference. `Encoder` extends it with the model."""

    def __init__(self, tokenizer, config, spec: EncoderSpec):
        self.tokenizer, self.decoder = prepare_tokenizer(tokenizer), is_decoder(config)
        self.spec = fit_to_model(spec, config, tokenizer)

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> EncoderInputs:
        from transformers import AutoConfig, AutoTokenizer

        path = resolve_model_path(spec.model)
        return cls(AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path), spec)

    def format_query(self, query: str) -> str:
        query = query[: self.spec.query_max_chars]
        return f"Instruct: {self.spec.task}\nQuery:{query}" if self.decoder else query

    @staticmethod
    def format_skill(skill: Skill, fields: SkillText = "full") -> str:
        """`name | description | body` (no instruction), or `name | description` for the paper's ablation."""
        return skill.routing_text(fields)

    def skill_texts(self, skills: Sequence[Skill], fields: SkillText = "full") -> tuple[list[str], np.ndarray]:
        """The texts embedded for `skills` and the skill each belongs to: one per skill, or with `spec.windows` > 1
        up to that many windows of a long skill, to be averaged by `windows.mean_rows`."""
        if self.spec.windows == 1 or fields != "full":
            return [self.format_skill(s, fields) for s in skills], np.arange(len(skills))

        def expand(skill: Skill) -> list[str]:
            room = self.spec.max_length - len(self.tokenize([self.format_skill(replace(skill, body=""))])[0])
            return [self.format_skill(w) for w in skill_windows(self.tokenizer, skill, room, self.spec.windows)]
        return windowed(skills, expand)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of formatted texts, truncated to `max_length`, unpadded."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)["input_ids"]

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return self.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt")

    def batches(self, texts: Sequence[str], batch_size: int = 64,
                max_batch_tokens: int | None = None) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Tokenize once, then padded batches of similar length (see `length_batches`), longest first."""
        return self.id_batches(self.tokenize(texts), batch_size, max_batch_tokens)

    def id_batches(self, ids: Sequence[Sequence[int]], batch_size: int = 64,
                   max_batch_tokens: int | None = None) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """`batches` of texts already tokenized."""
        return [(idx, self.pad([ids[i] for i in idx]))
                for idx in length_batches([len(x) for x in ids], batch_size, max_batch_tokens)]


class Encoder(EncoderInputs):
    """Wraps a transformers model and tokenizer; `encode_queries` / `encode_skills` return unit float32 rows."""

    def __init__(self, model, tokenizer, spec: EncoderSpec):
        super().__init__(tokenizer, model.config, spec)
        self.model = model.eval()

    @classmethod
    def load(cls, spec: EncoderSpec | str = EncoderSpec(), device: str | None = None,
             dtype: torch.dtype | None = None, compile: bool = False, packed: bool = False) -> Encoder:
        """`compile` wraps the model in torch.compile (dynamic shapes): on an H200 the Qwen3-0.6B encoder went
        from 185K to 236K tokens/s after a 74 s compile, worth it for a whole corpus, not for a few queries.
        `packed`: a decoder embeds padding-free packed rows (`models.packing`); with `compile`, each layer is
        compiled instead (one graph for every layer and any row length)."""
        from transformers import AutoModel, AutoTokenizer

        spec = EncoderSpec(model=spec) if isinstance(spec, str) else spec
        path = resolve_model_path(spec.model)
        device, dtype = device_and_dtype(device, dtype)
        model = AutoModel.from_pretrained(path, attn_implementation="sdpa", **dtype_kwargs(dtype)).to(device)
        encoder = cls(model, AutoTokenizer.from_pretrained(path), spec)
        if packed and encoder.decoder:
            packing.enable(model)
            for layer in transformer_layers(model) if compile else []:
                layer.compile(dynamic=True)
        elif compile:
            encoder.model = torch.compile(encoder.model, dynamic=True)
        return encoder

    @property
    def packed(self) -> bool:
        return self.decoder and packing.is_enabled(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor] | Packed) -> torch.Tensor:
        """Pooled, L2-normalised embeddings with gradients (training calls this), from a padded batch or, for a
        decoder with packing enabled, a packed one."""
        if isinstance(batch, Packed):
            return torch.nn.functional.normalize(last_token_states(self.model, batch, self.device).float(), dim=-1)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.decoder:  # right padding + causal attention: pads are invisible to real tokens, no mask needed
            hidden = self.model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
        else:
            hidden = self.model(**batch).last_hidden_state
        pool = last_token_pool if self.decoder else mean_pool
        return torch.nn.functional.normalize(pool(hidden, batch["attention_mask"]).float(), dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 64, max_batch_tokens: int | None = None) -> np.ndarray:
        """Embed texts in length-sorted batches (little padding), returned in the input order; packed, in rows of
        `max_batch_tokens` tokens (else `batch_size` texts' worth of `max_length`) with no padding at all."""
        return self.encode_ids(self.tokenize(texts), batch_size, max_batch_tokens)

    @torch.inference_mode()
    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64,
                   max_batch_tokens: int | None = None) -> np.ndarray:
        """`encode` of texts already tokenized (`tokenize`), e.g. by CPU tasks feeding a GPU actor."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if not self.packed:
            for idx, batch in self.id_batches(ids, batch_size, max_batch_tokens):
                out[idx] = self.forward(batch).cpu().numpy()
            return out
        order = np.argsort([-len(x) for x in ids], kind="stable")
        budget = max_batch_tokens or batch_size * self.spec.max_length
        for run in pack_batches([len(ids[i]) for i in order], budget):
            idx = order[run]
            out[idx] = self.forward(pack([ids[i] for i in idx])).cpu().numpy()
        return out

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.encode([self.format_query(q) for q in queries], batch_size)

    def encode_skills(self, skills: Sequence[Skill], batch_size: int = 64, fields: SkillText = "full") -> np.ndarray:
        texts, owner = self.skill_texts(skills, fields)
        return mean_rows(self.encode(texts, batch_size), owner, len(skills))


def skill_texts(skills: Sequence[Skill], spec: EncoderSpec,
                fields: SkillText = "full") -> tuple[list[str], np.ndarray]:
    """`EncoderInputs.skill_texts` for callers that embed elsewhere (Ray Data actors, a serving replica): only a
    windowed spec over the full text loads the tokenizer."""
    if spec.windows == 1 or fields != "full":
        return [EncoderInputs.format_skill(s, fields) for s in skills], np.arange(len(skills))
    return EncoderInputs.from_spec(spec).skill_texts(skills)
