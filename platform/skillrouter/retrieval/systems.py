"""Named retrieval systems, so that `skillrouter eval --system NAME` and `Router(system=NAME)` mean one thing.

A system turns a list of skills into a `Retriever`: `search(queries, k) -> (indices, scores)`, indices into that
list, best first. Every first stage is `retrieval.first_stage.FirstStage`, the class serving runs (with an exact
in-memory dense search where serving searches Milvus), and every reranked system calls the reranker and orders
its answer with the functions serving uses (`retrieval.rerank_scores`, `retrieval.rerank_order`).

Fixed names: `bm25`, `bm25-nd` (name and description only), `minilm` (the bundled encoder, zero-shot), `finetuned`
(the encoder trained by the profile's run), `hybrid` (`minilm` and `bm25` fused, as serving's
`hybrid` first stage). A dense system ending in `-nd` (`minilm-nd`, `finetuned-nd`, `dense-nd:MODEL`) embeds each
skill's name and description only, the paper's ablation. `dense:MODEL` is a bi-encoder from a Hugging Face id or
a local path; `hybrid:SYSTEM` fuses any dense system with `bm25` (`hybrid:finetuned`, `hybrid:dense:MODEL`).

Any of them followed by `+reranker` (the profile's trained reranker) or `+rerank:MODEL` is retrieve-then-rerank:
the first stage's top `routing.retrieve_k` (20, as in the paper) are rescored by the cross-encoder over the full
skill text; the rest of the first stage's ranking follows them. `+reranker@W` (or `+rerank:MODEL@W`) orders the
head by W x the reranker's standardised score + (1 - W) x the first stage's (`retrieval.rerank`); the main job fits
W on held-out queries and serves the result only when it beats the first stage alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill, SkillText
from skillrouter.models.loading import export_info
from skillrouter.retrieval.bm25 import build_bm25
from skillrouter.retrieval.dense import VectorSearch
from skillrouter.retrieval.filters import Catalogue
from skillrouter.retrieval.first_stage import FirstStage, RetrieveQuery
from skillrouter.retrieval.fusion import Fusion
from skillrouter.retrieval.rerank import fused, rerank_order, rerank_scores, score_store

if TYPE_CHECKING:
    from skillrouter.models.encoder import EncoderSpec

QUERY_BATCH = 256  # queries per first-stage call: bounds the (queries x skills) score matrices


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class DenseModel:
    """A bi-encoder of a system: `spec(config)` gives the model (id or path), its max length and windows at build
    time (`finetuned` reads the profile); `fields` is what it reads of each skill."""

    spec: Callable[[PipelineConfig], EncoderSpec]
    fields: SkillText = "full"


@dataclass(frozen=True)
class System:
    name: str
    description: str
    build: Callable[[Sequence[Skill], PipelineConfig], Retriever]
    dense: DenseModel | None = None  # what `hybrid:NAME` fuses with bm25


class StageRetriever:
    """One kind of the shared first stage (`dense`, `bm25` or `hybrid`) as a `Retriever` over its catalogue."""

    def __init__(self, stage: FirstStage, kind: str):
        self.stage, self.kind = stage, kind

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.stage.catalogue))
        hits = []
        for start in range(0, len(queries), QUERY_BATCH):
            batch = [RetrieveQuery(q, k, self.kind) for q in queries[start:start + QUERY_BATCH]]
            hits += [r.hits for r in self.stage.search(batch)]
        rows = self.stage.catalogue.rows
        return (np.array([[rows[s] for s, _ in h] for h in hits], dtype=np.int64).reshape(len(hits), k),
                np.array([[x for _, x in h] for h in hits], dtype=np.float64).reshape(len(hits), k))


def first_stage(skills: Sequence[Skill], config: PipelineConfig, dense: DenseModel | None = None,
                bm25_text: Callable[[Skill], str] | None = None) -> FirstStage:
    """The shared first stage over `skills`: an encoder with exact dense search, BM25 over `bm25_text`, or both;
    fused as serving fuses (`serving.fusion`, `.dense_weight`, `.fusion_depth`, `.rrf_k`)."""
    catalogue = Catalogue(skills)
    encoder = search = bm25 = None
    if dense is not None:
        from skillrouter.models.traced import QueryEncoders, trace_dir  # torch only for the systems that need it
        from skillrouter.retrieval.embeddings import corpus_embeddings

        spec = dense.spec(config)
        # the model itself is loaded only for a batch of queries or a corpus the cache lacks: a request or two
        # (`skillrouter route`) runs its traced copy, without transformers' seconds of imports
        encoder = QueryEncoders(spec, trace_dir(config.mining.cache_dir, "encoder", spec.model, spec.cache_key()))
        search = VectorSearch.of_catalogue(catalogue, corpus_embeddings(catalogue.skills, spec, encoder, config,
                                                                         dense.fields))
    if bm25_text is not None:
        bm25 = build_bm25(catalogue.skills, config.bm25, bm25_text)
    return FirstStage(catalogue, encoder, search, bm25, Fusion.of(config.serving))


def _bm25_system(name: str, description: str, text: Callable[[Skill], str]) -> System:
    return System(name, description, lambda skills, config: StageRetriever(
        first_stage(skills, config, bm25_text=text), "bm25"))


def _dense_system(name: str, description: str, dense: DenseModel) -> System:
    return System(name, description, lambda skills, config: StageRetriever(
        first_stage(skills, config, dense=dense), "dense"), dense)


def trained_model(config: PipelineConfig, kind: str) -> str:
    """The export of this profile's `kind` training job; a clear error when it has not run."""
    path = config.model_dir(kind)
    if not (path / "config.json").exists():
        raise ValueError(f"no trained {kind} at {path}: run `skillrouter train {kind} --config ...` first")
    return str(path)


