"""The retriever's work as plain Python over the library (no Ray): the catalogue of skills, this replica's view of
the index, and the first stage (dense over Milvus, BM25, or their reciprocal rank fusion). Tests call it directly;
the deployments add batching, generations and metrics around it (reranking is the library's
`Reranker.score_batch`, called as it is).
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# pymilvus runs `logging.config.dictConfig` when first imported, which closes every logging handler installed
# before, Serve's replica log file among them. Imported with this module, it loads while Serve unpickles the
# Retriever or IndexAdmin deployment, before the replica's logger is set up.
import pymilvus  # noqa: F401, I001

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import SKILLS_FILE, read_skills
from skillrouter.corpus.skill import Skill
from skillrouter.index.build import index_uri, open_index
from skillrouter.index.store import ENCODER_PROPERTY, SkillIndex, SkillIndexError, is_lite, lite_replica
from skillrouter.mining.bm25 import BM25Index, top_k
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.serving.generations import private_dir
from skillrouter.systems import reciprocal_rank_fusion

FilterValue = str | Sequence[str] | None


def corpus_path(config: PipelineConfig) -> Path:
    """The run's ingested corpus: the skills served, and the table admin changes edit."""
    return Path(config.run_dir) / "corpus" / SKILLS_FILE


def serving_dir(config: PipelineConfig) -> Path:
    """Where serving keeps its state under the run directory: the published generation, replicas' index copies."""
    return Path(config.run_dir) / "serving"


class Catalogue:
    """The skills of one generation, by id and by row, with their categories and sources for filtering."""

    def __init__(self, skills: Sequence[Skill]):
        self.skills = list(skills)
        self.rows = {s.id: i for i, s in enumerate(self.skills)}
        self.categories = np.array([s.category or "" for s in self.skills], dtype=object)
        self.sources = np.array([s.source or "" for s in self.skills], dtype=object)

    @classmethod
    def load(cls, config: PipelineConfig) -> Catalogue:
        return cls(read_skills(corpus_path(config), config.corpus.max_skill_chars))

    def __len__(self) -> int:
        return len(self.skills)

    def get(self, skill_id: str) -> Skill | None:
        row = self.rows.get(skill_id)
        return None if row is None else self.skills[row]

    def allowed(self, category: FilterValue = None, source: FilterValue = None) -> np.ndarray | None:
        """Rows passing the filters (the same rule as the index's: equal to one value, or to any of a list);
        None without filters."""
        if category is None and source is None:
            return None
        mask = np.ones(len(self.skills), dtype=bool)
        for values, column in ((category, self.categories), (source, self.sources)):
            if values is not None:
                mask &= np.isin(column, [values] if isinstance(values, str) else list(values))
        return mask


@dataclass(frozen=True)
class RetrieveQuery:
    """One request to the first stage."""

    text: str
    k: int
    first_stage: str = "dense"
    category: FilterValue = None
    source: FilterValue = None

    def filter_key(self) -> tuple:
        return (_frozen(self.category), _frozen(self.source))


def _frozen(value: FilterValue):
    return value if value is None or isinstance(value, str) else tuple(value)


@dataclass
class Retrieved:
    """A first stage's answer to one query: (skill id, score) best first, and the batch's stage times in ms."""

    hits: list[tuple[str, float]]
    embed_ms: float
    search_ms: float


