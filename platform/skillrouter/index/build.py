"""Build and sync the skill index from a corpus and a config.

`build_index` embeds the whole corpus (through the embedding cache shared with mining), writes a new version,
verifies it and only then switches the alias: readers never see a half-written or collapsed index.
`sync_index` edits the live version in place by content hash: only new and changed skills are embedded.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from skillrouter.config import IndexConfig, PipelineConfig
from skillrouter.corpus.skill import Skill, id_problem
from skillrouter.index.store import ENCODER_PROPERTY, SkillIndex, SkillIndexError, is_lite
from skillrouter.models.encoder import Encoder, EncoderSpec, skill_texts
from skillrouter.models.windows import mean_rows
from skillrouter.retrieval.embeddings import embed_skills


def index_uri(config: PipelineConfig) -> str:
    """`index.uri`, a relative Lite path taken under `run_dir` (so each profile has its own file)."""
    uri = config.index.uri
    return str(Path(config.run_dir) / uri) if is_lite(uri) and not Path(uri).is_absolute() else uri


def open_index(config: PipelineConfig, create: bool = False) -> SkillIndex:
    """The configured index; a server's token comes from the environment variable `index.token_env`."""
    cfg = config.index
    return SkillIndex.open(index_uri(config), cfg.collection, token=os.environ.get(cfg.token_env, ""),
                           index_type=cfg.index_type, create=create)


def encoder_spec(cfg: IndexConfig) -> EncoderSpec:
    return EncoderSpec(model=cfg.encoder, max_length=cfg.max_length, windows=cfg.windows)


def _check_ids(skills: Sequence[Skill]) -> None:
    if not skills:
        raise ValueError("no skills to index: the corpus is empty")
    dups = [i for i, n in Counter(s.id for s in skills).items() if n > 1]
    if dups:
        raise ValueError(f"{len(dups)} skill ids occur more than once (e.g. {', '.join(dups[:3])}): "
                         f"the index keys rows by id")
    bad = [(s.id, problem) for s in skills if (problem := id_problem(s.id)) is not None]
    if bad:  # refused before anything is written: a row the index could not address again
        raise ValueError(f"{len(bad)} skill ids cannot be indexed (e.g. {bad[0][0]!r:.100}: {bad[0][1]})")


