"""The Milvus store behind routing: versioned collections `{alias}_v{N}` served through an alias.

One class, `SkillIndex`, over pymilvus' `MilvusClient`, for a Milvus Lite file (`*.db`) or a Milvus server.
What Milvus Lite 3 (pure Python, milvus-lite 3.2) does and does not do, checked against it:
- aliases: create, alter, describe, list; persisted atomically in the file, so the switch is Milvus' own;
- upsert, delete by filter, filter expressions (`in`, `==`, `and`); no `filter_params` templates (a `{name}`
  is a parse error), and a string literal knows only six escapes (quotes, backslash, n, r, t; JSON's `\\u0001`
  is an error): see `expression`, the one place where values meet an expression;
- collection properties persist (the schema description does not): the encoder and the verified flag live there;
- collections come back released after a reopen (loaded here before any read); a search returns every field,
  the vector too, unless `output_fields` is named;
- one process owns a `.db` (an advisory lock held until that process closes it): see `lite_replica`.

What a Milvus server differs in, checked against a real standalone server 2.3.5 (PyPI's `milvus`, run by
`tests/test_milvus_server.py` through `skillrouter.testing.milvus_server`) and said here once:
- `filter_params` templates exist from 2.5: 2.3.5 refuses `id in {p0}` as a parse error. `open` reads the server's
  version once; from 2.5 values are bound, before it they are the escaped literals Lite gets (the same grammar for
  quotes and backslashes: hostile ids and values match exactly themselves on 2.3.5);
- consistency: a collection's default level is Bounded, and a search or query issued right after a write, from any
  client, misses it (10 of 10 upserts here); Strong waits for the query node's next time tick (about 285 ms per
  search here, against 4 ms). So every write on a server ends with one Strong query (`_settle`), which returns
  once the query node has applied the write; a Bounded read is served at the query node's current service time,
  which is then past the write, so every reader, in any process, sees it as soon as the write call returns, at
  Bounded's price: serving's read-your-writes (an admin change routable by every retriever replica once its
  call returns) rests on this. (With several in-memory replicas of a collection,
  `load_collection(replica_number>1)`, which this store never asks for, only the replica the Strong query reached
  would be known to be there.)
  Only builds flush (sealing the segments the HNSW index is built on): a flush per admin edit would cost about 2 s
  and leave a tiny segment each time. A server builds the index after the flush, in the background, and searches
  unindexed segments by brute force meanwhile: `insert` waits until every row is indexed, so a version goes live
  indexed;
- pymilvus' `query_iterator` pastes the last id of a page into `id > "..."` unescaped (an id with a quote or a
  backslash breaks it, on Lite too): `rows` pages by id itself, through `_quoted`;
- a token (`user:password`, `root:Milvus` by default) is checked when the server's
  `common.security.authorizationEnabled` is on: a missing or wrong one cannot connect.
"""

from __future__ import annotations

import fcntl
import logging
import random
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from skillrouter.corpus.skill import ID_MAX_BYTES, Skill, id_problem
from skillrouter.retrieval.filters import UnsafeValue, value_problem

# VARCHAR limits count UTF-8 bytes on a server; ids are never cut (the real pool's longest is 227 bytes).
FIELD_MAX_BYTES = {"content_hash": 64, "name": 512, "category": 256, "source": 256}
EXPRESSION_FIELDS = ("id", "category", "source")
ENCODER_PROPERTY, VERIFIED_PROPERTY = "skillrouter.encoder", "skillrouter.verified"
TEMPLATES_SINCE = (2, 5)  # the first server version that binds `filter_params`
ROWS_PAGE = 5000  # rows per query of `rows`
INDEX_WAIT_S = 1800.0  # how long `insert` waits for a server to index a new version
INSERT_BATCH_BYTES = 16 << 20  # well under gRPC's 64 MiB message limit at any dimension
SEARCH_BATCH = 1024  # queries per request; a server refuses more than 16,384
ID_BATCH = 1000  # ids per delete request
VERIFY_SAMPLE = 256
# HNSW is approximate: a few self-misses among the sample are normal there, none with FLAT (exact).
MIN_SELF_RECALL = {"FLAT": 1.0, "HNSW": 0.98}
VERIFY_TIE_DEPTH = 16  # hits read per sampled skill: a vector shared by more skills than this counts as a miss
TIE_TOLERANCE = 1e-5  # scores this close to the top are the same vector (float32 inner products)
MAX_SHARED_VECTORS = 0.5  # the 69K pool: 1 sampled skill in 256 shares its vector; a collapsed encoder: all
HNSW_BUILD = {"M": 16, "efConstruction": 200}
HNSW_MIN_EF = 64


