"""The SkillRouter paper's ablations on a finished run: what each design choice is worth on the run's benchmark.

Questions (`QUESTIONS`), each a few evaluated rows, the first the reference:
- BM25 over the full text or over name + description;
- an encoder reading the full text or name + description at inference (zero-shot and fine-tuned);
- an encoder fine-tuned on name + description instead of the full body (`encoder.skill_text`);
- the reranker trained listwise (the paper) or pointwise (`reranker.loss=pointwise`);
- training negatives mined with or without the false-negative filter (`mining.filter_false_negatives`).

The run's corpus, queries, mined groups and exported benchmark are reused. A *variant* is the profile with a few
overrides; it trains only the models it changes, into `RUN_DIR/ablations/<variant>/models/<kind>`, and reads the
others from the baseline: the run's own models when they are up to date with the profile, else models trained
into `RUN_DIR/ablations/baseline/`. Training skips up-to-date exports (its fingerprint), mining and evaluation skip
results whose inputs are unchanged, so running the ablations again costs only what changed. The outcome is
`RUN_DIR/ablations/ablations.json`, read back by `read_ablations` for the report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skillrouter.config import PipelineConfig, load_config
from skillrouter.corpus.skill import Skill, corpus_version
from skillrouter.evaluation.ablation_results import (
    ABLATIONS_DIR,
    BASELINE,
    SUMMARY_FILE,
    Ablation,
    export_fingerprint,
    read_ablations,
)
from skillrouter.evaluation.benchmark import Benchmark
from skillrouter.evaluation.runner import EvalResult, eval_dir, evaluate_system, provenance, read_result, write_result
from skillrouter.models.loading import export_info
from skillrouter.retrieval.systems import trained_kinds

INPUTS_FILE = "inputs.json"


@dataclass(frozen=True)
class Variant:
    """The profile with `overrides` (`key=value`, as on the command line); it trains `trains` itself (mining its
    own groups first when an override is a `mining.` key) and takes the other models from the baseline."""

    name: str
    change: str
    overrides: tuple[str, ...] = ()
    trains: tuple[str, ...] = ()

    @property
    def mines(self) -> bool:
        return any(o.startswith("mining.") for o in self.overrides)


@dataclass(frozen=True)
class Row:
    """A variant's system; its differences are taken against row `against` of its question (None: none)."""

    label: str
    variant: str
    system: str
    against: int | None = 0


@dataclass(frozen=True)
class Question:
    name: str
    question: str
    rows: tuple[Row, ...]


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant(BASELINE, "the profile as it is", (), ("encoder", "reranker")),
    Variant("encoder-nd", "the encoder fine-tuned on name | description only",
            ("encoder.skill_text=name_description",), ("encoder",)),
    Variant("reranker-pointwise", "the reranker trained with pointwise BCE instead of listwise CE",
            ("reranker.loss=pointwise",), ("reranker",)),
    Variant("no-fn-filter", "the encoder fine-tuned on negatives mined without the false-negative filter",
            ("mining.filter_false_negatives=false",), ("encoder",)),
]}

QUESTIONS: tuple[Question, ...] = (
    Question("text-bm25", "BM25 over the full text or over name + description", (
        Row("full text", BASELINE, "bm25", None),
        Row("name + description", BASELINE, "bm25-nd"))),
    Question("text-inference", "An encoder reading the full text or name + description (at inference)", (
        Row("zero-shot, full text", BASELINE, "minilm", None),
        Row("zero-shot, name + description", BASELINE, "minilm-nd"),
        Row("fine-tuned, full text", BASELINE, "finetuned"),
        Row("fine-tuned, name + description", BASELINE, "finetuned-nd", 2))),
    Question("text-training", "The encoder fine-tuned on the full text or on name + description", (
        Row("trained and read on the full text", BASELINE, "finetuned", None),
        Row("trained and read on name + description", "encoder-nd", "finetuned-nd"),
        Row("trained on name + description, read on the full text", "encoder-nd", "finetuned"))),
    Question("reranker-loss", "The reranker trained listwise or pointwise (fine-tuned encoder, top 20 reranked)", (
        Row("listwise cross-entropy", BASELINE, "finetuned+reranker", None),
        Row("pointwise BCE", "reranker-pointwise", "finetuned+reranker"))),
    Question("fn-filter", "Training negatives with or without false-negative filtering (fine-tuned encoder)", (
        Row("filtered (name, body Jaccard, cosine)", BASELINE, "finetuned", None),
        Row("unfiltered", "no-fn-filter", "finetuned"))),
)


