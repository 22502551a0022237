"""Cross-encoder rerankers: Qwen3-Reranker (a yes/no judgement of a causal LM) and BERT-style sequence
classification (MiniLM-initialised for the embedded default).

Qwen3-Reranker input: a fixed system prefix, then `<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>:
{name} | {description} | {body}`, then the assistant suffix with an empty think block. The score is
logit("yes") - logit("no") at the last position. Only the two rows of the LM head for "yes" and "no" are applied:
the full 151K-token vocabulary projection would cost as much as several transformer layers and is never needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from skillrouter.corpus.skill import Skill
from skillrouter.models import packing
from skillrouter.models.encoder import last_token_pool, length_batches
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
from skillrouter.models.windows import max_scores, skill_windows, windowed

PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a user's request, judge whether this agent skill serves it"


@dataclass(frozen=True)
class RerankerSpec:
    model: str = "minilm"
    max_length: int = 512
    instruction: str = DEFAULT_INSTRUCTION
    windows: int = 1  # a skill longer than the pair's room: the best of up to this many windows (models/windows.py)
    dtype: str | None = None  # when `load` gets none: "auto" (models.loading.inference_dtype), a name, None: fp32
                              # on a CPU; part of the spec, so scores stored for one dtype are never read for another


class RerankerInputs:
    """The reranker's input format without its weights (shared by Ray Data tokenizer actors, training and
    inference); `Reranker` extends it with the model."""

    def __init__(self, tokenizer, config, spec: RerankerSpec):
        self.tokenizer, self.decoder = prepare_tokenizer(tokenizer), is_decoder(config)
        self.spec = fit_to_model(spec, config, tokenizer)
        if self.decoder:
            yes, no = (self.tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no"))
            if yes is None or no is None or yes == self.tokenizer.unk_token_id or no == self.tokenizer.unk_token_id:
                raise ValueError(f"{spec.model}: the tokenizer has no single 'yes'/'no' tokens")
            self.yes_no = torch.tensor([yes, no])
            self.suffix_ids = self.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]

    @classmethod
    def from_spec(cls, spec: RerankerSpec) -> RerankerInputs:
        from transformers import AutoConfig, AutoTokenizer

        path = resolve_model_path(spec.model)
        return cls(AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path), spec)

    def format_pair(self, query: str, skill: Skill) -> str | tuple[str, str]:
        if self.decoder:
            return (f"{PREFIX}<Instruct>: {self.spec.instruction}\n<Query>: {query}\n<Document>: {skill.text()}"
                    f"{SUFFIX}")
        return query, skill.text()

    def pair_windows(self, query: str, skill: Skill) -> list[str | tuple[str, str]]:
        """`format_pair` of the skill, or with `spec.windows` > 1 of each window of a skill too long for the room
        the query and the format leave."""
        if self.spec.windows == 1:
            return [self.format_pair(query, skill)]
        room = self.spec.max_length - len(self.pair_ids([self.format_pair(query, replace(skill, body=""))])[0])
        return [self.format_pair(query, w) for w in skill_windows(self.tokenizer, skill, room, self.spec.windows)]

    def pair_ids(self, pairs: Sequence[str | tuple[str, str]]) -> list[list[int]]:
        """Token ids of formatted pairs, at most `max_length` each, unpadded."""
        if not self.decoder:
            queries, docs = zip(*pairs)
            # longest first: the document is cut, as "only_second" would, until the query is the longer one; a
            # query over half the room is then cut too, where "only_second" raised (a long request, a 500)
            return self.tokenizer(list(queries), list(docs), truncation="longest_first",
                                  max_length=self.spec.max_length)["input_ids"]
        # Truncate the document, never the suffix: the judgement is read at the suffix's last token.
        body = self.tokenizer([p[: -len(SUFFIX)] for p in pairs], add_special_tokens=False, truncation=True,
                              max_length=self.spec.max_length - len(self.suffix_ids))["input_ids"]
        return [b + self.suffix_ids for b in body]

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt")
        if not self.decoder and "token_type_ids" in self.tokenizer.model_input_names:
            # BERT pairs: segment 0 up to the first [SEP], segment 1 after it (pads included, masked anyway)
            first_sep = (batch["input_ids"] == self.tokenizer.sep_token_id).int().argmax(dim=1, keepdim=True)
            positions = torch.arange(batch["input_ids"].shape[1])[None, :]
            batch["token_type_ids"] = (positions > first_sep).long() * batch["attention_mask"]
        return batch

    def tokenize(self, pairs: Sequence[str | tuple[str, str]]) -> dict[str, torch.Tensor]:
        return self.pad(self.pair_ids(pairs))


class Reranker(RerankerInputs):
    """`score(query, skills)` -> one logit per skill; `forward(batch)` keeps gradients for training."""

    def __init__(self, model, tokenizer, spec: RerankerSpec, max_batch_tokens: int | None = None):
        super().__init__(tokenizer, model.config, spec)
        self.model = model.eval()
        self.new_parameters: set[str] = set()
        self.max_batch_tokens = max_batch_tokens  # tokens per forward in `score_batch`, padding included

    @classmethod
    def load(cls, spec: RerankerSpec | str = RerankerSpec(), device: str | None = None,
             dtype: torch.dtype | None = None, *, packed: bool = False, compile: bool = False,
             max_batch_tokens: int | None = None) -> Reranker:
        """`packed`: a decoder scores padding-free packed rows (`models.packing`; BERT-style models pad whatever
        it says). `compile`: torch.compile each transformer layer (one graph for every layer and any row length;
        pays on GPUs after a compile of a minute or so). `max_batch_tokens`: the budget of one forward (as TEI's
        `max-batch-tokens`): a batch is cut by tokens, not by pairs, so short pairs fill the GPU and long ones do
        not exhaust it."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        spec = RerankerSpec(model=spec) if isinstance(spec, str) else spec
        path = resolve_model_path(spec.model)
        device, dtype = device_and_dtype(device, dtype or spec.dtype)
        auto = AutoModelForCausalLM if is_decoder(AutoConfig.from_pretrained(path)) else \
            AutoModelForSequenceClassification
        extra = {} if auto is AutoModelForCausalLM else {"num_labels": 1}
        model, info = auto.from_pretrained(path, attn_implementation="sdpa", output_loading_info=True, **extra,
                                           **dtype_kwargs(dtype))
        reranker = cls(model.to(device), AutoTokenizer.from_pretrained(path), spec, max_batch_tokens)
        reranker.new_parameters = set(info["missing_keys"])  # a fresh classification head, when the base had none
        if packed and reranker.decoder:
            packing.enable(model)
        if compile:
            for layer in transformer_layers(model):
                layer.compile(dynamic=True)
        return reranker

    @property
    def packed(self) -> bool:
        return self.decoder and packing.is_enabled(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, batch: dict[str, torch.Tensor] | Packed) -> torch.Tensor:
        """One score per pair, with gradients (training calls this), from a padded batch or, for a decoder with
        packing enabled, a packed one."""
        if isinstance(batch, Packed):
            last = last_token_states(self.model.model, batch, self.device)
        else:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            if not self.decoder:
                return self.model(**batch).logits.squeeze(-1).float()
            hidden = self.model.model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
            last = last_token_pool(hidden, batch["attention_mask"])
        rows = self.model.lm_head.weight[self.yes_no.to(self.device)]  # (2, d): "yes" and "no" only
        logits = last @ rows.T
        if getattr(self.model.lm_head, "bias", None) is not None:
            logits = logits + self.model.lm_head.bias[self.yes_no.to(self.device)]
        return (logits[:, 0] - logits[:, 1]).float()

    def score(self, query: str, skills: Sequence[Skill], batch_size: int = 16) -> torch.Tensor:
        return self.score_batch([(query, skills)], batch_size)[0]

    @torch.inference_mode()
    def score_batch(self, items: Sequence[tuple[str, Sequence[Skill]]], batch_size: int = 16) -> list[torch.Tensor]:
        """One score tensor per (query, skills) item. The pairs of all items go through the model together: a
        serving replica scores several requests in one pass. Padded, in length-sorted batches of `batch_size`
        pairs (and `max_batch_tokens`, when set); packed, in rows of `max_batch_tokens` tokens (else `batch_size`
        pairs' worth of `max_length`), longest pairs first, with no padding at all."""
        flat = [(query, s) for query, skills in items for s in skills]
        pairs, owner = windowed(flat, lambda pair: self.pair_windows(*pair))
        out = np.empty(len(pairs))
        if pairs:
            ids = self.pair_ids(pairs)
            for idx in self.forward_batches([len(x) for x in ids], batch_size):
                inputs = [ids[i] for i in idx]
                out[idx] = self.forward(pack(inputs) if self.packed else self.pad(inputs)).cpu().numpy()
        best = torch.from_numpy(max_scores(out, owner, len(flat))).float()
        return list(torch.split(best, [len(skills) for _, skills in items]))

    def forward_batches(self, lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
        """The pairs of each forward, as indices: see `score_batch`."""
        if not self.packed:
            return length_batches(lengths, batch_size, self.max_batch_tokens)
        order = np.argsort([-n for n in lengths], kind="stable")
        budget = self.max_batch_tokens or batch_size * self.spec.max_length
        return [order[run] for run in pack_batches([lengths[i] for i in order], budget)]
