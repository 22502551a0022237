"""What serving needs on disk, and index changes through the API.

`prepare` runs once before the deployments start: it ingests the profile's corpus when the run has none, builds
the index when none is live, and publishes the first generation. `IndexWriter` applies `POST /v1/index` all or
nothing: the whole change is validated first (a refusal is an `AdminError`, and nothing is touched); the new corpus
table is written beside the run's (`RUN_DIR/corpus/skills.parquet`, the source of truth); the index follows it by
the library's own `sync_index` (upsert, delete) or `build_index` (rebuild: a new verified version, then the alias
switch); only then does the new table replace the old in one rename, and a new generation is published for the
replicas to load. A failed index step leaves the old table and generation serving (and the index is synced back
to them, as far as it can be).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import ingest, read_skills, write_skills
from skillrouter.corpus.readers import Quarantined, validate_record
from skillrouter.corpus.skill import Skill, id_problem
from skillrouter.index.build import build_index, open_index, sync_index
from skillrouter.index.store import SkillIndexError
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval.embeddings import IN_PROCESS_MAX, embed_skills
from skillrouter.retrieval.filters import value_problem
from skillrouter.retrieval.systems import exported_spec, trained_model
from skillrouter.serving.generations import GENERATION_FILE, publish, read_generation
from skillrouter.serving.stages import corpus_path, live_encoder, serving_dir

OWNER_WAIT_S = 120.0  # a replica copying the Lite file holds its lock for a moment; a writer waits its turn


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


def build_spec(config: PipelineConfig) -> EncoderSpec:
    """The build encoder (`build_encoder`) at the length and windows its export records, as the evaluation's
    `finetuned` system reads it (`retrieval.systems`), else the index section's: the index the main job serves holds
    the rows its selection and report scored (a 128-token CPU export once indexed at 256 tokens x 4 windows)."""
    return exported_spec(build_encoder(config), config.index.max_length, config.index.windows)


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
    large one by a Ray Data actor pool (`index.embed_actors`, on GPUs as `index.use_gpu` decides)."""
    spec = build_spec(config)
    config = _with_spec(config, spec)
    embed = None
    if len(skills) <= IN_PROCESS_MAX:
        encoder = _encoder(spec, {} if encoders is None else encoders)

        def embed(texts: list[str]):
            return encoder.encode(texts, config.index.batch_size)
    vectors = embed_skills(skills, spec, config.mining.cache_dir, actors=config.index.embed_actors,
                           batch_size=config.index.batch_size, use_gpu=config.index.use_gpu, embed=embed, log=log)
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


def _unicode_problem(record: dict) -> str | None:
    """The first text of `record` (field values, and nested metadata keys and values) that UTF-8 cannot encode.
    Walked with a stack: deeply nested metadata costs no recursion. A key is checked before what it names, so a
    path in the message is always valid text."""
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack.append((f"{path}.{key}" if path else str(key), item))
                stack.append((f"a key of {path or 'the record'}", key))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"field {path!r:.120} is not valid UTF-8 text (a lone surrogate at character {err.start})"
    return None


def check_record(record: dict, max_chars: int) -> Skill:
    """A skill from an admin record, validated as ingestion validates records and further: every text valid UTF-8
    (name, description, body, category, source, metadata), category and source free of control characters (the
    index filters on them); raises `AdminError` naming the skill and the field."""
    if not isinstance(record, dict):
        raise AdminError(f"a skill must be an object, got {type(record).__name__}")
    raw_id = record.get("id", record.get("skill_id"))
    label = f"skill {raw_id!r:.120}" if isinstance(raw_id, str) else "a skill"
    if (problem := _unicode_problem(record)) is not None:
        raise AdminError(f"{label}: {problem}")
    item = validate_record(dict(record), location="POST /v1/index", source="api", max_chars=max_chars,
                           keep_record=False)
    if isinstance(item, Quarantined):
        raise AdminError(f"{label}: {item.reason}: {item.detail}")
    for field in ("category", "source"):
        value = getattr(item, field)
        if value is not None and (problem := value_problem(value)) is not None:
            raise AdminError(f"{label}: field '{field}' {problem}")
    item.to_row()  # the row the corpus table will hold (metadata as JSON, the content hash)
    return item


