"""The main job: one profile drives every stage, each writing plain files under the run directory.

    ingest -> queries -> mining -> encoder -> reranker -> index -> select -> serve -> eval -> report

`select` scores the candidate first stages, alone and with the reranker fused at each weight, on the queries of
skills held out of training, and the main job serves (and evaluates) what wins (`evaluation.selection`).

Every stage can be skipped (`--skip mining,serve`: its outputs from an earlier run are used as they are) and
resumes from its outputs: a stage whose inputs are unchanged since its last run is not run again (its stamp in
RUN_DIR/stages/ records them; `--rerun STAGE` ignores it). Query generation resumes skill by skill on its own (LLM
calls are paid work), and training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from skillrouter.common.fingerprints import content_version, digest
from skillrouter.common.tables import format_table, shorten
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import SKILLS_FILE, ingest, read_skills
from skillrouter.corpus.skill import corpus_version
from skillrouter.evaluation.benchmark import add_distractors, export_eval_core, load_benchmark
from skillrouter.evaluation.report import write_run_report
from skillrouter.evaluation.runner import (
    eval_dir,
    evaluate_system,
    metrics_table,
    provenance,
    read_result,
    write_result,
)
from skillrouter.evaluation.selection import (
    SELECTION_DIR,
    SELECTION_FILE,
    read_selection,
    select_system,
    selection_table,
    write_selection,
)
from skillrouter.index.build import index_uri
from skillrouter.mining.job import GROUPS_FILE, print_mining_summary, run_mining
from skillrouter.models.exports import set_card_evaluation
from skillrouter.models.loading import model_version
from skillrouter.querygen.job import QUERIES_FILE, print_query_summary, run_query_generation
from skillrouter.retrieval.categories import load_categories
from skillrouter.retrieval.fusion import Fusion
from skillrouter.training.job import KINDS, print_training_summary, run_training

STAGES = ("ingest", "queries", "mining", *KINDS, "index", "select", "serve", "eval", "report")


def answer_table(answer: dict, width: int = 56) -> str:
    """One HTTP answer of the router: its skills with both stages' scores."""
    return format_table(["rank", "skill", "first", "rerank", "description"],
                        [[r["rank"], r["skill_id"], r["retrieval_score"],
                          "-" if r["rerank_score"] is None else f"{r['rerank_score']:.2f}",
                          shorten(r["description"], width)] for r in answer["results"]], floatfmt=".3f")


def check_stages(names: Iterable[str]) -> set[str]:
    names = {n for n in names if n}
    unknown = names - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; the stages are {', '.join(STAGES)}")
    return names


class Stages:
    """Runs the pipeline's stages. A skipped stage must find its outputs (checked before any work); a stage with a
    key (a fingerprint of its inputs) is not run again while its stamp holds the same key and its outputs exist."""

    def __init__(self, run_dir: Path, outputs: dict[str, Sequence[Path]], skip: Iterable[str] = (),
                 rerun: Iterable[str] = (), log: Callable[[str], None] = print):
        self.dir, self.outputs, self.log = run_dir / "stages", outputs, log
        self.skip, self.rerun = check_stages(skip), check_stages(rerun)
        self.seconds: dict[str, float] = {}  # wall time of each stage that ran (its parts summed)
        for stage in sorted(self.skip, key=STAGES.index):
            missing = [str(p) for p in outputs.get(stage, ()) if not Path(p).exists()]
            if missing:
                raise ValueError(f"--skip {stage}: its outputs are missing ({', '.join(missing)}); run it first")

    def stamp(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '__')}.json"

    def run(self, stage: str, title: str, fn: Callable[[], object], key: str | None = None,
            name: str | None = None, outputs: Sequence[Path] | None = None) -> bool:
        """Run `fn` unless skipped or up to date; True when it ran. `name` and `outputs` tell apart the parts of
        one stage (a stamp each); `key` None means the stage always runs (it resumes by itself, or it is the
        demo)."""
        name, outputs = name or stage, self.outputs.get(stage, ()) if outputs is None else outputs
        if title:
            self.log(f"\n== {title}")
        if stage in self.skip:
            if title:
                self.log("   skipped (--skip)" + (": using " + ", ".join(map(str, outputs)) if outputs else ""))
            return False
        stamp = self.stamp(name)
        done = json.loads(stamp.read_text()) if key is not None and stamp.exists() else {}
        if key is not None and done.get("key") == key and stage not in self.rerun \
                and all(Path(p).exists() for p in outputs):
            self.log(f"   {name}: up to date, inputs unchanged since {done['finished']} ({done['seconds']} s "
                     f"then); --rerun {stage} runs it again")
            return False
        started = time.perf_counter()
        if not title:  # a part of a stage (one system of eval): say what runs, then how long it took
            self.log(f"   {name}: running")
        fn()
        seconds = time.perf_counter() - started
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        if not title:
            self.log(f"   {name}: done in {seconds:.1f} s")
        if key is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"key": key, "seconds": round(time.perf_counter() - started, 1),
                                         "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        return True