def plan(only: Sequence[str] | None = None,
         questions: Sequence[Question] = QUESTIONS) -> tuple[list[Question], list[Variant], dict[str, set[str]]]:
    """The questions to answer (all, or those named in `only`), the variants they need (the baseline first), and
    the models each variant takes from the baseline instead of training them."""
    known = {q.name for q in questions}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise ValueError(f"unknown ablation {', '.join(unknown)}; available: {', '.join(q.name for q in questions)}")
    chosen = [q for q in questions if not only or q.name in only]
    names = {r.variant for q in chosen for r in q.rows} | {BASELINE}
    variants = [v for name, v in VARIANTS.items() if name in names]
    borrowed = {v.name: {k for r in rows_of(chosen, v.name) for k in trained_kinds(r.system)} - set(v.trains)
                for v in variants if v.name != BASELINE}
    return chosen, variants, borrowed


def rows_of(questions: Sequence[Question], variant: str) -> list[Row]:
    return [r for q in questions for r in q.rows if r.variant == variant]


def variant_config(config: PipelineConfig, variant: Variant, run_dir: Path,
                   borrowed: dict[str, Path] | None = None) -> PipelineConfig:
    """The profile with the variant's overrides and its outputs under `RUN_DIR/ablations/<variant>`. A model in
    `borrowed` is read from there; one the variant trains (and does not borrow) from its own folder; any other
    from the profile's export."""
    data = config.model_dump()
    data["run_dir"] = str(run_dir / ABLATIONS_DIR / variant.name)
    for kind in ("encoder", "reranker"):
        own = kind in variant.trains and kind not in (borrowed or {})
        data[kind]["output_dir"] = None if own else str((borrowed or {}).get(kind, config.model_dir(kind)))
    return load_config(None, list(variant.overrides), base=data)


def _inputs_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mine_variant(skills: Sequence[Skill], queries: pa.Table, config: PipelineConfig, out: Path, run_dir: Path,
                 log=print) -> pa.Table:
    """The variant's groups, mined like the run's but with its mining settings; skipped when already mined from
    the same inputs."""
    from skillrouter.mining.job import GROUPS_FILE, print_mining_summary, run_mining
    from skillrouter.retrieval.categories import load_categories

    key = _inputs_key(mining=config.mining.model_dump(), bm25=config.bm25.model_dump(), seed=config.seed,
                      corpus=corpus_version(skills), queries=queries.column("query_id").to_pylist())
    stamp = out / INPUTS_FILE
    if (out / GROUPS_FILE).exists() and stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        log(f"mining: up to date ({out / GROUPS_FILE})")
    else:
        categories = load_categories(run_dir / "queries" / "categories.json", skills)
        summary = run_mining(skills, queries, config, out, categories, log)
        print_mining_summary(summary, out, log)
        stamp.write_text(json.dumps({"key": key}) + "\n")
    return pq.read_table(out / GROUPS_FILE)


def evaluate_cached(system: str, bench: Benchmark, config: PipelineConfig, out: Path,
                    reuse: Sequence[Path] = (), log=print) -> tuple[EvalResult, Path]:
    """`system` on `bench` saved into `out`, or a saved result computed from the same inputs (its `provenance`)
    found in `out` or one of `reuse` (the run's own evaluation; copied into `out`, so that the ablations stay as
    they were computed when the run is evaluated again); returns the result and `out`."""
    wanted = provenance(system, bench, config, config.eval.top_k)
    for place in (out, *reuse):
        if (place / "metrics.json").exists():
            saved = read_result(place)
            if saved.system == system and saved.provenance == wanted:
                log(f"{system}: up to date ({place})")
                if place != out:
                    write_result(saved, out)
                return saved, out
    result = evaluate_system(system, bench, config)
    write_result(result, out)
    log(f"{system}: Hit@1 {100 * result.metrics['all']['Hit@1']:.1f}, nDCG@10 "
        f"{100 * result.metrics['all']['nDCG@10']:.1f} ({result.seconds:.1f} s) -> {out}")
    return result, out


