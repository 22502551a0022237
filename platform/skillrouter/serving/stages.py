"""The retriever's work as plain Python over the library (no Ray): the run's catalogue of skills, this replica's
view of the index, and the first stage (dense over Milvus, BM25, or the two fused) as
`retrieval.first_stage.FirstStage` with a Milvus backend (or `retrieval.dense.VectorSearch` over a pinned version's
vectors): the evaluation runs the same class. Tests call it directly; the deployments add batching, generations and
metrics around it (reranking is `retrieval.rerank`, which the evaluation calls too).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# pymilvus runs `logging.config.dictConfig` when first imported, which closes every logging handler installed
# before, Serve's replica log file among them. Imported with this module, it loads while Serve unpickles the
# Retriever or IndexAdmin deployment, before the replica's logger is set up.
import pymilvus  # noqa: F401, I001

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import SKILLS_FILE, read_skills
from skillrouter.index.build import index_uri, open_index
from skillrouter.index.store import ENCODER_PROPERTY, SkillIndex, SkillIndexError, is_lite, lite_replica
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval import first_stage
from skillrouter.retrieval.bm25 import BM25Index, build_bm25
from skillrouter.retrieval.dense import VectorSearch
from skillrouter.retrieval.filters import Catalogue, FilterValue
from skillrouter.retrieval.first_stage import Retrieved, RetrieveQuery
from skillrouter.retrieval.fusion import DEFAULT_FUSION, Fusion
from skillrouter.serving.generations import private_dir

__all__ = ["FirstStage", "MilvusDense", "close_replica", "corpus_path", "live_encoder", "load_catalogue",
           "load_first_stage", "open_replica", "search_isolated", "serving_dir"]


def corpus_path(config: PipelineConfig) -> Path:
    """The run's ingested corpus: the skills served, and the table admin changes edit."""
    return Path(config.run_dir) / "corpus" / SKILLS_FILE


def serving_dir(config: PipelineConfig) -> Path:
    """Where serving keeps its state under the run directory: the published generation, replicas' index copies."""
    return Path(config.run_dir) / "serving"


def load_catalogue(config: PipelineConfig) -> Catalogue:
    """The run's corpus as a catalogue: the skills one generation serves."""
    return Catalogue(read_skills(corpus_path(config), config.corpus.max_skill_chars))


class MilvusDense:
    """The dense backend of serving's first stage: a top-k search of this replica's view of the index (filters
    become a Milvus expression)."""

    def __init__(self, index: SkillIndex, collection: str | None = None):
        self.index, self.collection = index, collection

    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]:
        return self.index.search(vectors, k, category=category, source=source, collection=self.collection)


class FirstStage(first_stage.FirstStage):
    """Serving's first stage: the shared `first_stage.FirstStage` (which the evaluation runs with an exact dense
    backend) over Milvus, or over the pinned version's vectors in memory; the encoder the live index was built
    with, and BM25 over the full skill text."""

    def __init__(self, catalogue: Catalogue, index: SkillIndex, encoder: Encoder, bm25: BM25Index,
                 fusion: Fusion = DEFAULT_FUSION, collection: str | None = None, pinned: VectorSearch | None = None):
        super().__init__(catalogue, encoder, pinned or MilvusDense(index, collection), bm25, fusion)
        self.index, self.collection = index, collection


def search_isolated(stage: first_stage.FirstStage, queries: Sequence[RetrieveQuery]) -> list[Retrieved | Exception]:
    """The first stage's answers to a batch of several clients' queries, one per query: when the batch fails as a
    whole, each query is searched alone, so a query whose search raises gets its own error (in its place) and the
    others still get their answers."""
    try:
        return list(stage.search(queries))
    except Exception:  # noqa: BLE001 - which query failed is found below, one by one
        out: list[Retrieved | Exception] = []
        for query in queries:
            try:
                out.append(stage.search([query])[0])
            except Exception as err:  # noqa: BLE001 - handed to that query's caller
                out.append(err)
        return out


def live_encoder(index: SkillIndex, collection: str | None = None) -> EncoderSpec:
    """The encoder the live version was built with: queries must be embedded into the same space."""
    key = index.properties(collection).get(ENCODER_PROPERTY)
    if not key:
        raise SkillIndexError(f"{index.uri}: the live version records no encoder; rebuild the index")
    return EncoderSpec.from_cache_key(key)


def open_replica(config: PipelineConfig) -> tuple[SkillIndex, str | None]:
    """This replica's view of the index, and the collection to search. Milvus Lite lets one process own a file,
    so a Lite index is copied into a directory of this process (under the file's own lock: no writer is
    mid-change) and the copy's live version is pinned; a server is shared by every replica and follows its alias
    switches by itself."""
    uri = index_uri(config)
    if not is_lite(uri):
        return open_index(config), None
    copy = lite_replica(uri, private_dir(serving_dir(config) / "replicas"))
    index = SkillIndex.open(copy, config.index.collection, index_type=config.index.index_type)
    try:
        return index, index.require_live()
    except SkillIndexError:
        close_replica(index)
        raise


def close_replica(index: SkillIndex) -> None:
    """Close a replica's index; a Lite copy goes with its directory."""
    index.close()
    if is_lite(index.uri):
        shutil.rmtree(Path(index.uri).parent, ignore_errors=True)


def load_first_stage(config: PipelineConfig, previous: FirstStage | None = None) -> FirstStage:
    """The first stage of the current generation: the corpus, this replica's view of the index, BM25 over the
    full texts. The encoder of `previous` is kept when the live index was built with the same one."""
    catalogue = load_catalogue(config)
    index, collection = open_replica(config)
    try:
        spec = live_encoder(index, collection)
        encoder = previous.encoder if previous is not None and previous.encoder.spec == spec else Encoder.load(spec)
        bm25 = build_bm25(catalogue.skills, config.bm25)
        pinned = None
        if collection is not None and config.serving.memory_search:  # a pinned Lite copy (see open_replica)
            pinned = VectorSearch(*index.vectors(collection), catalogue, encoder.device)
    except BaseException:
        close_replica(index)
        raise
    return FirstStage(catalogue, index, encoder, bm25, Fusion.of(config.serving), collection, pinned)