def _unit_rows(vectors: np.ndarray, n: int, dim: int | None = None) -> np.ndarray:
    """Embeddings checked before anything is written: n rows, the index's dimension, unit norm (IP = cosine)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != n:
        raise ValueError(f"expected {n} embedding rows, got an array of shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"embeddings have dimension {vectors.shape[1]}, the live index {dim}")
    bad = np.flatnonzero(~(np.abs(np.linalg.norm(vectors, axis=1) - 1) < 1e-3))
    if len(bad):
        raise ValueError(f"embeddings must be unit rows (inner product = cosine): {len(bad)} are not, "
                         f"e.g. row {bad[0]} has norm {np.linalg.norm(vectors[bad[0]]):.4f}")
    return vectors


def build_index(skills: Sequence[Skill], config: PipelineConfig, *, embeddings: np.ndarray | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Write the corpus as a new version, verify it, switch the alias to it, drop versions beyond
    `index.keep_versions`. `embeddings` (rows in corpus order) skip the encoder, e.g. for benchmarks.

    Rows are written as the encoder's actors return them, so the index's writes (half a minute for 69K skills in
    Milvus Lite) run while the GPU embeds the rest. A build cut short leaves an unverified version, which no
    reader sees and the next build drops (`SkillIndex.prune`)."""
    _check_ids(skills)
    cfg, spec, seconds = config.index, encoder_spec(config.index), {}
    with open_index(config, create=True) as index:
        started = begin = time.perf_counter()
        name = ""

        def write(positions: np.ndarray, rows: np.ndarray) -> None:
            nonlocal name
            rows = _unit_rows(rows, len(positions))
            if not name:
                name = index.create_version(rows.shape[1], spec.cache_key())
                log(f"index: writing {len(skills):,} skills to {name} in {index.uri} as they are embedded")
            index.append([skills[i] for i in positions], rows, name)
        if embeddings is None:
            embeddings = embed_skills(skills, spec, config.mining.cache_dir, actors=cfg.embed_actors,
                                      batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens,
                                      compile=cfg.compile_encoder, packed=cfg.packing, use_gpu=cfg.use_gpu, log=log,
                                      on_rows=write)
        else:
            write(np.arange(len(skills)), embeddings)
        vectors = _unit_rows(embeddings, len(skills))
        seconds["embed_and_write"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        index.finish_insert(name)
        seconds["flush"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        try:
            checks = index.verify(name, skills, vectors, expected_rows=len(skills))
        except SkillIndexError as err:
            raise SkillIndexError(f"{err}. '{cfg.collection}' still serves {index.live() or 'nothing'}; {name} is "
                                  f"kept for inspection until the next build drops it") from None
        seconds["verify"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        previous = index.switch(name)
        dropped = index.prune(cfg.keep_versions)
        seconds["switch"] = round(time.perf_counter() - started, 2)
    seconds["total"] = round(time.perf_counter() - begin, 2)  # with closing (Lite writes its segments then)
    log(f"index: '{cfg.collection}' -> {name} ({len(skills):,} skills, dim {vectors.shape[1]}, "
        f"{checks['sampled']} sampled skills found themselves"
        + (f", {checks['ties']} tied with a skill the encoder reads alike" if checks["ties"] else "")
        + f") in {index.uri}; "
        + ", ".join(f"{k} {v} s" for k, v in seconds.items())
        + (f"; dropped {', '.join(dropped)}" if dropped else ""))
    return {"uri": index.uri, "alias": cfg.collection, "version": name, "previous": previous, "rows": len(skills),
            "dim": int(vectors.shape[1]), "encoder": spec.model, "dropped": dropped, "verify": checks,
            "seconds": seconds}


def sync_index(skills: Sequence[Skill], config: PipelineConfig, *,
               embed: Callable[[list[str]], np.ndarray] | None = None, log: Callable[[str], None] = print) -> dict:
    """Bring the live version in line with `skills` by content hash: embed and upsert new and changed skills,
    delete ids gone from the corpus, leave the rest untouched. Edits land in place (readers see them as they
    are written); `build_index` is the way to a switch-after-verify rollout. `embed` maps texts to unit rows
    (default: the configured encoder, in this process: a sync is meant for a small share of the corpus)."""
    _check_ids(skills)
    cfg, spec, started = config.index, encoder_spec(config.index), time.perf_counter()
    with open_index(config) as index:
        live = index.require_live()
        built_with = index.properties(live).get(ENCODER_PROPERTY)
        if built_with != spec.cache_key():
            raise SkillIndexError(f"{live} was built with encoder '{built_with}', the config asks for "
                                  f"'{spec.cache_key()}': run `skillrouter index build` to re-embed everything")
        stored = index.hashes(live)
        new = [s for s in skills if s.id not in stored]
        changed = [s for s in skills if s.id in stored and stored[s.id] != s.content_hash]
        corpus_ids = {s.id for s in skills}
        gone = [i for i in stored if i not in corpus_ids]
        stuck = [i for i in gone if id_problem(i) is not None]
        if stuck:  # checked before any edit: an index written before ids were checked
            raise SkillIndexError(f"{live} holds {len(stuck)} ids that no delete can address (e.g. {stuck[0]!r:.100}, "
                                  f"{id_problem(stuck[0])}): run `skillrouter index build` to rewrite it")
        counts = {"added": len(new), "changed": len(changed), "deleted": len(gone),
                  "unchanged": len(skills) - len(new) - len(changed)}
        log(f"index sync of {live}: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
        todo = new + changed
        vectors = np.empty((0, index.dim(live)), dtype=np.float32)
        if todo:
            texts, owner = skill_texts(todo, spec)
            rows = embed(texts) if embed else Encoder.load(spec).encode(texts, cfg.batch_size)
            vectors = _unit_rows(mean_rows(rows, owner, len(todo)), len(todo), dim=vectors.shape[1])
            index.upsert(todo, vectors, live)
        if gone:
            index.delete(gone, live)
        try:
            checks = index.verify(live, todo, vectors, expected_rows=len(skills))
        except SkillIndexError as err:
            raise SkillIndexError(f"{err}; the sync's edits are already in {live}: rebuild with "
                                  f"`skillrouter index build`") from None
    seconds = round(time.perf_counter() - started, 2)
    log(f"index sync: {live} now holds {checks['rows']:,} skills ({seconds} s)")
    return {"uri": index.uri, "version": live, **counts, "rows": checks["rows"], "seconds": seconds}