def _minilm(config: PipelineConfig) -> EncoderSpec:
    from skillrouter.models.encoder import EncoderSpec  # the models import torch: only systems that use one

    return EncoderSpec("minilm", config.mining.encoder_max_length, windows=config.mining.encoder_windows)


def exported_spec(model: str, max_length: int, windows: int) -> EncoderSpec:
    """`model` at the length and windows its training export records (a 128-token CPU model fed 512 tokens, or the
    reverse, ranks worse than either), else at these: an export's own settings win over any profile's."""
    from skillrouter.models.encoder import EncoderSpec

    info = export_info(model)
    return EncoderSpec(model, info.get("max_length") or max_length, windows=info.get("windows") or windows)


def _finetuned(config: PipelineConfig) -> EncoderSpec:
    # route without --config reads a MiniLM run with the Qwen3 defaults: the export's settings matter
    return exported_spec(trained_model(config, "encoder"), config.encoder.max_length, config.encoder.windows)


def _model(model: str) -> Callable[[PipelineConfig], EncoderSpec]:
    # any model that is not an export of our training jobs reads the profile's mining settings
    return lambda config: exported_spec(model, config.mining.encoder_max_length, config.mining.encoder_windows)


class RerankRetriever:
    """A first stage's top `retrieve_k` rescored by a cross-encoder, in serving's order (`rerank_order`): the
    reranked head, then the first stage's tail, scored below every reranked skill."""

    def __init__(self, first: Retriever, skills: Sequence[Skill], spec, retrieve_k: int, weight: float = 1.0,
                 cache_dir: str = ".cache/embeddings"):
        from skillrouter.models.traced import Rerankers, trace_dir

        self.first, self.skills, self.retrieve_k, self.weight = first, list(skills), retrieve_k, weight
        # loaded when first used: a request or two (`skillrouter route`) runs its traced copy (models.traced)
        self.reranker = Rerankers(spec, trace_dir(cache_dir, "reranker", spec.model, repr(spec)))
        self.cache_dir = cache_dir

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        from skillrouter.models.traced import TracedPairs

        indices, first_scores = self.first.search(queries, max(k, self.retrieve_k))
        heads = [[self.skills[i] for i in row[: self.retrieve_k]] for row in indices]
        reranker = self.reranker.for_requests(len(queries))
        # a batch (an evaluation) reads and adds to the scores earlier runs of the same weights stored
        store = None if isinstance(reranker, TracedPairs) else score_store(self.cache_dir, self.reranker.spec)
        scored = rerank_scores(reranker, list(zip(queries, heads)), store)
        out_idx, out_scores = [], []
        for row, row_scores, scores in zip(indices, first_scores, scored):
            hits = [(self.skills[i].id, float(x), i) for i, x in zip(row, row_scores)]
            ordered = rerank_order(hits, scores, self.retrieve_k, self.weight)[:k]
            if self.weight < 1.0:  # the scores the head was ordered by
                head = [h for h in hits[: self.retrieve_k] if h[0] in scores]
                scores = dict(zip((h[0] for h in head), fused([h[1] for h in head], [scores[h[0]] for h in head],
                                                              self.weight).tolist()))
            floor = min(scores.values(), default=0.0) - 1.0
            out_idx.append([i for *_, i in ordered])
            # the tail keeps its first-stage order below every reranked score
            out_scores.append([scores[s] if s in scores else floor - j for j, (s, *_) in enumerate(ordered)])
        return np.array(out_idx, dtype=np.int64), np.array(out_scores, dtype=np.float64)


def rerank_weight(second: str) -> tuple[str, float]:
    """`reranker@0.3` -> (`reranker`, 0.3): a second stage and its fusion weight (1 without `@`: the paper's order,
    the reranker's scores alone)."""
    stage, at, weight = second.rpartition("@")
    if not at:
        return second, 1.0
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"'{second}': the weight after @ is a number from 0 (the first stage's order) to 1 "
                         "(the reranker's)")
    return stage, value


def reranked_name(first: str, weight: float = 1.0, model: str | None = None) -> str:
    """The system name of `first` reranked: `FIRST+reranker` (the profile's trained one) or `FIRST+rerank:MODEL`,
    with `@W` when fused at a weight below 1; `rerank_weight` reads the suffix back."""
    return f"{first}+{'rerank:' + model if model else 'reranker'}" + (f"@{weight:g}" if weight < 1.0 else "")


