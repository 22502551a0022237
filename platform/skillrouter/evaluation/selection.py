"""Which system to serve, chosen on validation queries: the queries of skills held out of training.

Each candidate first stage (`routing.candidates`) ranks the validation queries over the whole corpus; the trained
reranker then rescores each head once, and its order is fused with the first stage's at every weight of
`routing.fusion_weights` (`retrieval.rerank.rerank_order`): weight 0 is the first stage alone, 1 the reranker alone
(the paper's order). Rows are compared by MRR@10, then Hit@1; on a tie the simpler system wins (no reranker, then
the lower weight). The served system is chosen the same way among the first stages, each with its reranked row only
where that row beats it clearly: `routing.min_rerank_gain` more Hit@1 and no less MRR@10 (a reranker that won a dev
set by a hair once scored 2 points of Hit@1 under its first stage on the test requests). The same table says
whether a weak reranker is a training bug (it loses even here, in distribution) or a shift in the requests (it
wins here and loses on a benchmark written otherwise).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.evaluation.metrics import hit_at_k, mrr_at_k
from skillrouter.evaluation.runner import tie_order
from skillrouter.retrieval.rerank import rerank_order, rerank_scores, score_store
from skillrouter.retrieval.systems import get_system, reranked_name, reranker_spec, trained_model
from skillrouter.training.data import held_out_skills

SELECTION_DIR, SELECTION_FILE = "select", "selection.json"
# what serving calls each servable first stage: the index holds the profile's dense encoder (its fine-tuned one)
FIRST_STAGES = {"bm25": "bm25", "finetuned": "dense", "hybrid:finetuned": "hybrid"}


@dataclass(frozen=True)
class Row:
    first_stage: str  # a system name of `routing.candidates`
    weight: float | None  # None: the first stage alone
    hit1: float
    mrr10: float

    @property
    def system(self) -> str:
        if self.weight is None:
            return self.first_stage
        return reranked_name(self.first_stage, self.weight)


def ranking_quality(rankings: Sequence[Sequence[str]], wanted: Sequence[set[str]]) -> tuple[float, float]:
    """(Hit@1, MRR@10) of rankings (ids, best first) against the skills each query needs."""
    hits = [hit_at_k(r, w, 1) for r, w in zip(rankings, wanted)]
    mrr = [mrr_at_k(r, w, 10) for r, w in zip(rankings, wanted)]
    return float(np.mean(hits)), float(np.mean(mrr))


def fusion_rows(first_stage: str, hits: Sequence[list[tuple[str, float]]], scores: Sequence[dict[str, float]] | None,
                wanted: Sequence[set[str]], weights: Sequence[float], retrieve_k: int) -> list[Row]:
    """The first stage alone, then (with reranker `scores` per query) its order fused at every weight above 0."""
    rows = [Row(first_stage, None, *ranking_quality([[s for s, _ in h] for h in hits], wanted))]
    for weight in sorted({w for w in weights if w > 0}) if scores is not None else ():
        ranked = [[h[0] for h in rerank_order(list(h), s, retrieve_k, weight)] for h, s in zip(hits, scores)]
        rows.append(Row(first_stage, weight, *ranking_quality(ranked, wanted)))
    return rows


def best_row(rows: Sequence[Row]) -> Row:
    """The highest MRR@10, then Hit@1; ties go to the simpler system (no reranker, a lower weight, an earlier
    candidate)."""
    def key(item: tuple[int, Row]):
        i, r = item
        return (-round(r.mrr10, 9), -round(r.hit1, 9), r.weight is not None, r.weight or 0.0, i)
    return min(enumerate(rows), key=key)[1]


def served_row(rows: Sequence[Row], min_gain: float) -> Row:
    """The row to serve: the best (`best_row`) among the first stages alone and the reranked rows that beat their
    own first stage alone by `min_gain` of Hit@1 with no lower MRR@10."""
    alone = {r.first_stage: r for r in rows if r.weight is None}

    def clear_gain(r: Row) -> bool:
        first = alone.get(r.first_stage)
        return first is None or (r.hit1 >= first.hit1 + min_gain - 1e-9 and r.mrr10 >= first.mrr10 - 1e-9)
    return best_row([r for r in rows if r.weight is None or clear_gain(r)])


def validation_queries(groups: pa.Table, config: PipelineConfig) -> tuple[list[str], list[str], int]:
    """(queries, their skill ids, held-out skills): at most `routing.validation_queries` queries of the skills no
    model trains on, in a seeded order."""
    held_out = held_out_skills(groups, config.routing.validation_share, config.seed)
    rows = [r for r in groups.select(["query", "positive_id"]).to_pylist() if r["positive_id"] in held_out]
    order = np.random.default_rng(config.seed).permutation(len(rows))[: config.routing.validation_queries]
    return [rows[i]["query"] for i in order], [rows[i]["positive_id"] for i in order], len(held_out)


def score_candidates(skills: Sequence[Skill], queries: Sequence[str], wanted: Sequence[set[str]],
                     config: PipelineConfig, reranker, weights: dict[str, Sequence[float]],
                     log: Callable[[str], None]) -> list[Row]:
    """Rows for every candidate first stage over `skills`: alone, and fused with `reranker` at its `weights`. Each
    (query, skill) pair is reranked once, though the candidates' heads overlap."""
    pool, k = tie_order(skills, config.eval.tie_seed), config.routing.retrieve_k
    heads = {}
    for name in config.routing.candidates:
        indices, scores = get_system(name).build(pool, config).search(list(queries), k)
        heads[name] = [[(pool[i].id, float(x)) for i, x in zip(row, row_scores)]
                       for row, row_scores in zip(indices, scores)]
    reranked = None
    if reranker is not None:
        by_id = {s.id: s for s in pool}
        union = [sorted({s for h in heads.values() for s, _ in h[q]}) for q in range(len(queries))]
        scored = rerank_scores(reranker, [(query, [by_id[s] for s in ids]) for query, ids in zip(queries, union)],
                               score_store(config.mining.cache_dir, getattr(reranker, "spec", None)))
        log(f"{len(queries)} queries, {sum(map(len, union)):,} pairs reranked for {len(heads)} first stages")
        reranked = {name: [{s: scored[q][s] for s, _ in h[q]} for q in range(len(queries))]
                    for name, h in heads.items()}
    rows: list[Row] = []
    for name, hits in heads.items():
        rows += fusion_rows(name, hits, reranked and reranked[name], wanted, weights[name], k)
    return rows


