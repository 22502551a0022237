"""Traced copies of the models one-shot commands such as `skillrouter route` run, loadable with torch alone.

A fresh process pays about 3 s for `transformers` before its first query on this project's 2-core CPU machines
(its model modules import torch.distributed, sympy and scipy), and `route` is one fresh process per request.
`save_traced` traces an `Encoder`'s query path (its model, pooling and normalisation: `Encoder.forward` itself), and
`save_traced_pairs` a `Reranker`'s pair scoring (`Reranker.forward`), with TorchScript, keeping the tokenizer's own
file beside each; `TracedQueries` and `TracedPairs` run them with `torch` and `tokenizers` only. A trace is saved
only when it gives the model's token ids and outputs on inputs of every length (short, multi-line, non-ASCII, cut
at `max_length`), and it runs one input at a time, the shapes it was checked at. `QueryEncoders` and `Rerankers`
pick: the trace for a few requests, the model itself (loaded on first use) for anything else.

BERT-style models on the CPU only (a reranker reading one window): a decoder's last-token pooling branches on the
padding side, which a trace would freeze.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from skillrouter.corpus.skill import Skill
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.models.reranker import Reranker, RerankerSpec

TRACE_FILE, TOKENIZER_FILE, INFO_FILE = "model.pt", "tokenizer.json", "trace.json"
TRACED_MAX_QUERIES = 8  # more requests at once (an evaluation) go to the model itself, in padded batches
CHECK_QUERIES = ("pdf", "merge these PDF files into one",
                 "Our CI takes 25 minutes.\nCache the dependencies and run the test shards in parallel.",
                 "Übersetze die Datei ins Englische, s'il vous plaît: 日本語のテキストも",
                 "find why the orders query got slow " * 120)  # longer than any max_length: truncation


def _trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]):
    """A TorchScript trace of `module` on `inputs`; None when the model cannot be traced."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and its tracer's notes on Python branches
        try:
            return torch.jit.trace(module.eval(), inputs, strict=False)
        except Exception:  # noqa: BLE001 - a model TorchScript cannot trace keeps its own path
            return None


def _backend_tokenizer(tokenizer, max_length: int, strategy: str = "longest_first"):
    """A copy of a transformers tokenizer's `tokenizers.Tokenizer`, truncating as the model's inputs do."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length, strategy=strategy)
    return backend


def _write(directory: str | Path, module, tokenizer, info: dict) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{TRACE_FILE}.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp))
    tokenizer.save(str(out / TOKENIZER_FILE))
    (out / INFO_FILE).write_text(json.dumps({**info, "torch": torch.__version__}) + "\n")
    tmp.replace(out / TRACE_FILE)  # last: a reader sees a trace only with its tokenizer and info


def _read(directory: str | Path):
    """(module, tokenizer, info) that `_write` wrote; None when there is none or another torch made it."""
    root = Path(directory)
    if not (root / TRACE_FILE).is_file():
        return None
    info = json.loads((root / INFO_FILE).read_text())
    if info.get("torch") != torch.__version__:
        return None
    from tokenizers import Tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(root / TRACE_FILE), map_location="cpu")
    return module, Tokenizer.from_file(str(root / TOKENIZER_FILE)), info


def _traceable(model, tokenizer, decoder: bool) -> bool:
    return not decoder and next(model.parameters()).device.type == "cpu" and \
        getattr(tokenizer, "backend_tokenizer", None) is not None


# ---- the encoder's query path


class _QueryPath(torch.nn.Module):
    """`Encoder.forward` on (input_ids, attention_mask), as a module TorchScript can trace."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.model, self.encoder = encoder.model, encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward({"input_ids": input_ids, "attention_mask": attention_mask})


class TracedQueries:
    """`encode_queries` of a traced encoder: `tokenizers` and the TorchScript module, one query at a time."""

    def __init__(self, module, tokenizer, query_max_chars: int):
        self.module, self.tokenizer, self.query_max_chars = module, tokenizer, query_max_chars

    @torch.inference_mode()
    @torch.jit.optimized_execution(False)  # a process runs it a few times: optimising costs more than it saves
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        rows = []
        for query in queries:
            ids = torch.tensor([self.tokenizer.encode(query[: self.query_max_chars]).ids])
            rows.append(self.module(ids, torch.ones_like(ids))[0].numpy())
        return np.stack(rows).astype(np.float32, copy=False)


