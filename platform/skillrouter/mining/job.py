"""The mining job: build the corpus-wide index once, mine query batches in parallel on Ray Data, write groups.

Outputs in `out_dir`: `groups.parquet` (`query_id, query, positive_id, negatives: [{skill_id, source, score}]`),
`mining_stats.json` (per-stage time, per-source counts, removals by filter layer, LSH recall) and
`mining_sample.md`, a few queries with their positive and negatives for a person to judge.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skillrouter.common.raycluster import choose_gpus, ensure_ray
from skillrouter.common.tables import shorten
from skillrouter.config import MiningConfig, PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.filtering.filter import LAYERS, FalseNegativeFilter
from skillrouter.filtering.jaccard import NearDuplicates, lsh_recall, trigram_shingles
from skillrouter.filtering.names import normalise_name
from skillrouter.mining.negatives import SOURCES, MiningIndex, mine_batch
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval.bm25 import build_bm25
from skillrouter.retrieval.categories import Categories, categories_for
from skillrouter.retrieval.embeddings import IN_PROCESS_MAX, embed_skills

GROUPS_FILE = "groups.parquet"
NEGATIVE = pa.struct([("skill_id", pa.string()), ("source", pa.string()), ("score", pa.float64())])
GROUP_SCHEMA = pa.schema([("query_id", pa.string()), ("query", pa.string()), ("positive_id", pa.string()),
                          ("negatives", pa.list_(NEGATIVE))])
STAT_KEYS = ("queries", "negatives", "examined", "backfilled", "short_groups",
             *(f"{what}_{layer}" for what in ("removed", "kept") for layer in LAYERS))


def encoder_spec(cfg: MiningConfig) -> EncoderSpec:
    return EncoderSpec(model=cfg.encoder, max_length=cfg.encoder_max_length, windows=cfg.encoder_windows)


def build_index(skills: Sequence[Skill], categories: Categories, embeddings: np.ndarray, config: PipelineConfig,
                timings: dict, log=print) -> tuple[MiningIndex, NearDuplicates]:
    cfg = config.mining
    codes = {c: i for i, c in enumerate(sorted(set(categories.by_skill.values())))}
    started = time.perf_counter()
    bm25 = build_bm25(skills, config.bm25)  # the same index and parameters as serving's first stage
    timings["bm25_build_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    shingles = [trigram_shingles(s.body) for s in skills]
    near = NearDuplicates(shingles, cfg.jaccard_threshold, cfg.num_perm, cfg.lsh_threshold,
                          progress=len(skills) > 20_000)
    timings["jaccard_lsh_s"] = round(time.perf_counter() - started, 2)
    log(f"index: BM25 {timings['bm25_build_s']} s, near-duplicate bodies {near.num_pairs:,} pairs from "
        f"{near.candidates:,} LSH candidates in {timings['jaccard_lsh_s']} s")
    fn_filter = FalseNegativeFilter([s.name for s in skills], near, embeddings, cfg.cosine_threshold)
    index = MiningIndex([s.id for s in skills], np.array([codes[categories.by_skill[s.id]] for s in skills]),
                        embeddings, bm25, fn_filter)
    return index, near


class MiningWorker:
    """Ray Data actor: embeds a batch of queries and mines their negatives against the shared index."""

    def __init__(self, index_ref: list, cfg: MiningConfig):
        import ray

        self.index = ray.get(index_ref[0])  # zero-copy numpy arrays from the object store
        self.cfg = cfg
        self.encoder = Encoder.load(encoder_spec(cfg))

    def __call__(self, batch: dict) -> dict:
        queries = list(batch["query"])
        emb = self.encoder.encode_queries(queries, self.cfg.embed_batch_size)
        groups, stats = mine_batch(self.index, list(batch["query_id"]), queries, list(batch["skill_id"]), emb,
                                   self.cfg)
        out = {"query_id": batch["query_id"], "query": batch["query"], "positive_id": batch["skill_id"],
               "negatives": groups}
        # per-batch counters ride along on the first row (zeros elsewhere) and are summed by the driver
        for key in STAT_KEYS:
            out[f"stat_{key}"] = [stats.get(key, 0)] + [0] * (len(queries) - 1)
        return out


def mining_embeddings(skills: Sequence[Skill], cfg: MiningConfig, log=print) -> np.ndarray:
    """The corpus's unit rows from the mining encoder (cached): the false-negative filter's third layer."""
    spec = encoder_spec(cfg)
    embed = None
    if len(skills) <= IN_PROCESS_MAX and not choose_gpus(cfg.use_gpu)[0]:
        # a small corpus on CPUs: this process embeds it (an actor pool's start-up cost the main job's mining
        # a minute for 239 skills); a GPU cluster still gets GPU actors
        def embed(texts: list[str]) -> np.ndarray:
            return Encoder.load(spec).encode(texts, cfg.embed_batch_size, cfg.embed_max_batch_tokens)
    return embed_skills(skills, spec, cfg.cache_dir, actors=cfg.embed_actors, batch_size=cfg.embed_batch_size,
                        max_batch_tokens=cfg.embed_max_batch_tokens, compile=cfg.compile_encoder,
                        use_gpu=cfg.use_gpu, embed=embed, log=log)


def run_mining(skills: Sequence[Skill], queries: pa.Table, config: PipelineConfig, out_dir: str | Path,
               categories: Categories | None = None, log=print) -> dict:
    import ray

    cfg = config.mining
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    known = {s.id for s in skills}
    queries = queries.filter(pa.array([sid in known for sid in queries.column("skill_id").to_pylist()]))
    if queries.num_rows == 0:
        raise ValueError("no query has its positive skill in the corpus: check --corpus and --queries")
    ensure_ray()
    started = time.perf_counter()
    categories = categories or categories_for(skills, seed=config.seed)
    timings["categories_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    embeddings = mining_embeddings(skills, cfg, log)
    timings["corpus_embedding_s"] = round(time.perf_counter() - started, 2)
    index, near = build_index(skills, categories, embeddings, config, timings, log)

    started = time.perf_counter()
    table = queries.select(["query_id", "query", "skill_id"])
    # one block per batch: a single block would be one task, and one actor would do all the work
    ds = ray.data.from_arrow([table.slice(i, cfg.batch_size) for i in range(0, table.num_rows, cfg.batch_size)])
    ds = ds.map_batches(MiningWorker, fn_constructor_kwargs={"index_ref": [ray.put(index)], "cfg": cfg},
                        batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.actors),
                        batch_format="numpy")
    rows, stats = [], Counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for key in STAT_KEYS:
            stats[key] += int(pa.compute.sum(batch.column(f"stat_{key}")).as_py() or 0)
        rows.append(batch.select(GROUP_SCHEMA.names).cast(GROUP_SCHEMA))
    table = pa.concat_tables(rows).sort_by("query_id")
    pq.write_table(table, out / GROUPS_FILE)
    timings["mining_s"] = round(time.perf_counter() - started, 2)

    source_counts = Counter(n["source"] for negs in table.column("negatives").to_pylist() for n in negs)
    removed = {layer: stats[f"removed_{layer}"] for layer in LAYERS}
    summary = {
        "queries": stats["queries"], "negatives": stats["negatives"], "by_source": dict(source_counts),
        "candidates_examined": stats["examined"], "filter_false_negatives": cfg.filter_false_negatives,
        "removed_by_layer": removed, "removed_share": round(sum(removed.values()) / max(stats["examined"], 1), 4),
        # with the filter off: negatives the filter would have removed, kept in the groups
        "flagged_kept_by_layer": {layer: stats[f"kept_{layer}"] for layer in LAYERS},
        "backfilled": stats["backfilled"], "short_groups": stats["short_groups"],
        "near_duplicate_pairs": near.num_pairs, "categories": categories.method,
        "encoder": cfg.encoder, "thresholds": {"jaccard": cfg.jaccard_threshold, "cosine": cfg.cosine_threshold},
        "timings": timings,
    }
    summary["lsh_recall"] = sample_lsh_recall(skills, cfg, seed=config.seed)
    (out / "mining_stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_sample(table, skills, out / "mining_sample.md", cfg.sample_size, config.seed)
    return summary


def sample_lsh_recall(skills: Sequence[Skill], cfg: MiningConfig, seed: int, size: int = 2000) -> dict:
    """LSH recall against exact Jaccard on a sample rich in near-duplicates: skills that share a name with
    another (where most near-duplicate bodies are) plus a random remainder."""
    rng = random.Random(seed)
    by_name: dict[str, list[int]] = {}
    for i, s in enumerate(skills):
        by_name.setdefault(normalise_name(s.name), []).append(i)
    shared = [i for group in by_name.values() if len(group) > 1 for i in group]
    pick = set(rng.sample(shared, min(len(shared), size // 2)))
    rest = [i for i in range(len(skills)) if i not in pick]
    pick |= set(rng.sample(rest, min(len(rest), size - len(pick))))
    sample = sorted(pick)
    result = lsh_recall([trigram_shingles(skills[i].body) for i in sample], cfg.jaccard_threshold, cfg.num_perm,
                        cfg.lsh_threshold)
    return {"sample": len(sample), **result}


def write_sample(table: pa.Table, skills: Sequence[Skill], path: Path, n: int, seed: int) -> None:
    """A page a person can read to judge the negatives: query, positive, and each negative with its source."""
    by_id = {s.id: s for s in skills}
    rows = table.to_pylist()
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    lines = ["# Mined training groups: a sample", "",
             f"{len(picked)} of {len(rows):,} groups, chosen at random (seed {seed}). Sources: "
             + ", ".join(SOURCES) + ".", ""]
    for r in picked:
        pos = by_id[r["positive_id"]]
        lines += [f"## {r['query']}", "", f"- **positive** `{pos.id}` ({pos.name}): {shorten(pos.description, 110)}"]
        for neg in r["negatives"]:
            s = by_id[neg["skill_id"]]
            lines.append(f"- {neg['source']} {neg['score']:.3f} `{s.id}` ({s.name}): {shorten(s.description, 90)}")
        lines.append("")
    path.write_text("\n".join(lines))


def print_mining_summary(summary: dict, out: str | Path, log=print) -> None:
    removed = summary["removed_by_layer"]
    log(f"{summary['queries']:,} groups, {summary['negatives']:,} negatives "
        f"({', '.join(f'{k} {v:,}' for k, v in summary['by_source'].items())})")
    if summary.get("filter_false_negatives", True):
        log(f"false negatives removed: {', '.join(f'{k} {v:,}' for k, v in removed.items())} = "
            f"{summary['removed_share']:.1%} of {summary['candidates_examined']:,} candidates; back-filled "
            f"{summary['backfilled']:,}; short groups {summary['short_groups']}")
    else:
        kept = summary["flagged_kept_by_layer"]
        log(f"false-negative filter off (mining.filter_false_negatives=false): kept {sum(kept.values()):,} flagged "
            f"negatives ({', '.join(f'{k} {v:,}' for k, v in kept.items())}) of {summary['candidates_examined']:,} "
            f"candidates; back-filled {summary['backfilled']:,}; short groups {summary['short_groups']}")
    r = summary["lsh_recall"]
    log(f"LSH recall against exact Jaccard: {r['found']}/{r['exact_pairs']} pairs on a sample of {r['sample']}")
    log(f"wrote {Path(out) / GROUPS_FILE}, mining_stats.json and mining_sample.md")