def baseline_models(kinds: Sequence[str], skills: Sequence[Skill], groups: pa.Table, config: PipelineConfig,
                    log=print) -> dict[str, Path]:
    """The baseline's model of each kind: the run's own when it is up to date with the profile (same settings,
    same groups), else one trained for the ablations under `RUN_DIR/ablations/baseline` (once: a rerun skips)."""
    from skillrouter.training.job import is_up_to_date, run_training

    baseline = variant_config(config, VARIANTS[BASELINE], Path(config.run_dir))
    models: dict[str, Path] = {}
    for kind in kinds:
        if is_up_to_date(kind, skills, groups, config):
            models[kind] = config.model_dir(kind)
            log(f"baseline {kind}: the run's own ({models[kind]})")
            continue
        log(f"\n== baseline {kind}: the run's export is missing or was trained from other settings or data; "
            f"one trained for the ablations (under {baseline.run_dir})")
        summary = run_training(kind, skills, groups, baseline, log=lambda line: log("   " + line))
        models[kind] = Path(summary["output_dir"])
    return models


def run_ablations(config: PipelineConfig, only: Sequence[str] | None = None, log=print) -> list[Ablation]:
    """Train, mine and evaluate what the chosen questions need on the run of `config` (its `run_dir` must hold a
    finished main run: corpus, queries, mined groups, benchmark); write `ablations.json`; return the ablations."""
    from skillrouter.corpus.ingest import read_skills
    from skillrouter.evaluation.benchmark import load_eval_core
    from skillrouter.mining.job import GROUPS_FILE
    from skillrouter.querygen.job import QUERIES_FILE
    from skillrouter.training.job import run_training

    started = time.perf_counter()
    run_dir = Path(config.run_dir)
    needed = {"corpus": run_dir / "corpus" / "skills.parquet", "queries": run_dir / "queries" / QUERIES_FILE,
              "groups": run_dir / "mined" / GROUPS_FILE, "benchmark": run_dir / "benchmark" / "relevance.json"}
    absent = [f"{name} ({path})" for name, path in needed.items() if not path.exists()]
    if absent:
        raise ValueError(f"{run_dir} lacks {', '.join(absent)}: run the main job with this profile first "
                         "(python jobs/run_pipeline.py --config ...)")
    questions, variants, borrowed = plan(only)
    skills = read_skills(needed["corpus"].parent)
    groups = pq.read_table(needed["groups"])
    bench = load_eval_core(needed["benchmark"].parent)
    log(f"ablations on {run_dir}: {', '.join(q.name for q in questions)}; variants "
        f"{', '.join(v.name for v in variants)}")

    kinds = ({k for r in rows_of(questions, BASELINE) for k in trained_kinds(r.system)}
             | {k for needed_kinds in borrowed.values() for k in needed_kinds})
    models = baseline_models(sorted(kinds), skills, groups, config, log)
    configs = {BASELINE: variant_config(config, VARIANTS[BASELINE], run_dir, models)}
    main_stats = run_dir / "mined" / "mining_stats.json"
    mined: dict[str, dict] = {BASELINE: json.loads(main_stats.read_text())} if main_stats.exists() else {}
    trained_on: dict[str, pa.Table] = {BASELINE: groups}
    for v in variants:
        if v.name == BASELINE:
            continue
        vconfig = configs[v.name] = variant_config(config, v, run_dir,
                                                   {k: p for k, p in models.items() if k not in v.trains})
        vdir = Path(vconfig.run_dir)
        log(f"\n== {v.name}: {v.change} ({' '.join(v.overrides)})")
        vgroups = groups
        if v.mines:
            vgroups = mine_variant(skills, pq.read_table(needed["queries"]), vconfig, vdir / "mined", run_dir,
                                   lambda line: log("   " + line))
            mined[v.name] = json.loads((vdir / "mined" / "mining_stats.json").read_text())
        trained_on[v.name] = vgroups
        for kind in v.trains:
            run_training(kind, skills, vgroups, vconfig, log=lambda line: log("   " + line))

    log("\n== evaluate")
    results: dict[tuple[str, str], tuple[EvalResult, Path]] = {}
    for q in questions:
        for row in q.rows:
            if (row.variant, row.system) in results:
                continue
            vconfig = configs[row.variant]
            reuse = [eval_dir(run_dir, bench.name) / row.system] if row.variant == BASELINE else []
            results[row.variant, row.system] = evaluate_cached(
                row.system, bench, vconfig, Path(vconfig.run_dir) / "eval" / row.system, reuse,
                lambda line, v=row.variant: log(f"   [{v}] {line}"))
    summary = {"run_dir": str(run_dir), "benchmark": bench.name, "seconds": round(time.perf_counter() - started, 1),
               "models": {k: {"path": str(p), "fingerprint": export_fingerprint(p)} for k, p in models.items()},
               "variants": {v.name: {"change": v.change, "overrides": list(v.overrides), "trains": list(v.trains)}
                            for v in variants},
               "questions": [{"name": q.name, "question": q.question, "notes": _notes(q, mined, configs, trained_on),
                              "rows": [{"label": r.label, "variant": r.variant, "system": r.system,
                                        "against": r.against,
                                        "result": _relative(results[r.variant, r.system][1], run_dir)}
                                       for r in q.rows]} for q in questions]}
    out = run_dir / ABLATIONS_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log(f"\nablations done in {summary['seconds']:.0f} s; wrote {out / SUMMARY_FILE}")
    return read_ablations(run_dir)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def changed_negatives(base: pa.Table, other: pa.Table, config: PipelineConfig, kind: str) -> tuple[int, int]:
    """Of the negatives a `kind` training run reads from `other` (its sample of groups, the first negatives of
    each), how many it would not read from `base` for the same query; and how many it reads."""
    from skillrouter.training.job import training_groups

    t = config.train(kind)

    def read(groups: pa.Table) -> dict[str, list[str]]:
        return {r["query_id"]: [n["skill_id"] for n in r["negatives"][:t.negatives]]
                for r in training_groups(groups, config, kind).to_pylist()}

    before, after = read(base), read(other)
    changed = sum(len(set(ids) - set(before.get(q, []))) for q, ids in after.items())
    return changed, sum(len(ids) for ids in after.values())