def save_traced(encoder: Encoder, directory: str | Path) -> bool:
    """Trace `encoder`'s query path into `directory`; False (nothing written) when it cannot be traced or the trace
    differs from the encoder on `CHECK_QUERIES` (ids, or vectors by more than 1e-6)."""
    if not _traceable(encoder.model, encoder.tokenizer, encoder.decoder):
        return False
    example = encoder.pad(encoder.tokenize([encoder.format_query(CHECK_QUERIES[1])]))
    module = _trace(_QueryPath(encoder), (example["input_ids"], example["attention_mask"]))
    if module is None:
        return False
    tokenizer = _backend_tokenizer(encoder.tokenizer, encoder.spec.max_length)
    traced = TracedQueries(module, tokenizer, encoder.spec.query_max_chars)
    for query in CHECK_QUERIES:
        if tokenizer.encode(query[: encoder.spec.query_max_chars]).ids != \
                encoder.tokenize([encoder.format_query(query)])[0]:
            return False
        if np.abs(traced.encode_queries([query]) - encoder.encode_queries([query])).max() > 1e-6:
            return False
    _write(directory, module, tokenizer, {"model": encoder.spec.model, "max_length": encoder.spec.max_length,
                                         "query_max_chars": encoder.spec.query_max_chars})
    return True


def load_traced(directory: str | Path) -> TracedQueries | None:
    """The trace `save_traced` wrote in `directory`; None when there is none or another torch made it."""
    read = _read(directory)
    return None if read is None else TracedQueries(read[0], read[1], read[2]["query_max_chars"])


class _Lazy:
    """A model loaded only when needed: its trace in `directory` (when there is one) for calls of up to
    `TRACED_MAX_QUERIES` requests, else the full model for `spec`, loaded once, which saves a trace for the next
    process where there was none. Subclasses name the loaders."""

    _load_trace: Callable
    _save_trace: Callable
    _load_full: Callable

    def __init__(self, spec, directory: str | Path):
        self.spec, self.directory = spec, Path(directory)
        self._traced = False  # False: not looked for yet; then the trace or None
        self._full = None

    @property
    def traced(self):
        if self._traced is False:
            self._traced = type(self)._load_trace(self.directory)
        return self._traced

    @property
    def full(self):
        if self._full is None:
            self._full = type(self)._load_full(self.spec)
            if not (self.directory / TRACE_FILE).exists():
                type(self)._save_trace(self._full, self.directory)
        return self._full

    def _for(self, n: int):
        """The trace for `n` requests when it serves them (and the full model is not loaded anyway), else the model."""
        if n <= TRACED_MAX_QUERIES and self._full is None and self.traced is not None:
            return self.traced
        return self.full


class QueryEncoders(_Lazy):
    """A dense first stage's encoder (`_Lazy`): `encode_queries` of a few queries runs the trace; a batch, or
    `encode` on a cache miss, the `Encoder`."""

    _load_trace, _save_trace = load_traced, save_traced

    @staticmethod
    def _load_full(spec: EncoderSpec) -> Encoder:
        return Encoder.load(spec)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._for(len(queries)).encode_queries(queries)

    def encode(self, texts: Sequence[str], batch_size: int = 64, max_batch_tokens: int | None = None) -> np.ndarray:
        return self.full.encode(texts, batch_size, max_batch_tokens)


# ---- the reranker's pair scoring


class _PairPath(torch.nn.Module):
    """`Reranker.forward` on (input_ids, attention_mask, token_type_ids), as a module TorchScript can trace."""

    def __init__(self, reranker: Reranker):
        super().__init__()
        self.model, self.reranker = reranker.model, reranker

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.reranker.forward({"input_ids": input_ids, "attention_mask": attention_mask,
                                      "token_type_ids": token_type_ids})