class SkillIndexError(RuntimeError):
    """An index that cannot be opened, found or trusted; the message names the URI and the collection."""


class _DropLiteNoise(logging.Filter):
    """Two log lines every Lite run would print, about calls Milvus Lite does not implement and pymilvus
    already works around: its query iterator falls back to client time (exact for one local process), and
    index creation asks for a timestamp that the in-process gRPC server then logs as a failed call."""

    NOISE = ("failed to get mvccTs", "Method not implemented!")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


for _logger in ("pymilvus.client.iterator.query_iterator", "grpc._server"):
    logging.getLogger(_logger).addFilter(_DropLiteNoise())


def is_lite(uri: str) -> bool:
    return "://" not in uri


def clip(text: str | None, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 without splitting a character."""
    return (text or "").encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def binds_values(server_version: str) -> bool:
    """Whether a server of this version (`get_server_version()`, e.g. `v2.3.5-lite`, `v2.5.4`) binds
    `filter_params`; a version it cannot read gets escaped literals, which every version parses."""
    found = re.search(r"(\d+)\.(\d+)", server_version or "")
    return bool(found) and (int(found[1]), int(found[2])) >= TEMPLATES_SINCE


def _quoted(value: str) -> str:
    # a double-quoted literal with `\` and `"` escaped reads the same in Lite's grammar and the server's (C's
    # escapes through Go's strconv.Unquote); `'` needs no escape there, and control characters never get here
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expression(clauses: Sequence[tuple[str, Sequence[str]]], *, bind: bool) -> tuple[str, dict[str, list[str]]]:
    """`(filter, filter_params)` for `field in [values]` clauses joined by `and`: every expression built from values
    comes from here. A Milvus server 2.5+ binds the values (`field in {p0}`, `filter_params={"p0": [...]}` on
    search, query and delete); Milvus Lite and older servers cannot, so they become escaped literals. Raises
    `UnsafeValue` for a value neither can carry, before any call."""
    parts, params = [], {}
    for field, values in clauses:
        if field not in EXPRESSION_FIELDS:
            raise ValueError(f"no field '{field}' to filter on: {', '.join(EXPRESSION_FIELDS)}")
        values = list(values)
        for value in values:
            if (problem := value_problem(value)) is not None:
                raise UnsafeValue(f"{field} value {value!r:.100}: {problem}")
        if bind and values:
            name = f"p{len(params)}"
            params[name] = values
            parts.append(f"{field} in {{{name}}}")
        else:
            parts.append(f"{field} in [{', '.join(map(_quoted, values))}]")
    return " and ".join(parts), params


def filter_clauses(category: str | Sequence[str] | None = None,
                   source: str | Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """The optional filters as `expression` clauses: one value or several (any of them), each clipped exactly as
    stored, so a long category still matches itself."""
    clauses = []
    for field, value in (("category", category), ("source", source)):
        if value is None:
            continue
        values = [value] if isinstance(value, str) else list(value)
        # an unsafe value goes on unclipped, for `expression` to refuse by name
        clauses.append((field, [v if value_problem(v) else clip(v, FIELD_MAX_BYTES[field]) for v in values]))
    return clauses


@contextmanager
def _lite_lock(path: Path, wait_s: float) -> Iterator[None]:
    """Hold the lock Milvus Lite takes on `{db}/LOCK`, so no process opens the file meanwhile."""
    from milvus_lite.db import LOCK_FILENAME

    with open(path / LOCK_FILENAME, "a+") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SkillIndexError(f"{path} is held by another process (Milvus Lite allows one process "
                                          f"per file): stop it, or give readers copies (`lite_replica`)") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lite_replica(uri: str, dest: str | Path, wait_s: float = 60.0) -> str:
    """A private copy of a Milvus Lite index for one reading process; returns its URI.

    Milvus Lite lets one process own a `.db`, so several serving replicas cannot open one file. Each replica
    copies it while holding the file's own lock (no writer is mid-change then) and opens the copy; it sees a
    rebuild when it copies again. A Milvus server has no such limit: cluster profiles point every replica at it.
    """
    from milvus_lite.db import LOCK_FILENAME

    src, out = Path(uri), Path(dest) / Path(uri).name
    if not is_lite(uri) or not src.is_dir():
        raise SkillIndexError(f"no Milvus Lite index at {uri} to copy")
    with _lite_lock(src, wait_s):
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, out, ignore=shutil.ignore_patterns(LOCK_FILENAME))
    return str(out)


class SkillIndex:
    """Skill vectors (unit rows, inner product = cosine) in versioned collections behind one alias.

    A build writes `{alias}_v{N+1}`, verifies it, then points the alias at it; readers only ever name the alias.
    Methods that take `collection` default to the version the alias points to now.
    """

    def __init__(self, client, uri: str, alias: str, index_type: str = "FLAT", bind: bool | None = None):
        if index_type not in MIN_SELF_RECALL:
            raise ValueError(f"index_type must be one of {', '.join(MIN_SELF_RECALL)}, got {index_type!r}")
        self.client, self.uri, self.alias, self.index_type = client, uri, alias, index_type
        self.bind = not is_lite(uri) if bind is None else bind  # `open` asks the server (`binds_values`)
        self._loaded: set[str] = set()

    def _expression(self, clauses: Sequence[tuple[str, Sequence[str]]]) -> tuple[str, dict[str, list[str]]]:
        return expression(clauses, bind=self.bind)

    @classmethod
    def open(cls, uri: str, alias: str = "skills", *, token: str = "", index_type: str = "FLAT",
             create: bool = False) -> SkillIndex:
        """Connect to a Milvus Lite file (a path ending in `.db`) or a server (`http[s]://host:port`).
        A missing Lite file is created only with `create` (builds); readers get a clear error instead."""
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        if is_lite(uri):
            path = Path(uri)
            if path.suffix != ".db":
                raise SkillIndexError(f"index URI {uri!r}: a Milvus Lite file must end in .db; a server URI "
                                      f"starts with http:// or https://")
            if not create and not path.is_dir():
                raise SkillIndexError(f"no index at {uri}: run `skillrouter index build` first")
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not uri.startswith(("http://", "https://", "tcp://")):
            raise SkillIndexError(f"index URI {uri!r}: use a path ending in .db (Milvus Lite) or "
                                  f"http[s]://host:port (a Milvus server)")
        try:
            client = MilvusClient(uri=uri, token=token if not is_lite(uri) else "")
        except MilvusException as err:
            if is_lite(uri) and Path(uri).is_dir():
                with _lite_lock(Path(uri), wait_s=0):  # raises the clear error when another process owns it
                    pass
            raise SkillIndexError(f"cannot open the index at {uri}: {err.message}") from None
        if is_lite(uri):
            return cls(client, uri, alias, index_type, bind=False)
        return cls(client, uri, alias, index_type, bind=binds_values(client.get_server_version()))

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop this process' in-process server, which frees the file for
        another process (pymilvus' own close keeps it until exit)."""
        self.client.close()
        if is_lite(self.uri):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def __enter__(self) -> SkillIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- versions and the alias ------------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Version numbers present, ascending."""
        pattern = re.compile(rf"^{re.escape(self.alias)}_v(\d+)$")
        return sorted(int(m.group(1)) for name in self.client.list_collections() if (m := pattern.match(name)))

    def version_name(self, version: int) -> str:
        return f"{self.alias}_v{version}"

    def live(self) -> str | None:
        """The collection the alias points to, or None before the first build."""
        if self.alias not in self.client.list_aliases().get("aliases", []):
            return None
        return self.client.describe_alias(self.alias)["collection_name"]

    def require_live(self) -> str:
        live = self.live()
        if live is None:
            raise SkillIndexError(f"no collection '{self.alias}' in {self.uri}: run `skillrouter index build` first")
        return live

    def create_version(self, dim: int, encoder: str) -> str:
        """A new empty collection `{alias}_v{N+1}` recording the encoder that fills it; not yet verified."""
        from pymilvus import DataType, MilvusClient

        name = self.version_name(max(self.versions(), default=0) + 1)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        for field, max_bytes in FIELD_MAX_BYTES.items():
            schema.add_field(field, DataType.VARCHAR, max_length=max_bytes)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP",
                         params=HNSW_BUILD if self.index_type == "HNSW" else {})
        self.client.create_collection(name, schema=schema, index_params=params,
                                      properties={ENCODER_PROPERTY: encoder, VERIFIED_PROPERTY: "false"})
        return name

    def properties(self, collection: str | None = None) -> dict[str, str]:
        return self.client.describe_collection(collection or self.require_live()).get("properties", {})

    def dim(self, collection: str | None = None) -> int:
        fields = self.client.describe_collection(collection or self.require_live())["fields"]
        return int(next(f for f in fields if f["name"] == "vector")["params"]["dim"])

    def switch(self, collection: str) -> str | None:
        """Point the alias at `collection` (create or alter: one atomic step for readers); returns the
        previous target. Refuses a version that has not passed `verify`."""
        if self.properties(collection).get(VERIFIED_PROPERTY) != "true":
            raise SkillIndexError(f"{collection} has not passed verification; the alias stays where it is")
        previous = self.live()
        if previous is not None:
            self.client.alter_alias(collection, self.alias)
        elif self.client.has_collection(self.alias):
            raise SkillIndexError(f"{self.uri} has a collection named '{self.alias}' where the alias should be: "
                                  f"drop or rename it, or choose another index.collection")
        else:
            self.client.create_alias(collection, self.alias)
        return previous

    def prune(self, keep_versions: int) -> list[str]:
        """Drop versions beyond the newest `keep_versions` verified ones (the live one always stays), and
        any unverified version (a failed or interrupted build). Returns the dropped names."""
        live = self.live()
        verified, dropped = [], []
        for version in sorted(self.versions(), reverse=True):
            name = self.version_name(version)
            if name == live:
                continue
            if self.properties(name).get(VERIFIED_PROPERTY) == "true":
                verified.append(name)
            else:
                dropped.append(name)
        dropped += verified[max(keep_versions - 1, 0):]
        for name in dropped:
            self.client.drop_collection(name)
            self._loaded.discard(name)
        return dropped

    # -- writes --------------------------------------------------------------------------------------------

    @staticmethod
    def _check(skills: Sequence[Skill], vectors: np.ndarray) -> None:
        """Refuse, before any request, a write that a later batch would fail."""
        if len(skills) != len(vectors):
            raise ValueError(f"{len(skills)} skills but {len(vectors)} vectors")
        for skill in skills:
            if (problem := id_problem(skill.id)) is not None:  # a row no expression could address again
                raise UnsafeValue(f"skill id {skill.id!r:.100}: {problem}")

    def _rows(self, skills: Sequence[Skill], vectors: np.ndarray) -> list[dict]:
        rows = []
        for skill, vector in zip(skills, vectors):
            row = {"id": skill.id, "vector": vector, "content_hash": skill.content_hash, "name": skill.name,
                   "category": skill.category, "source": skill.source}
            rows.append({k: v if k in ("id", "vector") else clip(v, FIELD_MAX_BYTES[k]) for k, v in row.items()})
        return rows

    def _batches(self, skills: Sequence[Skill], vectors: np.ndarray) -> Iterator[list[dict]]:
        step = max(1, INSERT_BATCH_BYTES // (vectors.shape[1] * 4 + 1024))
        for start in range(0, len(skills), step):
            yield self._rows(skills[start:start + step], vectors[start:start + step])

    def _settle(self, collection: str) -> None:
        """After a write: Lite's file is flushed; a server is waited on until every reader sees the write (a
        Strong query: see the module's docstring)."""
        if is_lite(self.uri):
            self.client.flush(collection)
        else:
            self.count(collection)

    def insert(self, skills: Sequence[Skill], vectors: np.ndarray, collection: str) -> None:
        """Add rows in batches to a new version (`upsert` is for the live one)."""
        self.append(skills, vectors, collection)
        self.finish_insert(collection)

    def append(self, skills: Sequence[Skill], vectors: np.ndarray, collection: str) -> None:
        """`insert` without its flush: a build writes rows as they are embedded, then calls `finish_insert`."""
        self._check(skills, vectors)
        for rows in self._batches(skills, vectors):
            self.client.insert(collection, rows)

    def finish_insert(self, collection: str) -> None:
        """Flush a new version's rows (a server: and wait until its vector index covers them)."""
        self.client.flush(collection)
        if not is_lite(self.uri):
            self._wait_indexed(collection)

    def _wait_indexed(self, collection: str) -> None:
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:
            state = self.client.describe_index(collection, "vector")
            if state.get("state") == "Failed":
                raise SkillIndexError(f"{self.uri} failed to index {collection}: {state.get('fail_reason', state)}")
            if state.get("state") == "Finished" and int(state.get("pending_index_rows", 0)) == 0 and \
                    int(state.get("indexed_rows", 0)) >= int(state.get("total_rows", 0)):
                return
            if time.monotonic() > deadline:
                raise SkillIndexError(f"{self.uri} has not indexed {collection} within {INDEX_WAIT_S:.0f} s: {state}")
            time.sleep(0.5)

    def upsert(self, skills: Sequence[Skill], vectors: np.ndarray, collection: str | None = None) -> None:
        """Insert or replace rows by id; every reader sees them when this returns."""
        self._check(skills, vectors)
        collection = collection or self.require_live()
        for rows in self._batches(skills, vectors):
            self.client.upsert(collection, rows)
        self._settle(collection)

    def delete(self, ids: Sequence[str], collection: str | None = None) -> None:
        """Remove rows by id (every id checked before the first request); every reader misses them when this
        returns."""
        batches = [self._expression([("id", ids[start:start + ID_BATCH])]) for start in range(0, len(ids), ID_BATCH)]
        collection = collection or self.require_live()
        for expr, params in batches:  # never pymilvus' `ids=`, which pastes ids into `id in [...]` unescaped
            self.client.delete(collection, filter=expr, filter_params=params)
        self._settle(collection)

    # -- reads ---------------------------------------------------------------------------------------------

    def _ready(self, collection: str | None) -> str:
        name = collection or self.require_live()
        if name not in self._loaded:
            if not self.client.has_collection(name):
                raise SkillIndexError(f"no collection '{name}' in {self.uri}")
            self.client.load_collection(name)  # Lite releases everything on reopen
            self._loaded.add(name)
        return name

    def count(self, collection: str | None = None) -> int:
        """Live rows (a server's collection statistics would still count deleted ones)."""
        res = self.client.query(self._ready(collection), filter="", output_fields=["count(*)"],
                                consistency_level="Strong")
        return int(res[0]["count(*)"])

    def search(self, vectors: np.ndarray, k: int = 20, category: str | Sequence[str] | None = None,
               source: str | Sequence[str] | None = None, collection: str | None = None,
               ) -> list[list[tuple[str, float]]]:
        """Top-`k` (id, cosine) per query row, best first, optionally only among skills of the given
        categories or sources; queries go in batches of `SEARCH_BATCH`."""
        expr = self._expression(filter_clauses(category, source))  # an unsafe value raises before the search
        return [[(h["id"], h["distance"]) for h in hits] for hits in self._search(vectors, k, expr, ["id"], collection)]

    def _search(self, vectors: np.ndarray, k: int, expr: tuple[str, dict], fields: list[str],
                collection: str | None):
        name = self._ready(collection)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        params = {"params": {"ef": max(k, HNSW_MIN_EF)}} if self.index_type == "HNSW" else {}
        out = []
        for start in range(0, len(vectors), SEARCH_BATCH):
            out += self.client.search(name, data=list(vectors[start:start + SEARCH_BATCH]), limit=k, filter=expr[0],
                                      filter_params=expr[1], output_fields=fields, search_params=params)
        return out

    def rows(self, fields: Sequence[str], collection: str | None = None, page: int | None = None) -> Iterator[dict]:
        """Every row's id and `fields`, in pages of `page` rows in id order (a server caps a plain query's window):
        each page asks for the ids after the last one seen, as an escaped literal (`iterator` makes the server
        return the smallest ids first, as pymilvus' own query iterator relies on)."""
        name, page, after = self._ready(collection), page or ROWS_PAGE, None
        while True:
            batch = self.client.query(name, filter="" if after is None else f"id > {_quoted(after)}", limit=page,
                                      output_fields=["id", *fields], iterator="True")
            batch.sort(key=lambda r: r["id"])
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1]["id"]

    def hashes(self, collection: str | None = None) -> dict[str, str]:
        """{id: content_hash} of every row."""
        return {r["id"]: r["content_hash"] for r in self.rows(["content_hash"], collection)}

    def vectors(self, collection: str | None = None) -> tuple[list[str], np.ndarray]:
        """Every row's id and vector (float32, one row each)."""
        ids, vectors = [], []
        for r in self.rows(["vector"], collection):
            ids.append(r["id"])
            vectors.append(r["vector"])
        return ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)

    def verify(self, collection: str, skills: Sequence[Skill], vectors: np.ndarray, expected_rows: int,
               sample: int = VERIFY_SAMPLE, seed: int = 0) -> dict:
        """Check that `collection` holds `expected_rows` rows and that a sample of `skills` finds itself first by
        its own vector. A top score shared with other skills is a tie, not a miss, when the skill is among the
        tied (real registries publish copies that differ only past what the encoder reads: same vector, other
        id), or the top hit has its content hash (an exact duplicate). A mis-written index fails here, and so
        does a collapsed encoder (many different skills with one vector). On success the version is marked
        verified, which `switch` requires."""
        rows = self.count(collection)
        picks = random.Random(seed).sample(range(len(skills)), min(sample, len(skills)))
        k = min(VERIFY_TIE_DEPTH, max(rows, 1))
        hits = self._search(vectors[picks], k, ("", {}), ["content_hash"], collection) if picks else []
        misses, shared = [], 0
        for i, found in zip(picks, hits):
            skill = skills[i]
            tied = [h for h in found if h["distance"] >= found[0]["distance"] - TIE_TOLERANCE] if found else []
            if not (any(h["id"] == skill.id for h in tied)
                    or (tied and tied[0]["entity"]["content_hash"] == skill.content_hash)):
                misses.append(skill.id)
            shared += any(h["id"] != skill.id and h["entity"]["content_hash"] != skill.content_hash for h in tied)
        recall = 1 - len(misses) / len(picks) if picks else 1.0
        problems = []
        if rows != expected_rows:
            problems.append(f"{rows:,} rows, expected {expected_rows:,}")
        if recall < MIN_SELF_RECALL[self.index_type]:
            problems.append(f"{len(misses)} of {len(picks)} sampled skills are not their own top-1 "
                            f"(e.g. {', '.join(misses[:3])})")
        if shared > max(2, MAX_SHARED_VECTORS * len(picks)):  # a sync of two copied skills is no collapse
            problems.append(f"{shared} of {len(picks)} sampled skills share their top score with a skill of other "
                            "text: the encoder gives different skills one vector (collapsed)")
        if problems:
            raise SkillIndexError(f"verification of {collection} in {self.uri} failed: {'; '.join(problems)}")
        self.client.alter_collection_properties(collection, properties={VERIFIED_PROPERTY: "true"})
        return {"rows": rows, "sampled": len(picks), "self_recall": round(recall, 4), "ties": shared}

    def info(self) -> dict:
        """What a person checking the index wants: where, which version is live, rows per version."""
        live = self.live()
        versions = []
        for version in self.versions():
            name = self.version_name(version)
            props = self.properties(name)
            versions.append({"name": name, "rows": self.count(name), "live": name == live,
                             "verified": props.get(VERIFIED_PROPERTY) == "true",
                             "encoder": props.get(ENCODER_PROPERTY)})
        index = self.client.describe_index(live, "vector") if live else {}
        return {"uri": self.uri, "alias": self.alias, "live": live, "dim": self.dim(live) if live else None,
                "index_type": index.get("index_type"), "metric": index.get("metric_type"), "versions": versions}