def reranker_spec(config: PipelineConfig, model: str | None = None):
    """The cross-encoder `model` (default: the profile's trained reranker) at the length and windows its export
    records, else the profile's."""
    from skillrouter.models.reranker import RerankerSpec

    path = model or trained_model(config, "reranker")
    info = export_info(path)
    return RerankerSpec(path, info.get("max_length") or config.reranker.max_length,
                        windows=info.get("windows") or config.reranker.windows, dtype=config.reranker.inference_dtype)


def _reranked(first: System, model: str | None, weight: float = 1.0) -> System:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        spec = reranker_spec(config, model)
        return RerankRetriever(first.build(skills, config), skills, spec, config.routing.retrieve_k, weight,
                               config.mining.cache_dir)
    what = model or "the profile's trained reranker"
    how = f", fused with the first stage's scores at weight {weight:g}" if weight < 1.0 else ""
    return System(reranked_name(first.name, weight, model), f"{first.description}, top-k reranked by {what}{how}",
                  build)


def _hybrid(dense: System) -> System:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        return StageRetriever(first_stage(skills, config, dense=dense.dense, bm25_text=Skill.text), "hybrid")
    return System(f"hybrid:{dense.name}" if dense.name != "minilm" else "hybrid",
                  f"{dense.name} and bm25 fused as serving's hybrid (serving.fusion: by default equal weights of "
                  f"each one's min-max normalised scores over its top serving.fusion_depth)", build)


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        _bm25_system("bm25", "BM25 over the full skill text: name | description | body", Skill.text),
        _bm25_system("bm25-nd", "BM25 over name | description only (the paper's metadata-only baseline)",
                     Skill.name_description),
        _dense_system("minilm", "the bundled all-MiniLM-L6-v2 bi-encoder, zero-shot, over the full text",
                      DenseModel(_minilm)),
        _dense_system("minilm-nd", "minilm over name | description only", DenseModel(_minilm, "name_description")),
        _dense_system("finetuned", "the encoder fine-tuned by this profile's run (encoder.output_dir)",
                      DenseModel(_finetuned)),
        _dense_system("finetuned-nd", "the fine-tuned encoder over name | description only",
                      DenseModel(_finetuned, "name_description")),
    ]
}
SYSTEMS["hybrid"] = _hybrid(SYSTEMS["minilm"])


def trained_kinds(name: str) -> set[str]:
    """The profile's trained models a system uses: `encoder` for `finetuned`, `finetuned-nd` and their hybrids,
    `reranker` for `+reranker` (a `dense:PATH` or `+rerank:PATH` names its model itself)."""
    first, plus, second = name.partition("+")
    kinds = {"encoder"} if first.removeprefix("hybrid:") in ("finetuned", "finetuned-nd") else set()
    return kinds | ({"reranker"} if plus and rerank_weight(second)[0] == "reranker" else set())


def named_models(name: str) -> list[str]:
    """The models a system names itself, whose weights the profile does not fingerprint: `dense:MODEL` and
    `dense-nd:MODEL` (in a hybrid too) and `+rerank:MODEL`."""
    first, _, second = name.partition("+")
    first = first.removeprefix("hybrid:")
    dense = [first.partition(":")[2]] if first.startswith(("dense:", "dense-nd:")) else []
    second = rerank_weight(second)[0] if second else second
    return dense + ([second.removeprefix("rerank:")] if second.startswith("rerank:") else [])


def get_system(name: str) -> System:
    first, plus, second = name.partition("+")
    if plus:
        second, weight = rerank_weight(second)
        if second == "reranker":
            return _reranked(get_system(first), None, weight)
        if second.startswith("rerank:") and len(second) > len("rerank:"):
            return _reranked(get_system(first), second.removeprefix("rerank:"), weight)
        raise ValueError(f"unknown second stage '{second}' in '{name}': use +reranker or +rerank:MODEL, "
                         "optionally followed by @WEIGHT")
    if name.startswith("hybrid:") and len(name) > len("hybrid:"):
        dense = get_system(name.removeprefix("hybrid:"))
        if dense.dense is None:
            raise ValueError(f"'{name}': hybrid fuses a dense system (minilm, finetuned, dense:MODEL) with bm25")
        return _hybrid(dense)
    for prefix, fields in (("dense:", "full"), ("dense-nd:", "name_description")):
        if name.startswith(prefix) and len(name) > len(prefix):
            model = name.removeprefix(prefix)
            what = "" if fields == "full" else " over name | description only"
            return _dense_system(name, f"bi-encoder {model}{what}", DenseModel(_model(model), fields))
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}'; available: {', '.join(sorted(SYSTEMS))}, "
                         f"or dense:MODEL, dense-nd:MODEL, or hybrid:DENSE; any of them +reranker or "
                         f"+rerank:MODEL") from None