def select_system(skills: Sequence[Skill], groups: pa.Table, config: PipelineConfig,
                  log: Callable[[str], None] = print) -> dict:
    """Fit each first stage's fusion weight on the validation queries (skills held out of training), choose the
    served system on `routing.selection_benchmark` (requests written as users write them, never reported) or, without
    one, on the validation queries too; say why."""
    from skillrouter.evaluation.benchmark import load_benchmark
    from skillrouter.models.reranker import Reranker

    started = time.perf_counter()
    queries, wanted, held_out = validation_queries(groups, config)
    if not queries:
        raise ValueError("no validation queries: set routing.validation_share above 0 (and retrain)")
    unknown = [c for c in config.routing.candidates if c not in FIRST_STAGES]
    if unknown:
        raise ValueError(f"routing.candidates: {', '.join(unknown)} cannot be served; use {', '.join(FIRST_STAGES)}")
    try:
        reranker = Reranker.load(reranker_spec(config, trained_model(config, "reranker")))
    except ValueError:  # none trained: the first stages compete alone
        reranker = None
    log(f"validation: the queries of {held_out} skills held out of training")
    grid = {name: config.routing.fusion_weights for name in config.routing.candidates}
    rows = score_candidates(skills, queries, [{w} for w in wanted], config, reranker, grid, lambda m: log("  " + m))
    fitted = {}
    for name in config.routing.candidates:
        fused = [r for r in rows if r.first_stage == name and r.weight is not None]
        fitted[name] = [best_row(fused).weight] if fused else []
    chooser, dev = "validation", None
    if config.routing.selection_benchmark:
        bench = load_benchmark(config.routing.selection_benchmark)
        log(f"{bench.name}: {len(bench.tasks)} requests to choose on, each first stage alone and fused at its "
            "fitted weight")
        dev = score_candidates(bench.skills, [t.query for t in bench.tasks], [set(t.gt_skill_ids) for t in bench.tasks],
                               config, reranker, fitted, lambda m: log("  " + m))
        chooser = bench.name
    chosen = served_row(dev or rows, config.routing.min_rerank_gain)
    table = dev or rows
    return {
        "system": chosen.system, "first_stage": FIRST_STAGES[chosen.first_stage], "rerank": chosen.weight is not None,
        "rerank_weight": chosen.weight if chosen.weight is not None else 1.0, "chosen_on": chooser,
        "validation": {"queries": len(queries), "held_out_skills": held_out, "corpus": len(skills)},
        "reranker": None if reranker is None else reranker.spec.model,
        "why": why(chosen, table, {r.first_stage: r for r in rows if r.weight == 1.0}, chooser, fitted,
                   config.routing.min_rerank_gain),
        "rows": [asdict(r) | {"system": r.system} for r in rows],
        "chosen_rows": [asdict(r) | {"system": r.system} for r in dev] if dev else None,
        "seconds": round(time.perf_counter() - started, 1)}


