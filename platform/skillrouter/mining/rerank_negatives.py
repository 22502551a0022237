"""Reranker negatives from the first stage it will rerank (`reranker.negatives_from: SYSTEM`).

Mined negatives (the zero-shot encoder's neighbours, BM25 matches, same-category and random skills) suit a
bi-encoder, which ranks the whole corpus. A reranker only ever sees a first stage's top `routing.retrieve_k`: every
candidate hard, found by the fine-tuned encoder and BM25 together, none of them random. Trained on the mined groups,
the cross-encoder ranked held-out skills' queries below the first stage it reranked, in distribution too
(benchmarks/README.md, "Reranker negatives"). This trains it on the list it will see: each training group's
negatives become SYSTEM's top `retrieve_k` for its query, without the positive and without what mining's three-layer
false-negative filter flags (same name, body trigram Jaccard, the mining encoder's cosine), in a seeded order per
query so that `reranker.negatives` of them are a random sample of the head rather than always its first few.
Measured on the main command and at pool scale, it did not beat the mined negatives (the same section), so the
profiles keep `mined`, the paper's recipe; it stays for rerankers with more capacity than MiniLM.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.filtering.filter import FalseNegativeFilter
from skillrouter.filtering.jaccard import ExactJaccard
from skillrouter.mining.negatives import query_rng

FIRST_STAGE = "first_stage"  # the negatives' `source`


def first_stage_negatives(groups: pa.Table, skills: Sequence[Skill], config: PipelineConfig, system: str,
                          log=print) -> pa.Table:
    """`groups` with each group's negatives replaced by `system`'s head for its query (see the module). A group
    whose head holds nothing but its positive and false negatives keeps its mined negatives."""
    from skillrouter.mining.job import NEGATIVE, mining_embeddings
    from skillrouter.retrieval.systems import get_system

    started = time.perf_counter()
    cfg = config.mining
    row_of = {s.id: i for i, s in enumerate(skills)}
    k = min(config.routing.retrieve_k, len(skills))
    indices, scores = get_system(system).build(skills, config).search(groups.column("query").to_pylist(), k)
    fn_filter = FalseNegativeFilter([s.name for s in skills], ExactJaccard([s.body for s in skills],
                                                                           cfg.jaccard_threshold),
                                    mining_embeddings(skills, cfg, log), cfg.cosine_threshold)
    removed, outside, kept_mined = Counter(), 0, 0
    negatives = []
    rows = zip(groups.column("query_id").to_pylist(), groups.column("positive_id").to_pylist(),
               groups.column("negatives").to_pylist(), indices.tolist(), scores.tolist())
    for query_id, positive_id, mined, head, head_scores in rows:
        positive = row_of[positive_id]
        outside += positive not in head
        chosen = []
        for i, score in zip(head, head_scores):
            if i == positive:
                continue
            reason = fn_filter.reason(positive, i) if cfg.filter_false_negatives else None
            if reason:
                removed[reason] += 1
                continue
            chosen.append({"skill_id": skills[i].id, "source": FIRST_STAGE, "score": round(score, 6)})
        if not chosen:
            kept_mined += 1
            negatives.append(mined)
            continue
        negatives.append([chosen[j] for j in query_rng(config.seed, query_id).permutation(len(chosen))])
    flagged = ", ".join(f"{layer} {n:,}" for layer, n in removed.items()) or "none"
    kept = f"; {kept_mined} kept their mined negatives" if kept_mined else ""
    log(f"reranker negatives: {system}'s top {k} for {groups.num_rows:,} training queries in "
        f"{time.perf_counter() - started:.1f} s; false negatives removed: {flagged}; positive outside the top {k}: "
        f"{outside / max(groups.num_rows, 1):.1%}{kept}")
    column = groups.schema.get_field_index("negatives")
    return groups.set_column(column, "negatives", pa.array(negatives, pa.list_(NEGATIVE)))
