"""What serving needs on disk, and index changes through the API.

`prepare` runs once before the deployments start: it ingests the profile's corpus when the run has none, builds
the index when none is live, and publishes the first generation. `IndexWriter` applies `POST /v1/index`: the run's
corpus table (`RUN_DIR/corpus/skills.parquet`, the source of truth) changes first, then the index follows it by
the library's own `sync_index` (upsert, delete) or `build_index` (rebuild: a new verified version, then the alias
switch), and only then is a new generation published for the replicas to load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import ingest, read_skills, write_skills
from skillrouter.corpus.readers import Quarantined, validate_record
from skillrouter.corpus.skill import Skill
from skillrouter.index.build import build_index, encoder_spec, open_index, sync_index
from skillrouter.index.store import SkillIndexError
from skillrouter.mining.embeddings import embed_skills
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.serving.generations import GENERATION_FILE, publish, read_generation
from skillrouter.serving.stages import corpus_path, live_encoder, serving_dir
from skillrouter.systems import trained_model

OWNER_WAIT_S = 120.0  # a replica copying the Lite file holds its lock for a moment; a writer waits its turn
IN_PROCESS_MAX = 5000  # skills embedded by this process for a build; more go through a Ray Data actor pool


class AdminError(ValueError):
    """A change the API refuses (answered 4xx with this message)."""


def generation_path(config: PipelineConfig) -> Path:
    return serving_dir(config) / GENERATION_FILE


def build_encoder(config: PipelineConfig) -> str:
    """The encoder for index builds started by the server: `serving.encoder`, else this run's trained encoder
    when it has been exported, else `index.encoder`."""
    if config.serving.encoder:
        return config.serving.encoder
    try:
        return trained_model(config, "encoder")
    except ValueError:
        return config.index.encoder


def reranker_model(config: PipelineConfig) -> str | None:
    """The cross-encoder to serve: `serving.reranker`, else this run's trained reranker, else none."""
    if not config.serving.rerank:
        return None
    if config.serving.reranker:
        return config.serving.reranker
    try:
        return trained_model(config, "reranker")
    except ValueError:
        return None


def _with_spec(config: PipelineConfig, spec: EncoderSpec) -> PipelineConfig:
    """`config` with the index section naming `spec` (the library's build and sync read the encoder there)."""
    out = config.model_copy(deep=True)
    out.index.encoder, out.index.max_length, out.index.windows = spec.model, spec.max_length, spec.windows
    return out