def why(chosen: Row, table: Sequence[Row], plain: dict[str, Row], chooser: str, fitted: dict[str, list[float]],
        min_gain: float) -> str:
    """One sentence a person reads: what is served, on what it won, and what the reranker did."""
    first = next(r for r in table if r.first_stage == chosen.first_stage and r.weight is None)
    text = f"{chosen.system}: Hit@1 {100 * chosen.hit1:.1f}, MRR@10 {100 * chosen.mrr10:.1f} on {chooser}"
    if chosen.weight is not None:
        return text + (f", against {100 * first.hit1:.1f} / {100 * first.mrr10:.1f} for {chosen.first_stage} "
                       f"alone: the reranker, fused at the weight fitted on the validation queries, helps")
    reranked = plain.get(chosen.first_stage)
    if reranked is None:
        return text + " (no trained reranker)"
    weight = fitted[chosen.first_stage][0]
    fused = next((r for r in table if r.first_stage == chosen.first_stage and r.weight == weight), None)
    scored = "" if fused is None else f": {100 * fused.hit1:.1f} / {100 * fused.mrr10:.1f} there"
    return text + (f"; the reranker (validation Hit@1 alone {100 * reranked.hit1:.1f}; fused at {weight:g}{scored}) "
                   f"does not beat it by {100 * min_gain:g} points of Hit@1, so it is not served")


def selection_table(selection: dict) -> list[str]:
    """Lines for the console: each first stage alone, the reranker alone and at its best weight."""
    from skillrouter.common.tables import format_table

    rows = [Row(r["first_stage"], r["weight"], r["hit1"], r["mrr10"]) for r in selection["rows"]]
    shown = []
    for name in dict.fromkeys(r.first_stage for r in rows):
        mine = [r for r in rows if r.first_stage == name]
        fused = [r for r in mine if r.weight not in (None, 1.0)]
        shown += [r for r in mine if r.weight in (None, 1.0)] + ([best_row(fused)] if fused else [])
    chosen = {r["system"]: r for r in selection.get("chosen_rows") or []}
    headers = ["system", "validation Hit@1", "MRR@10"]
    if chosen:
        headers += [f"{selection['chosen_on']} Hit@1", "MRR@10"]
    table = format_table(headers, [[r.system, 100 * r.hit1, 100 * r.mrr10] + (
        [100 * chosen[r.system]["hit1"], 100 * chosen[r.system]["mrr10"]] if r.system in chosen
        else ["", ""] if chosen else []) for r in shown], floatfmt=".1f")
    return table.splitlines()


def write_selection(selection: dict, run_dir: str | Path) -> Path:
    path = Path(run_dir) / SELECTION_DIR / SELECTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(selection, indent=2) + "\n")
    return path


def read_selection(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / SELECTION_DIR / SELECTION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def served_config(config: PipelineConfig, selection: dict | None) -> PipelineConfig:
    """`config` serving what the selection chose (unchanged without one)."""
    if selection is None:
        return config
    out = config.model_copy(deep=True)
    out.serving.first_stage, out.serving.rerank = selection["first_stage"], selection["rerank"]
    out.serving.rerank_weight = selection["rerank_weight"]
    return out
