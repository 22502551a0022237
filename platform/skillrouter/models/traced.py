"""A query encoder that loads with torch alone, for one-shot commands such as `skillrouter route`.

A fresh process pays about 3 s for `transformers` before its first query on this project's 2-core CPU machines
(its model modules import torch.distributed, sympy and scipy), and `route` is one fresh process per request.
`save_traced` traces an `Encoder`'s query path (its model, pooling and normalisation: `Encoder.forward` itself) with
TorchScript and keeps the tokenizer's own file beside it; `TracedQueries` runs them with `torch` and `tokenizers`
only. A trace is saved only when it gives the encoder's token ids and vectors on queries of every length (short,
multi-line, non-ASCII, cut at `max_length`), and it runs one query at a time, the shapes it was checked at.
`QueryEncoders` picks: the trace for a few queries, the encoder itself (loaded on first use) for anything else.

BERT-style encoders on the CPU only: a decoder's last-token pooling branches on the padding side, which a trace
would freeze.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from skillrouter.models.encoder import Encoder, EncoderSpec

TRACE_FILE, TOKENIZER_FILE, INFO_FILE = "encoder.pt", "tokenizer.json", "trace.json"
TRACED_MAX_QUERIES = 8  # more queries at once (an evaluation) go to the encoder in padded batches
CHECK_QUERIES = ("pdf", "merge these PDF files into one",
                 "Our CI takes 25 minutes.\nCache the dependencies and run the test shards in parallel.",
                 "Übersetze die Datei ins Englische, s'il vous plaît: 日本語のテキストも",
                 "find why the orders query got slow " * 120)  # longer than any max_length: truncation


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
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        rows = []
        for query in queries:
            ids = torch.tensor([self.tokenizer.encode(query[: self.query_max_chars]).ids])
            rows.append(self.module(ids, torch.ones_like(ids))[0].numpy())
        return np.stack(rows).astype(np.float32, copy=False)


def _backend_tokenizer(encoder: Encoder):
    """The encoder's `tokenizers.Tokenizer`, truncating at its `max_length` as `EncoderInputs.tokenize` does."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(encoder.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(encoder.spec.max_length)
    return tokenizer


def can_trace(encoder: Encoder) -> bool:
    return not encoder.decoder and encoder.device.type == "cpu" and \
        getattr(encoder.tokenizer, "backend_tokenizer", None) is not None


def save_traced(encoder: Encoder, directory: str | Path) -> bool:
    """Trace `encoder`'s query path into `directory`; False (nothing written) when it cannot be traced or the trace
    differs from the encoder on `CHECK_QUERIES` (ids, or vectors by more than 1e-6)."""
    if not can_trace(encoder):
        return False
    tokenizer = _backend_tokenizer(encoder)
    example = encoder.pad(encoder.tokenize([encoder.format_query(CHECK_QUERIES[1])]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and its tracer's notes on Python branches
        try:
            module = torch.jit.trace(_QueryPath(encoder).eval(), (example["input_ids"], example["attention_mask"]),
                                     strict=False)
        except Exception:  # noqa: BLE001 - a model TorchScript cannot trace keeps the encoder's own path
            return False
    traced = TracedQueries(module, tokenizer, encoder.spec.query_max_chars)
    for query in CHECK_QUERIES:
        if tokenizer.encode(query[: encoder.spec.query_max_chars]).ids != \
                encoder.tokenize([encoder.format_query(query)])[0]:
            return False
        if np.abs(traced.encode_queries([query]) - encoder.encode_queries([query])).max() > 1e-6:
            return False
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{TRACE_FILE}.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp))
    tokenizer.save(str(out / TOKENIZER_FILE))
    (out / INFO_FILE).write_text(json.dumps({"model": encoder.spec.model, "max_length": encoder.spec.max_length,
                                             "query_max_chars": encoder.spec.query_max_chars,
                                             "torch": torch.__version__}) + "\n")
    tmp.replace(out / TRACE_FILE)  # last: a reader sees a trace only with its tokenizer and info
    return True


def load_traced(directory: str | Path) -> TracedQueries | None:
    """The trace `save_traced` wrote in `directory`; None when there is none or another torch made it."""
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
    return TracedQueries(module, Tokenizer.from_file(str(root / TOKENIZER_FILE)), info["query_max_chars"])


class QueryEncoders:
    """A dense first stage's encoder, loaded only when needed: `encode_queries` of up to `TRACED_MAX_QUERIES`
    queries runs the trace in `directory` when there is one; anything else (a batch, `encode` on a cache miss) loads
    the `Encoder` for `spec` and, where there was no trace, saves one for the next process."""

    def __init__(self, spec: EncoderSpec, directory: str | Path):
        self.spec, self.directory = spec, Path(directory)
        self.traced = load_traced(self.directory)
        self._full: Encoder | None = None

    @property
    def full(self) -> Encoder:
        if self._full is None:
            self._full = Encoder.load(self.spec)
            if self.traced is None and save_traced(self._full, self.directory):
                self.traced = load_traced(self.directory)
        return self._full

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        if self.traced is not None and len(queries) <= TRACED_MAX_QUERIES:
            return self.traced.encode_queries(queries)
        return self.full.encode_queries(queries)

    def encode(self, texts: Sequence[str], batch_size: int = 64, max_batch_tokens: int | None = None) -> np.ndarray:
        return self.full.encode(texts, batch_size, max_batch_tokens)