class TracedPairs:
    """`score_batch` of a traced cross-encoder (`spec` as the reranker's, for `rerank_scores`' memo), one pair at a
    time: segment 0 up to the first [SEP], 1 after it, as `RerankerInputs.pad` gives them."""

    def __init__(self, module, tokenizer, spec: RerankerSpec, sep_token_id: int):
        self.module, self.tokenizer, self.spec, self.sep = module, tokenizer, spec, sep_token_id

    def pair_ids(self, query: str, skill: Skill) -> list[int]:
        return self.tokenizer.encode(query, skill.text()).ids

    @torch.inference_mode()
    @torch.jit.optimized_execution(False)
    def score_batch(self, items: Sequence[tuple[str, Sequence[Skill]]]) -> list[torch.Tensor]:
        scores = []
        for query, skills in items:
            for skill in skills:
                ids = torch.tensor([self.pair_ids(query, skill)])
                first_sep = (ids == self.sep).int().argmax(dim=1, keepdim=True)
                types = (torch.arange(ids.shape[1])[None, :] > first_sep).long()
                scores.append(float(self.module(ids, torch.ones_like(ids), types)[0]))
        return list(torch.split(torch.tensor(scores, dtype=torch.float32), [len(s) for _, s in items]))


def _check_skills() -> list[Skill]:
    return [Skill("check/short", "pdf-merge", "Merge PDF files.", "Use qpdf."),
            Skill("check/long", "ci-cache", "Cache CI dependencies; shard the tests.",
                  "## Steps\n" + "Restore the cache key from the lockfile, then run the shards. " * 80)]


def save_traced_pairs(reranker: Reranker, directory: str | Path) -> bool:
    """Trace `reranker`'s pair scoring (in its dtype) into `directory`; False (nothing written) when it cannot be
    traced (a decoder, windows, inputs other than BERT's three) or differs from the reranker on `CHECK_QUERIES` x two
    skills (ids, or scores by more than 1e-5)."""
    if reranker.spec.windows != 1 or not _traceable(reranker.model, reranker.tokenizer, reranker.decoder):
        return False
    skills = _check_skills()
    example = reranker.pad(reranker.pair_ids([reranker.format_pair(CHECK_QUERIES[1], skills[0])]))
    if sorted(example) != ["attention_mask", "input_ids", "token_type_ids"]:
        return False
    module = _trace(_PairPath(reranker), (example["input_ids"], example["attention_mask"], example["token_type_ids"]))
    if module is None:
        return False
    tokenizer = _backend_tokenizer(reranker.tokenizer, reranker.spec.max_length, "only_second")
    traced = TracedPairs(module, tokenizer, reranker.spec, reranker.tokenizer.sep_token_id)
    items = [(query, skills) for query in CHECK_QUERIES[:-1]]  # a query longer than max_length: no room to cut
    for query, skill in ((q, s) for q, ss in items for s in ss):
        if traced.pair_ids(query, skill) != reranker.pair_ids([reranker.format_pair(query, skill)])[0]:
            return False
    # one pair at a time, as the trace runs: in bf16 a padded batch's kernels round differently from a lone pair's
    mine = torch.cat(traced.score_batch(items))
    theirs = torch.cat([reranker.score_batch([(query, [skill])])[0] for query, ss in items for skill in ss])
    if float((mine - theirs).abs().max()) > 1e-5:
        return False
    spec = reranker.spec
    _write(directory, module, tokenizer, {"model": spec.model, "max_length": spec.max_length,
                                         "instruction": spec.instruction, "windows": spec.windows,
                                         "dtype": spec.dtype, "sep_token_id": reranker.tokenizer.sep_token_id})
    return True


def load_traced_pairs(directory: str | Path) -> TracedPairs | None:
    read = _read(directory)
    if read is None:
        return None
    module, tokenizer, info = read
    spec = RerankerSpec(info["model"], info["max_length"], info["instruction"], info["windows"], info.get("dtype"))
    return TracedPairs(module, tokenizer, spec, info["sep_token_id"])


class Rerankers(_Lazy):
    """A reranked system's cross-encoder (`_Lazy`): `for_requests(n)` gives the trace for a few requests, else
    the `Reranker`."""

    _load_trace, _save_trace = load_traced_pairs, save_traced_pairs

    @staticmethod
    def _load_full(spec: RerankerSpec) -> Reranker:
        return Reranker.load(spec)

    def for_requests(self, n: int):
        return self._for(n)


def trace_dir(cache_dir: str | Path, kind: str, model: str, key: str) -> Path:
    """Where the trace of `model` (a name or path) with settings `key` lives under the cache: a retrained model in
    the same folder is a new version (`model_version`), so a new folder."""
    from skillrouter.models.loading import model_version

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/"))[-60:]
    version = hashlib.sha256(f"{key}|{model_version(model)}".encode()).hexdigest()[:8]
    return Path(cache_dir) / "traced" / kind / f"{slug}-{version}"