def _notes(q: Question, mined: dict[str, dict], configs: dict[str, PipelineConfig],
           trained_on: dict[str, pa.Table]) -> list[str]:
    """What a reader needs to weigh a question's rows: what the filter did to the negatives, how training went."""
    notes = []
    variants = list(dict.fromkeys(r.variant for r in q.rows))
    mining_question = any(VARIANTS[v].mines for v in variants)
    for variant in variants:
        stats = mined.get(variant) if mining_question else None
        if stats and stats.get("filter_false_negatives", True):
            removed = stats["removed_by_layer"]
            notes.append(f"{variant}: the filter removed {sum(removed.values()):,} of {stats['candidates_examined']:,} "
                         f"candidates ({', '.join(f'{k} {v:,}' for k, v in removed.items())}); the removed were "
                         "replaced from the same source.")
        elif stats:
            kept = stats.get("flagged_kept_by_layer", {})
            notes.append(f"{variant}: {sum(kept.values()):,} of its {stats['negatives']:,} negatives are ones the "
                         f"filter would have removed ({', '.join(f'{k} {v:,}' for k, v in kept.items())}).")
            for kind in VARIANTS[variant].trains:
                changed, total = changed_negatives(trained_on[BASELINE], trained_on[variant], configs[variant], kind)
                notes.append(f"{variant}: {changed:,} of the {total:,} negatives its {kind} trained on differ from "
                             "the baseline's (the rest are the same skills).")
        for kind in VARIANTS[variant].trains if variant != BASELINE else ():
            final = export_info(str(configs[variant].model_dir(kind)))
            if final:
                notes.append(f"{variant}: {kind} trained {final['steps']} steps on {final['groups']} groups, last "
                             f"loss {final['final']['loss']:.3f}.")
    return notes