def check_ids(ids: Sequence[str]) -> list[str]:
    """Ids to delete, each one an id a skill could have; raises `AdminError` for the first that is not."""
    if not isinstance(ids, (list, tuple)):
        raise AdminError(f"ids must be a list of skill ids, got {type(ids).__name__}")
    for skill_id in ids:
        if not isinstance(skill_id, str):
            raise AdminError(f"a skill id must be text, got {type(skill_id).__name__}")
        if (problem := id_problem(skill_id)) is not None:
            raise AdminError(f"skill id {skill_id!r:.120}: {problem}")
    return list(ids)


class IndexWriter:
    """Applies index changes for the API, one at a time (the IndexAdmin deployment has a single replica)."""

    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print):
        self.config, self.log = config, log
        self.encoders: dict[EncoderSpec, Encoder] = {}

    def generation(self) -> int:
        """The published generation, the one replicas serve."""
        return read_generation(generation_path(self.config))

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
                write: bool = True, previous: list[Skill] | None = None) -> dict:
        """Apply a validated change all or nothing: the new corpus table is written beside the old, the index
        follows (`change`), and only when it succeeds does the table switch (one rename) and a new generation
        appear. When the index step fails, the old table and generation stay, and the index is synced back to
        `previous` (the corpus before the change) as far as it can be."""
        if not skills:
            raise AdminError("the change would leave no skill: the index keeps at least one")
        path = corpus_path(self.config)
        staged = path.with_name(f".{path.name}.next")
        if write:
            write_skills(skills, staged)
        try:
            result = change()
        except BaseException as err:
            staged.unlink(missing_ok=True)
            if previous is not None and isinstance(err, Exception):
                self._revert(action, previous)
            raise
        if write:
            os.replace(staged, path)  # readers see the old table or the new, never a mix
        generation = publish(generation_path(self.config), action=action)
        counts = {k: result[k] for k in ("added", "changed", "deleted") if k in result}
        return {"action": action, "generation": generation, "version": result["version"], "skills": len(skills),
                "seconds": round(time.perf_counter() - started, 3), **counts}

    def _revert(self, action: str, previous: list[Skill]) -> None:
        """After a failed sync: bring the index back to the unchanged corpus (the next change would anyway)."""
        try:
            self._sync(previous)
        except Exception as err:  # noqa: BLE001 - the original failure is what the caller reports
            self.log(f"index {action} failed, and syncing the index back to the unchanged corpus failed too "
                     f"({type(err).__name__}: {err}); the next change or `skillrouter index sync` repairs it")

    def upsert(self, records: Sequence[dict]) -> dict:
        """Add or replace skills by id (validated as ingestion validates records); only they are embedded."""
        started = time.perf_counter()
        if not isinstance(records, (list, tuple)):
            raise AdminError(f"skills must be a list of skill objects, got {type(records).__name__}")
        new: dict[str, Skill] = {}
        for record in records:
            item = check_record(record, self.config.corpus.max_skill_chars)
            if item.id in new:
                raise AdminError(f"skill id {item.id!r} appears twice in the request")
            new[item.id] = item
        if not new:
            raise AdminError("no skill to upsert")
        current = self._skills()
        skills = [new.pop(s.id, s) for s in current] + list(new.values())
        return self._commit("upsert", skills, lambda: self._sync(skills), started, previous=current)

    def delete(self, ids: Sequence[str]) -> dict:
        """Remove skills by id; ids that are absent are reported, not an error."""
        started = time.perf_counter()
        gone = set(check_ids(ids))
        current = self._skills()
        not_found = sorted(gone - {s.id for s in current})
        if len(not_found) == len(gone):
            with _owner_retry(lambda: open_index(self.config)) as index:
                version = index.require_live()
            return {"action": "delete", "generation": read_generation(generation_path(self.config)),
                    "version": version, "skills": len(current), "deleted": 0, "not_found": not_found,
                    "seconds": round(time.perf_counter() - started, 3)}
        skills = [s for s in current if s.id not in gone]
        return {**self._commit("delete", skills, lambda: self._sync(skills), started, previous=current),
                "not_found": not_found}

    def rebuild(self) -> dict:
        """A new verified version of the whole corpus with the build encoder, then the alias switch."""
        started = time.perf_counter()
        skills = self._skills()

        def build() -> dict:
            built = build_serving_index(skills, self.config, self.log, self.encoders)
            return {"version": built["version"]}
        return self._commit("rebuild", skills, build, started, write=False)