def run_pipeline(config: PipelineConfig, log: Callable[[str], None] = print, skip: Iterable[str] = (),
                 rerun: Iterable[str] = ()) -> dict[str, Path]:
    """Run every stage of `config`; returns what was written, by name."""
    from skillrouter.serving.admin import build_encoder, build_serving_index
    from skillrouter.serving.app import serve_and_route

    started = time.perf_counter()
    run_dir = Path(config.run_dir)
    out: dict[str, Path] = {
        "corpus": run_dir / "corpus" / SKILLS_FILE, "queries": run_dir / "queries" / QUERIES_FILE,
        "groups": run_dir / "mined" / GROUPS_FILE, **{kind: config.model_dir(kind) for kind in KINDS},
        "index": Path(index_uri(config)), "benchmark": run_dir / "benchmark"}
    stages = Stages(run_dir, {"ingest": [out["corpus"]], "queries": [out["queries"]], "mining": [out["groups"]],
                              **{kind: [out[kind]] for kind in KINDS}, "index": [out["index"]]}, skip, rerun, log)

    def indent(line: str) -> None:
        log("   " + line)

    def do_ingest():
        for line in ingest(config.corpus.sources, run_dir / "corpus", config.corpus, progress=False).lines():
            indent(line)
    stages.run("ingest", f"ingest {', '.join(config.corpus.sources)} -> {run_dir / 'corpus'}", do_ingest)
    skills = read_skills(out["corpus"])
    corpus = corpus_version(skills)

    queries: dict = {}

    def do_queries():
        queries.update(run_query_generation(skills, config, run_dir / "queries", log=indent))
        if not queries.get("dry_run"):
            print_query_summary(queries, run_dir / "queries", log=indent)
    stages.run("queries", f"generate queries -> {run_dir / 'queries'}", do_queries)
    if queries.get("dry_run"):  # the cost estimate only (querygen.dry_run)
        return out

    def do_mining():
        categories = load_categories(run_dir / "queries" / "categories.json", skills)
        mined = run_mining(skills, pq.read_table(out["queries"]), config, run_dir / "mined", categories, indent)
        print_mining_summary(mined, run_dir / "mined", indent)
    stages.run("mining", f"mine hard negatives -> {run_dir / 'mined'}", do_mining,
               key=digest(corpus, content_version(out["queries"]), config.mining, config.bm25))

    trained = []
    for kind in KINDS:  # training skips a finished run by itself (its run name is a fingerprint of its inputs)
        stages.run(kind, f"train the {kind} (Ray Train + DeepSpeed) -> {out[kind]}",
                   lambda kind=kind: trained.append(
                       run_training(kind, skills, pq.read_table(out["groups"]), config, log=indent,
                                    force=kind in stages.rerun)))
    if trained:
        print_training_summary(trained, indent)

    index_encoder = build_encoder(config)  # the fine-tuned encoder once it is exported
    stages.run("index", f"index {len(skills):,} skills with {index_encoder} -> {out['index']}",
               lambda: build_serving_index(skills, config, indent),
               key=digest(corpus, index_encoder, model_version(index_encoder), config.index))

    def do_select():
        selection = select_system(skills, pq.read_table(out["groups"]), config, indent)
        for line in selection_table(selection):
            indent(line)
        indent(f"serving {selection['why']} ({selection['seconds']:.0f} s)")
        indent(f"wrote {write_selection(selection, run_dir)}")
    if config.routing.validation_share > 0:
        stages.run("select", "choose the served system on validation queries (skills held out of training)",
                   do_select, key=digest(corpus, content_version(out["groups"]), config.routing, config.bm25,
                                         asdict(Fusion.of(config.serving)), config.seed, config.eval.tie_seed,
                                         *(model_version(str(out[k])) for k in KINDS)),
                   outputs=[run_dir / SELECTION_DIR / SELECTION_FILE])
    selection = read_selection(run_dir) if config.routing.validation_share > 0 else None
    if selection is not None and selection["system"] not in config.eval.systems:
        config = config.model_copy(deep=True)
        config.eval.systems.append(selection["system"])

    if config.examples:
        def do_serve():
            queries = [e.query for e in config.examples]
            wrong = []
            for example, answer in zip(config.examples, serve_and_route(config, queries, 3, log=indent)):
                t = answer["timings_ms"]
                first = answer["results"][0]["skill_id"] if answer["results"] else None
                verdict = ""
                if example.expect and first in example.expect:
                    verdict = "   right"
                elif example.expect:
                    verdict = f"   WRONG: expected {' or '.join(example.expect)}"
                    wrong.append(example.query)
                log(f"\n> {example.query}\n   {answer['first_stage']}{' + rerank' if answer['reranked'] else ''}: "
                    f"{t['total']:.0f} ms in the server, {answer['client_ms']:.0f} ms at the client{verdict}\n"
                    + answer_table(answer))
            if wrong:
                log(f"\n   WARNING: the served system answers {len(wrong)} of {len(queries)} examples wrong "
                    "(their expected skills are in the profile's examples)")
        stages.run("serve", f"serve on 127.0.0.1 and route {len(config.examples)} example requests over HTTP",
                   do_serve)

    results = evaluate(config, stages, out, log)

    def do_report():
        out["report"] = write_run_report(run_dir, config.eval.systems, retrieve_k=config.routing.retrieve_k,
                                         benchmarks=[r.benchmark for r in results])
        plots = sorted(str(p.relative_to(out["report"].parent)) for p in out["report"].parent.rglob("*.png"))
        log(f"   {out['report']} with " + ", ".join(plots)
            + "; the paper's ablations: `skillrouter ablations --config ...` adds them")
        cards = [kind for kind in KINDS if set_card_evaluation(run_dir / "models" / kind, card_evaluation(results))]
        if cards:
            log(f"   the {' and '.join(cards)} model card{'s' if len(cards) > 1 else ''} (models/*/README.md) "
                "now hold these results")
    if results:
        stages.run("report", "report: metrics per system, Hit@k curves, the paper's comparisons", do_report)

    ran = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in stages.seconds.items())
    log(f"\n== done in {time.perf_counter() - started:.1f} s ({ran or 'every stage up to date'}); outputs:")
    for name, path in out.items():
        log(f"   {name:<16} {path}")
    return out