def _owner_retry(fn: Callable[[], Any]) -> Any:
    """Run a write to the index, waiting while a replica holds the Lite file to copy it."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while True:
        try:
            return fn()
        except SkillIndexError as err:
            if "held by another process" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def build_serving_index(skills: Sequence[Skill], config: PipelineConfig, log: Callable[[str], None] = print,
                        encoders: dict[EncoderSpec, Encoder] | None = None) -> dict:
    """Build a new version with the server's build encoder. Corpus embeddings come from the cache shared with
    mining when they match; else a small corpus is embedded in this process (a replica, or the app builder), a
    large one by a Ray Data actor pool (`index.embed_actors`, on GPUs when the cluster has them)."""
    config = config.model_copy(deep=True)
    config.index.encoder = build_encoder(config)
    spec = encoder_spec(config.index)
    embed = None
    if len(skills) <= IN_PROCESS_MAX:
        encoder = _encoder(spec, {} if encoders is None else encoders)

        def embed(texts: list[str]):
            return encoder.encode(texts, config.index.batch_size)
    vectors = embed_skills(skills, spec, config.mining.cache_dir, actors=config.index.embed_actors,
                           batch_size=config.index.batch_size, embed=embed, log=log)
    return _owner_retry(lambda: build_index(skills, config, embeddings=vectors, log=log))


def _encoder(spec: EncoderSpec, encoders: dict[EncoderSpec, Encoder]) -> Encoder:
    if spec not in encoders:
        encoders.clear()  # one encoder at a time
        encoders[spec] = Encoder.load(spec)
    return encoders[spec]


def prepare(config: PipelineConfig, log: Callable[[str], None] = print) -> dict:
    """Make sure the run holds what the replicas read: the corpus table (ingested from `corpus.sources` when
    absent), a live index (built when absent) and a published generation."""
    done: dict[str, Any] = {"corpus": str(corpus_path(config))}
    if not corpus_path(config).exists():
        summary = ingest(config.corpus.sources, corpus_path(config).parent, config.corpus, progress=False)
        log(f"serving: ingested {summary.written:,} skills from {', '.join(config.corpus.sources)} "
            f"into {corpus_path(config)}")
        done["ingested"] = summary.written
    try:
        with open_index(config) as index:
            live = index.require_live()
            spec = live_encoder(index, live)
            rows = index.count(live)
        done.update(index=live, encoder=spec.model)
        log(f"serving: index {live} ({rows:,} skills, encoder {spec.model}); "
            f"corpus {corpus_path(config)}")
    except SkillIndexError as err:
        if "held by another process" in str(err):
            raise
        skills = read_skills(corpus_path(config), config.corpus.max_skill_chars)
        log(f"serving: no live index ({err}); building one over {len(skills):,} skills")
        built = build_serving_index(skills, config, log)
        done.update(index=built["version"], encoder=built["encoder"], built=True)
    if not generation_path(config).exists():
        publish(generation_path(config), action="start", version=done["index"])
    done["generation"] = read_generation(generation_path(config))
    return done


class IndexWriter:
    """Applies index changes for the API, one at a time (the IndexAdmin deployment has a single replica)."""

    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print):
        self.config, self.log = config, log
        self.encoders: dict[EncoderSpec, Encoder] = {}

    def _skills(self) -> list[Skill]:
        return read_skills(corpus_path(self.config), self.config.corpus.max_skill_chars)

    def _live_spec(self) -> EncoderSpec:
        with _owner_retry(lambda: open_index(self.config)) as index:
            return live_encoder(index)

    def _sync(self, skills: list[Skill]) -> dict:
        spec = self._live_spec()
        encoder = _encoder(spec, self.encoders)
        return _owner_retry(lambda: sync_index(skills, _with_spec(self.config, spec), log=self.log,
                                               embed=lambda t: encoder.encode(t, self.config.index.batch_size)))

    def _commit(self, action: str, skills: list[Skill], change: Callable[[], dict], started: float,
                write: bool = True) -> dict:
        if not skills:
            raise AdminError("the change would leave no skill: the index keeps at least one")
        if write:
            write_skills(skills, corpus_path(self.config))
        try:
            result = change()
        finally:  # the corpus changed either way: replicas reload it
            generation = publish(generation_path(self.config), action=action)
        counts = {k: result[k] for k in ("added", "changed", "deleted") if k in result}
        return {"action": action, "generation": generation, "version": result["version"], "skills": len(skills),
                "seconds": round(time.perf_counter() - started, 3), **counts}

    def upsert(self, records: Sequence[dict]) -> dict:
        """Add or replace skills by id (validated as ingestion validates records); only they are embedded."""
        started = time.perf_counter()
        new: dict[str, Skill] = {}
        for record in records:
            item = validate_record(dict(record), location="POST /v1/index", source="api",
                              max_chars=self.config.corpus.max_skill_chars, keep_record=False)
            if isinstance(item, Quarantined):
                raise AdminError(f"skill {item.id!r}: {item.reason}: {item.detail}")
            if item.id in new:
                raise AdminError(f"skill id {item.id!r} appears twice in the request")
            new[item.id] = item
        skills = [new.pop(s.id, s) for s in self._skills()] + list(new.values())
        return self._commit("upsert", skills, lambda: self._sync(skills), started)

    def delete(self, ids: Sequence[str]) -> dict:
        """Remove skills by id; ids that are absent are reported, not an error."""
        started = time.perf_counter()
        current = self._skills()
        gone = set(ids)
        not_found = sorted(gone - {s.id for s in current})
        if len(not_found) == len(gone):
            with _owner_retry(lambda: open_index(self.config)) as index:
                version = index.require_live()
            return {"action": "delete", "generation": read_generation(generation_path(self.config)),
                    "version": version, "skills": len(current), "deleted": 0, "not_found": not_found,
                    "seconds": round(time.perf_counter() - started, 3)}
        skills = [s for s in current if s.id not in gone]
        return {**self._commit("delete", skills, lambda: self._sync(skills), started), "not_found": not_found}

    def rebuild(self) -> dict:
        """A new verified version of the whole corpus with the build encoder, then the alias switch."""
        started = time.perf_counter()
        skills = self._skills()

        def build() -> dict:
            built = build_serving_index(skills, self.config, self.log, self.encoders)
            return {"version": built["version"]}
        return self._commit("rebuild", skills, build, started, write=False)