class PinnedVectors:
    """The vectors of an index version that cannot change under this replica (its own Lite copy, pinned), searched
    exactly by one matrix product on the query encoder's device. Milvus Lite 3 is pure Python and its FLAT search
    gathers the whole matrix into a new array on every call (about 155 ms at 69,400 x 1,024 on the H200 host,
    benchmarks/README.md); a copy held here gives the same ranking for the cost of the product. Filters follow the
    index's rule (equal to a value, or to any of a list) over the catalogue's columns."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, catalogue: Catalogue, device="cpu"):
        import torch

        self.ids, self.catalogue = list(ids), catalogue
        self.rows = np.array([catalogue.rows.get(i, -1) for i in self.ids], dtype=np.int64)
        self.matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)

    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]:
        import torch

        queries = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.matrix.device)
        scores = queries @ self.matrix.T
        allowed = self.catalogue.allowed(category, source)
        keep = self.rows >= 0  # an id the catalogue lacks is never an answer (see FirstStage._dense)
        if allowed is not None:
            keep &= allowed[np.maximum(self.rows, 0)]
        if not keep.all():
            scores[:, torch.from_numpy(~keep).to(scores.device)] = -torch.inf
        top, idx = torch.topk(scores, min(k, len(self.ids)), dim=1)
        return [[(self.ids[j], s) for j, s in zip(row_idx, row_top) if s > -np.inf]
                for row_idx, row_top in zip(idx.tolist(), top.tolist())]


class FirstStage:
    """Candidates for a batch of queries from one generation of the corpus and the index.

    `dense`: the query encoder and a Milvus top-k search (filters become a Milvus expression); `bm25`: BM25 over
    the full skill text (filters mask the scores); `hybrid`: reciprocal rank fusion of both, each contributing its
    top `fusion_depth` (the `hybrid` system of the evaluation fuses the same way).
    """

    def __init__(self, catalogue: Catalogue, index: SkillIndex, encoder: Encoder, bm25: BM25Index,
                 fusion_depth: int = 100, rrf_k: int = 60, collection: str | None = None,
                 pinned: PinnedVectors | None = None):
        self.catalogue, self.index, self.encoder, self.bm25 = catalogue, index, encoder, bm25
        self.fusion_depth, self.rrf_k, self.collection, self.pinned = fusion_depth, rrf_k, collection, pinned

    def depth(self, query: RetrieveQuery) -> int:
        return max(query.k, self.fusion_depth) if query.first_stage == "hybrid" else query.k

    def search(self, queries: Sequence[RetrieveQuery]) -> list[Retrieved]:
        started = time.perf_counter()
        dense_rows = [i for i, q in enumerate(queries) if q.first_stage in ("dense", "hybrid")]
        vectors = self.encoder.encode_queries([queries[i].text for i in dense_rows]) if dense_rows else None
        embed_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        dense = self._dense(queries, dense_rows, vectors) if dense_rows else {}
        sparse = self._bm25(queries, [i for i, q in enumerate(queries) if q.first_stage in ("bm25", "hybrid")])
        out = []
        for i, q in enumerate(queries):
            if q.first_stage == "hybrid":
                hits = reciprocal_rank_fusion([[s for s, _ in dense[i]], [s for s, _ in sparse[i]]], self.rrf_k)
            else:
                hits = dense[i] if q.first_stage == "dense" else sparse[i]
            out.append(hits[: q.k])
        search_ms = (time.perf_counter() - started) * 1000
        return [Retrieved(hits, embed_ms, search_ms) for hits in out]

    def _dense(self, queries: Sequence[RetrieveQuery], rows: list[int],
               vectors: np.ndarray) -> dict[int, list[tuple[str, float]]]:
        """One Milvus search per distinct filter in the batch, at the deepest k asked under it."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for pos, i in enumerate(rows):
            groups[queries[i].filter_key()].append(pos)
        out = {}
        for positions in groups.values():
            first = queries[rows[positions[0]]]
            k = max(self.depth(queries[rows[p]]) for p in positions)
            if self.pinned is not None:
                hits = self.pinned.search(vectors[positions], k, category=first.category, source=first.source)
            else:
                hits = self.index.search(vectors[positions], k, category=first.category, source=first.source,
                                         collection=self.collection)
            for p, row_hits in zip(positions, hits):
                i = rows[p]
                # an id the catalogue lacks (a change published between the two reads) is left out
                out[i] = [(s, float(d)) for s, d in row_hits if s in self.catalogue.rows][: self.depth(queries[i])]
        return out

    def _bm25(self, queries: Sequence[RetrieveQuery], rows: list[int]) -> dict[int, list[tuple[str, float]]]:
        if not rows:
            return {}
        scores = self.bm25.scores([queries[i].text for i in rows])
        for r, i in enumerate(rows):
            allowed = self.catalogue.allowed(queries[i].category, queries[i].source)
            if allowed is not None:
                scores[r, ~allowed] = -np.inf
        idx, top = top_k(scores, max(self.depth(queries[i]) for i in rows))
        skills = self.catalogue.skills
        return {i: [(skills[j].id, float(s)) for j, s in zip(idx[r], top[r]) if s > -np.inf][: self.depth(queries[i])]
                for r, i in enumerate(rows)}


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
    catalogue = Catalogue.load(config)
    index, collection = open_replica(config)
    try:
        spec = live_encoder(index, collection)
        encoder = previous.encoder if previous is not None and previous.encoder.spec == spec else Encoder.load(spec)
        c = config.bm25
        bm25 = BM25Index.build([s.text() for s in catalogue.skills], k1=c.k1, b=c.b, epsilon=c.epsilon)
        pinned = None
        if collection is not None and config.serving.memory_search:  # a pinned Lite copy (see open_replica)
            pinned = PinnedVectors(*index.vectors(collection), catalogue, encoder.device)
    except BaseException:
        close_replica(index)
        raise
    return FirstStage(catalogue, index, encoder, bm25, config.serving.fusion_depth, config.serving.rrf_k, collection,
                      pinned)