def card_evaluation(results: Sequence) -> str:
    """The run's results as the model cards show them: one table per benchmark (every evaluated system)."""
    names = list(dict.fromkeys(r.benchmark for r in results))
    return "\n\n".join(f"Benchmark `{name}` (this run's evaluation; `RUN_DIR/report/report.md` has the rest):\n\n"
                         + metrics_table([r for r in results if r.benchmark == name], markdown=True)
                         for name in names)


def evaluate(config: PipelineConfig, stages: Stages, out: dict[str, Path], log: Callable[[str], None]) -> list:
    """The eval stage: each configured system on each benchmark (the first is exported to RUN_DIR/benchmark for
    the ablations); a system's result is kept while the benchmark, its models and the settings it reads are
    unchanged (the result's own `provenance`). Returns the results, benchmark by benchmark."""
    if "eval" in stages.skip:
        log("\n== evaluate: skipped (--skip)")
        return []
    results = []
    for i, name in enumerate(config.eval.benchmarks):
        bench = add_distractors(load_benchmark(name), config.eval.distractors)
        if i == 0:
            export_eval_core(bench, out["benchmark"])
        log(f"\n== evaluate {', '.join(config.eval.systems)} on {bench.name} ({len(bench.tasks)} tasks, "
            f"{len(bench.skills)} skills)")
        if bench.missing_ids:
            log(f"   note: {len(bench.missing_ids)} tasks name skills absent from the pool (counted as misses)")
        mine = evaluate_benchmark(config, bench, stages, out)
        log(metrics_table(mine))
        results += mine
    return results


def evaluate_benchmark(config: PipelineConfig, bench, stages: Stages, out: dict[str, Path]) -> list:
    results = []
    for system in config.eval.systems:
        path = eval_dir(config.run_dir, bench.name) / system
        key = digest(system, provenance(system, bench, config, config.eval.top_k))

        def run(system=system, path=path):
            write_result(evaluate_system(system, bench, config), path)
        stages.run("eval", "", run, key=key, name=f"eval/{bench.name}/{system}", outputs=[path / "metrics.json"])
        out[f"eval/{bench.name}/{system}"] = path
        results.append(read_result(path))
    return results

