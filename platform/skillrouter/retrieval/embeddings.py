"""Corpus embeddings on Ray Data, cached on disk by (model, corpus version) for mining, training and indexing.

Texts are sorted by length before batching, so a batch holds texts of similar length and little padding; each
actor of the pool loads the encoder once (on a GPU when the cluster has or can add one: `choose_gpus`). The cache
key covers the encoder spec and every skill's id and content hash; beside each entry lie its rows' text keys, so
a corpus that changed (a registry update, an evaluation's look-alikes added to a pool) embeds only the skills whose
text no earlier entry of the same encoder holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from skillrouter.common.raycluster import choose_gpus, ensure_ray
from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill, SkillText, unordered_corpus_version
from skillrouter.models.encoder import Encoder, EncoderInputs, EncoderSpec, skill_texts
from skillrouter.models.loading import model_version
from skillrouter.models.windows import mean_rows

IN_PROCESS_MAX = 5000  # skills a caller may embed in its own process; more go through a Ray Data actor pool
# tokens per batch (padding included) of an actor on CPUs when no budget is set: 8 windows of 256 tokens. MiniLM's
# activations for 64 of them took 570 MB more per actor, at the same speed, and the same rows (within 3e-8)
CPU_BATCH_TOKENS = 2048


def id_order(skills: Sequence[Skill]) -> np.ndarray:
    """Positions of `skills` sorted by id: the cache's row order, so that one corpus in any order (an evaluation
    ranks its pool in a seeded random order) shares one cache entry."""
    return np.array(sorted(range(len(skills)), key=lambda i: skills[i].id), dtype=np.int64)


def cache_path(cache_dir: str | Path, spec: EncoderSpec, skills: Sequence[Skill], fields: SkillText = "full") -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.strip("/"))[-60:]
    spec_hash = hashlib.sha256((spec.cache_key() + model_version(spec.model)).encode()).hexdigest()[:8]
    suffix = "" if fields == "full" else f"-{fields}"  # keys written before fields existed stay valid
    version = unordered_corpus_version(skills)  # one entry per corpus, in any order
    return Path(cache_dir) / f"{model}-{spec_hash}" / f"{version}{suffix}.npy"


REUSE_ENTRIES = 8  # the largest entries of an encoder that a changed corpus takes rows from


def text_keys(skills: Sequence[Skill], fields: SkillText = "full") -> np.ndarray:
    """One 16-byte key per skill for the text its row is computed from (with the encoder spec: the entry's
    folder). The full text's key is the skill's content hash; another field set hashes its own text."""
    if fields == "full":
        return np.array([bytes.fromhex(s.content_hash) for s in skills], dtype="S16")
    return np.array([hashlib.sha256(f"{fields}\0{s.routing_text(fields)}".encode()).digest()[:16] for s in skills],
                    dtype="S16")


def _keys_path(path: Path) -> Path:
    return path.with_suffix(".keys")  # not .npy: an entry's rows stay its one .npy file


def reusable_rows(path: Path, keys: np.ndarray, log=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(positions, rows) of the skills whose text key another entry beside `path` holds (of the
    `REUSE_ENTRIES` largest): the rows a changed corpus need not embed again."""
    wanted: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys.tolist()):
        wanted.setdefault(key, []).append(i)
    entries = []
    for entry in path.parent.glob("*.keys"):
        try:
            stat = entry.stat()
        except OSError:  # removed meanwhile
            continue
        entries.append((stat.st_size, stat.st_mtime, entry))
    # the largest entries first (a whole registry, not a one-skill update), the newest of equal size
    entries = [e for *_, e in sorted(entries, reverse=True) if e != _keys_path(path)][:REUSE_ENTRIES]
    positions, rows = [], []
    for entry in entries:
        if not wanted:
            break
        try:
            held = np.load(entry, allow_pickle=False)
            matrix = np.load(entry.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:  # removed meanwhile, or cut short: embed instead
            if log:
                log(f"corpus embeddings: skipped unreadable cache entry {entry.name}: {err}")
            continue
        if (held.dtype != keys.dtype or held.ndim != 1 or matrix.ndim != 2 or len(held) != len(matrix)
                or (rows and matrix.shape[1] != rows[0].shape[1])):
            continue
        take = [(j, wanted.pop(key)) for j, key in enumerate(held.tolist()) if key in wanted]
        if take:
            rows.append(np.asarray(matrix[[j for j, _ in take]], dtype=np.float32).repeat(
                [len(pos) for _, pos in take], axis=0))
            positions.extend(i for _, pos in take for i in pos)
    if not positions:
        return np.empty(0, dtype=np.int64), None
    return np.asarray(positions, dtype=np.int64), np.concatenate(rows)


SKILL_COLUMNS = ("id", "name", "description", "body", "category")
OnRows = Callable[[np.ndarray, np.ndarray], None]  # (positions in the caller's order, their unit rows)


class PrepareWorker:
    """Ray Data actor on one CPU: cuts a block's skills into windows and tokenizes them for a GPU `EmbedWorker`,
    so that the GPU actor (one CPU of its own) spends its time in forwards. A pool run's MiniLM embedding of 69K
    skills in 2 windows ran at 280 skills/s with the cutting and tokenizing in the GPU actor; one window, which
    cuts nothing, at 2,000/s."""

    def __init__(self, spec: EncoderSpec, fields: SkillText = "full"):
        self.inputs, self.fields = EncoderInputs.from_spec(spec), fields

    def __call__(self, batch: dict) -> dict:
        return {"prepared": [prepare_block(self.inputs, payload, self.fields) for payload in batch["block"]]}


def _block_skills(payload: bytes) -> tuple[np.ndarray, list[Skill]]:
    table = unpack_block(payload)
    return table["idx"].to_numpy(), [Skill(*row) for row in zip(*(table[c].to_pylist() for c in SKILL_COLUMNS))]


def _tokenized_block(inputs: EncoderInputs, payload: bytes,
                     fields: SkillText) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """A `pack_block` payload's positions, window owners and windows' token ids."""
    idx, skills = _block_skills(payload)
    texts, owner = inputs.skill_texts(skills, fields)
    return idx, owner, inputs.tokenize(texts)


def prepare_block(inputs: EncoderInputs, payload: bytes, fields: SkillText = "full") -> bytes:
    """A `pack_block` payload as the encoder's token ids: (positions, window owners, ids, seconds) in one .npz."""
    started = time.perf_counter()
    idx, owner, ids = _tokenized_block(inputs, payload, fields)
    buf = io.BytesIO()
    np.savez(buf, idx=idx, owner=owner, lengths=np.array([len(x) for x in ids], dtype=np.int64),
             tokens=np.fromiter((t for x in ids for t in x), dtype=np.int32),
             seconds=np.array(time.perf_counter() - started))
    return buf.getvalue()


def _prepared(payload: bytes) -> tuple[np.ndarray, np.ndarray, list[list[int]], float]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        cuts = np.cumsum(z["lengths"])[:-1]
        return z["idx"], z["owner"], [x.tolist() for x in np.split(z["tokens"], cuts)], float(z["seconds"])


class EmbedWorker:
    """Ray Data actor: one encoder per actor; embeds a block of skills (`pack_block`; their windows too, cut here
    rather than in the driver), or a block a `PrepareWorker` has tokenized, into one unit row per skill."""

    def __init__(self, spec: EncoderSpec, batch_size: int, max_batch_tokens: int | None, compile: bool,
                 fields: SkillText = "full", packed: bool = False):
        self.encoder = Encoder.load(spec, compile=compile, packed=packed)
        self.batch_size, self.max_batch_tokens, self.fields = batch_size, max_batch_tokens, fields

    def __call__(self, batch: dict) -> dict:
        idx, rows, seconds = [], [], np.zeros(2)
        # one block per call (`embed_pool`): skills, or their token ids
        for payload in batch["prepared"] if "prepared" in batch else batch["block"]:
            started = time.perf_counter()
            if "prepared" in batch:
                positions, owner, ids, prepared_s = _prepared(payload)
            else:
                (positions, owner, ids), prepared_s = _tokenized_block(self.encoder, payload, self.fields), 0.0
            cut = time.perf_counter()
            rows.append(mean_rows(self.encoder.encode_ids(ids, self.batch_size, self.max_batch_tokens), owner,
                                  len(positions)))
            idx.append(positions)
            seconds += (prepared_s + cut - started, time.perf_counter() - cut)
        n = sum(len(i) for i in idx)
        # where the time went (cutting windows and tokenizing, in a PrepareWorker or here; the forwards), spread
        # over the block's rows so that the driver's sum is the total; and what the encoder ran on
        return {"idx": np.concatenate(idx), "embedding": np.concatenate(rows),
                "cut_s": np.full(n, seconds[0] / n), "encode_s": np.full(n, seconds[1] / n),
                "ran_on": np.full(n, f"{self.encoder.device} {str(self.encoder.model.dtype).removeprefix('torch.')}")}


def pack_block(skills: Sequence[Skill], rows: np.ndarray) -> bytes:
    """`skills[rows]` (their `SKILL_COLUMNS` and positions) as one zstd-compressed Arrow IPC stream: a pool's texts
    are half a gigabyte of UTF-8 and about 190 MB so, and the object store keeps the pages of freed objects.

    Texts go to Arrow as bytes encoded here: given a str that is not ASCII, Arrow asks CPython for its UTF-8, which
    CPython then keeps beside the str for as long as the str lives (0.3 GB more for the 69K pool, most of whose
    bodies hold a character beyond ASCII)."""
    import pyarrow as pa

    def utf8(value: str | None) -> bytes | None:
        return None if value is None else value.encode("utf-8")
    table = pa.table({"idx": pa.array(rows, pa.int64()),
                      **{c: pa.array([utf8(getattr(skills[j], c)) for j in rows], pa.string())
                         for c in SKILL_COLUMNS}})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack_block(payload: bytes):
    """The table `pack_block` packed."""
    import pyarrow as pa

    with pa.ipc.open_stream(pa.py_buffer(payload)) as reader:
        return reader.read_all()


def pool_size(actors: int | None, use_gpu: bool) -> tuple[int, float]:
    """(actors, CPUs per actor): `actors` as given, one CPU each (a GPU each on a GPU cluster); None: every GPU,
    else the cluster's CPUs shared by up to 4 actors (each actor's torch uses the threads of its CPUs)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if actors is not None:
        return actors, 1
    if use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 1))), 1
    actors = min(cpus, 4)
    return actors, cpus // actors


def embed_pool(skills: Sequence[Skill], spec: EncoderSpec, *, fields: SkillText = "full", actors: int | None = None,
               batch_size: int = 64, max_batch_tokens: int | None = None, compile: bool = False,
               packed: bool = False, use_gpu: bool | str = "auto", progress: bool = True,
               log: Callable[[str], None] | None = None, on_rows: OnRows | None = None,
               prepare_actors: int | None = None) -> np.ndarray:
    """One unit row per skill, in input order, from a Ray Data actor pool fed the longest skills first (`pool_size`
    actors, on GPUs as `choose_gpus(use_gpu)` decides; a progress bar on stderr unless `progress` is false).
    `on_rows(positions, rows)` sees each batch as it arrives, while the actors embed the next ones.
    `prepare_actors` CPU actors cut and tokenize the blocks for the encoder actors (`PrepareWorker`); None: up to
    8 of the cluster's free CPUs when the encoder actors are GPUs, none on CPUs (they would share the cores)."""
    import pyarrow as pa
    import ray

    ensure_ray()
    use_gpu, why = choose_gpus(use_gpu)
    actors, cpus = pool_size(actors, use_gpu)
    if log:
        log(f"corpus embeddings: {actors} {'GPU' if use_gpu else 'CPU'} actor(s) ({why})")
    if not use_gpu and max_batch_tokens is None:
        max_batch_tokens = CPU_BATCH_TOKENS
    order = np.argsort([-len(s.body) for s in skills], kind="stable")
    # one block per actor call, and at least one block per actor: a small corpus (the bundled 239 skills) would
    # otherwise be one block, embedded by one actor on one core while the others wait
    rows = max(1, min(batch_size * 4, -(-len(skills) // actors)))
    # each block goes to the object store as it is made, compressed (`pack_block`): the driver never holds the
    # corpus twice, and the store holds a 70K-skill pool's texts in 190 MB instead of 490 (its pages stay resident
    # after the pool is done)
    ds = ray.data.from_arrow_refs([ray.put(pa.table({"block": pa.array([pack_block(skills, order[i:i + rows])],
                                                                       pa.large_binary())}))
                                   for i in range(0, len(order), rows)])
    if prepare_actors is None:
        # CPUs free now (Serve replicas or training workers may hold some), less the encoder actors' and one kept
        # for the driver: an actor that cannot be placed would stall the pool
        spare = int(ray.available_resources().get("CPU", 0)) - actors * cpus - 1
        prepare_actors = max(0, min(8, spare)) if use_gpu else 0
    if prepare_actors:
        if log:
            log(f"corpus embeddings: {prepare_actors} CPU actor(s) cut windows and tokenize for the encoder")
        ds = ds.map_batches(PrepareWorker, fn_constructor_kwargs={"spec": spec, "fields": fields}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=prepare_actors), num_cpus=1)
    kwargs = {"spec": spec, "batch_size": batch_size, "max_batch_tokens": max_batch_tokens, "compile": compile,
              "fields": fields, "packed": packed}
    # one block in flight per actor: the first actor up would otherwise be handed every block of a small corpus
    ds = ds.map_batches(EmbedWorker, fn_constructor_kwargs=kwargs, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                        num_gpus=1 if use_gpu else 0, num_cpus=cpus)
    out: np.ndarray | None = None
    cut_s = encode_s = 0.0
    ran_on = set()
    started = time.perf_counter()
    # our own bar, not Ray Data's: one line that also advances in a log file (mininterval), in skills
    with tqdm(total=len(skills), desc="embedding skills", unit=" skills", disable=not progress, mininterval=5,
              file=sys.stderr) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            emb = np.asarray(batch["embedding"], dtype=np.float32)
            if out is None:
                out = np.empty((len(skills), emb.shape[1]), dtype=np.float32)
            out[batch["idx"]] = emb
            if on_rows:
                on_rows(batch["idx"], emb)
            cut_s, encode_s = cut_s + float(batch["cut_s"].sum()), encode_s + float(batch["encode_s"].sum())
            ran_on.update(str(x) for x in batch["ran_on"])
            bar.update(len(emb))
    if log:
        log(f"corpus embeddings: {time.perf_counter() - started:.1f} s on the pool; its actors spent "
            f"{cut_s:.1f} s cutting windows and {encode_s:.1f} s in the encoder ({', '.join(sorted(ran_on))})")
    return out


def embed_skills(skills: Sequence[Skill], spec: EncoderSpec, cache_dir: str | Path, *, fields: SkillText = "full",
                 actors: int | None = 1, batch_size: int = 64, max_batch_tokens: int | None = None,
                 compile: bool = False, packed: bool = False, use_gpu: bool | str = "auto",
                 embed: Callable[[list[str]], np.ndarray] | None = None,
                 log=print, on_rows: OnRows | None = None) -> np.ndarray:
    """The corpus matrix (one unit row per skill, in order), from the cache when the model and corpus match.
    `embed` (texts -> rows, an encoder already loaded for `spec`) replaces the Ray Data pool, e.g. in a serving
    replica that must not start actors of its own; `actors` None sizes the pool to the cluster (`pool_size`).
    `on_rows(positions, rows)` is given the rows as they come, every skill once (all at once from the cache or
    `embed`): an index build writes them while the pool embeds the rest."""
    path = cache_path(cache_dir, spec, skills, fields)
    if path.exists():
        log(f"corpus embeddings: cached {path}")
        cached = np.load(path)
        out = np.empty_like(cached)
        out[id_order(skills)] = cached  # back from the cache's id order to the caller's
        if on_rows:
            on_rows(np.arange(len(skills)), out)
        return out
    started = time.perf_counter()
    keys = text_keys(skills, fields)
    known, rows = reusable_rows(path, keys, log)
    todo = np.setdiff1d(np.arange(len(skills)), known)
    emb = None
    if rows is not None:
        log(f"corpus embeddings: {len(known):,} of {len(skills):,} skills' texts are in earlier entries; "
            f"embedding the other {len(todo):,}")
        emb = np.empty((len(skills), rows.shape[1]), dtype=np.float32)
        emb[known] = rows
        if on_rows:
            on_rows(known, rows)
    if len(todo):
        part = [skills[i] for i in todo]
        if embed:
            texts, owner = skill_texts(part, spec, fields)
            new = mean_rows(embed(texts), owner, len(part))
            if on_rows:
                on_rows(todo, new)
        else:
            log(f"corpus embeddings: {len(part):,} skills with {spec.model} on a Ray Data actor pool")
            new = embed_pool(part, spec, fields=fields, actors=actors, batch_size=batch_size,
                             max_batch_tokens=max_batch_tokens, compile=compile, packed=packed, use_gpu=use_gpu,
                             log=log, on_rows=(lambda pos, r: on_rows(todo[pos], r)) if on_rows else None)
        if emb is None:
            emb = np.empty((len(skills), new.shape[1]), dtype=np.float32)
        elif new.shape[1] != emb.shape[1]:
            raise ValueError(f"the cache under {path.parent} holds rows of dimension {emb.shape[1]}, the encoder "
                             f"gives {new.shape[1]}: delete that folder")
        emb[todo] = new
    save_embeddings(emb, path, spec, skills, fields)
    log(f"corpus embeddings: {emb.shape[0]:,} x {emb.shape[1]} in {time.perf_counter() - started:.1f} s -> {path}")
    return emb


def save_embeddings(emb: np.ndarray, path: Path, spec: EncoderSpec, skills: Sequence[Skill],
                    fields: SkillText = "full", reusable: bool = True) -> None:
    """The entry at `path`: rows by id (`id_order`), whatever the caller's order, then their text keys (what a
    changed corpus reuses rows by: `reusable_rows`) unless the rows are not the encoder's (`reusable` false)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    order = id_order(skills)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb[order].astype(np.float32))
    tmp.replace(path)  # a reader never sees half a file
    path.with_suffix(".json").write_text(json.dumps({"model": spec.model, "spec": spec.cache_key(),
                                                      "skills": len(skills), "dim": int(emb.shape[1]),
                                                      "fields": fields}) + "\n")
    if not reusable:
        return
    tmp = path.with_suffix(".keys.tmp")
    with open(tmp, "wb") as f:  # written after the rows: keys never name rows that are not there yet
        np.save(f, text_keys(skills, fields)[order], allow_pickle=False)
    tmp.replace(_keys_path(path))


def corpus_embeddings(skills: Sequence[Skill], spec: EncoderSpec, encoder: Encoder, config: PipelineConfig,
                      fields: SkillText = "full") -> np.ndarray:
    """A dense system's skill rows (`route`, `eval`) through the cache that mining and index builds fill
    (`mining.cache_dir`): a small corpus embedded by `encoder` in this process, a large one by a Ray Data actor
    pool over every core (or GPU) of the cluster. Messages go to stderr: stdout is the command's answer."""
    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, config.mining.embed_batch_size)
    return embed_skills(skills, spec, config.mining.cache_dir, fields=fields, actors=None,
                        batch_size=config.mining.embed_batch_size,
                        max_batch_tokens=config.mining.embed_max_batch_tokens, use_gpu=config.mining.use_gpu,
                        embed=embed if len(skills) <= IN_PROCESS_MAX else None,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
