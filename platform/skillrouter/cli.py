"""skillrouter: route a request to the right agent skill; ingest, train, index, serve and evaluate the models.

The command is installed in the project's virtualenv: `.venv/bin/skillrouter` (or `source .venv/bin/activate`
first); `make run ARGS="..."` passes ARGS to `skillrouter pipeline --config configs/minilm.yaml`.

Every command takes `--config FILE` (a profile in configs/) and `key=value` overrides anywhere on the line, e.g.
`skillrouter pipeline --config configs/minilm.yaml eval.top_k=20 corpus.strict=true`. `skillrouter COMMAND --help`
describes one command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from skillrouter.config import ConfigError, PipelineConfig, is_override, load_config
from skillrouter.corpus.ingest import IngestError, ingest, read_skills
from skillrouter.corpus.readers import UnsupportedSource
from skillrouter.evaluation.benchmark import BenchmarkError, add_distractors, export_eval_core, load_benchmark
from skillrouter.index.store import SkillIndexError
from skillrouter.retrieval.systems import SYSTEMS


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config, args.overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.strict:
        config.corpus.strict = True
    if args.max_skill_chars:
        config.corpus.max_skill_chars = args.max_skill_chars
    summary = ingest(args.sources, args.out, config.corpus, progress=not args.quiet)
    quarantine = Path(args.out) / "quarantine.jsonl"
    print("\n".join(summary.lines()))
    print(f"wrote {Path(args.out) / 'skills.parquet'}" + (f" and {quarantine}" if summary.quarantined else ""))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from skillrouter.retrieval.router import Router, routes_table

    config = _config(args)
    skills = _corpus(config, args.corpus)
    routes = Router(skills, args.system or config.routing.system, config).route(args.query, args.top_k)
    if args.json:
        print(json.dumps([r.__dict__ for r in routes], indent=2, ensure_ascii=False))
    else:
        print(routes_table(routes))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from skillrouter.evaluation.runner import evaluate_system, metrics_table, write_result

    config = _config(args)
    bench = add_distractors(load_benchmark(args.benchmark), args.distractors or config.eval.distractors)
    results = []
    for system in args.system:
        result = evaluate_system(system, bench, config, top_k=args.top_k)
        out = write_result(result, Path(args.out) / system if len(args.system) > 1 else args.out)
        print(f"{system}: wrote {out / 'predictions.json'} and {out / 'metrics.json'} ({result.seconds:.1f} s)")
        results.append(result)
    print(f"\n{bench.name}: {len(bench.tasks)} tasks, {len(bench.skills):,} skills in the pool")
    if bench.skipped:
        print("skipped tasks: " + ", ".join(f"{k} {v}" for k, v in bench.skipped.items()))
    if bench.missing_ids:
        n_ids = len({s for ids in bench.missing_ids.values() for s in ids})
        print(f"{n_ids} relevance ids in {len(bench.missing_ids)} tasks are absent from the pool "
              f"(counted as not retrieved; listed in metrics.json)")
    print(metrics_table(results))
    if args.report:
        from skillrouter.evaluation.report import write_report

        path = write_report(results, args.out, title=f"skillrouter evaluation: {bench.name}",
                            retrieve_k=config.routing.retrieve_k)
        print(f"wrote {path} and its plots")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from skillrouter.evaluation.report import write_run_report

    config = _config(args)
    run_dir = args.run or config.run_dir
    path = write_run_report(run_dir, config.eval.systems, args.out, args.title, config.routing.retrieve_k)
    print(f"wrote {path} and its plots ({', '.join(p.name for p in sorted(path.parent.glob('*.png')))})")
    return 0


def cmd_ablations(args: argparse.Namespace) -> int:
    from skillrouter.evaluation.report import ablation_table, write_run_report
    from skillrouter.pipeline.ablations import run_ablations

    config = _config(args)
    if args.run:
        config.run_dir = args.run
    for ablation in run_ablations(config, args.only):
        print(f"\n{ablation.question}\n{ablation_table(ablation)}")
    path = write_run_report(config.run_dir, config.eval.systems, retrieve_k=config.routing.retrieve_k)
    print(f"\nwrote {path} (ablations section and ablations.png)")
    return 0


def cmd_export_devset(args: argparse.Namespace) -> int:
    if args.set == "bundled":
        if args.tier != "easy":
            print("error: --tier hard exists for --set realistic only", file=sys.stderr)
            return 2
        bench = load_benchmark("bundled")
    else:
        from skillrouter.evaluation.benchmark import load_realistic

        bench = load_realistic(args.tier, lookalikes=args.lookalikes, seed=args.seed)
    out = export_eval_core(bench, args.out)
    print(f"wrote {bench.name} ({len(bench.tasks)} tasks, {len(bench.skills)} skills in the pool) in the eval_core "
          f"layout to {out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from skillrouter.corpus.synthetic import SynthConfig, write_synthetic_pool

    cfg = SynthConfig(num_skills=args.num_skills, seed=args.seed, near_dup_rate=args.near_dup_rate,
                      same_name_rate=args.same_name_rate)
    stats = write_synthetic_pool(read_skills("bundled"), cfg, args.out, shard_size=args.shard_size)
    print(json.dumps(stats, indent=2))
    return 0


def _corpus(config: PipelineConfig, corpus: str | None):
    """`--corpus`, else the run directory's ingested corpus, else the profile's sources read directly."""
    ingested = Path(config.run_dir) / "corpus"
    if corpus:
        return read_skills(corpus, config.corpus.max_skill_chars)
    if (ingested / "skills.parquet").exists():
        return read_skills(ingested)
    return [s for src in config.corpus.sources for s in read_skills(src, config.corpus.max_skill_chars)]


def cmd_generate_queries(args: argparse.Namespace) -> int:
    from skillrouter.querygen.job import print_query_summary, run_query_generation

    config = _config(args)
    if args.dry_run:
        config.querygen.dry_run = True
    out = args.out or str(Path(config.run_dir) / "queries")
    summary = run_query_generation(_corpus(config, args.corpus), config, out)
    if not summary.get("dry_run"):
        print_query_summary(summary, out)
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from skillrouter.mining.job import print_mining_summary, run_mining
    from skillrouter.retrieval.categories import load_categories

    config = _config(args)
    run_dir = Path(config.run_dir)
    queries_path = Path(args.queries or run_dir / "queries" / "queries.parquet")
    if not queries_path.exists():
        raise ValueError(f"no queries at {queries_path}: run `skillrouter generate-queries` first or pass --queries")
    skills = _corpus(config, args.corpus)
    categories = load_categories(queries_path.parent / "categories.json", skills)
    out = args.out or str(run_dir / "mined")
    summary = run_mining(skills, pq.read_table(queries_path), config, out, categories=categories)
    print_mining_summary(summary, out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from skillrouter.mining.job import GROUPS_FILE
    from skillrouter.training.job import print_training_summary, run_training

    config = _config(args)
    groups_path = Path(args.groups or Path(config.run_dir) / "mined" / GROUPS_FILE)
    if not groups_path.exists():
        raise ValueError(f"no training groups at {groups_path}: run `skillrouter mine` first or pass --groups")
    summary = run_training(args.kind, _corpus(config, args.corpus), pq.read_table(groups_path), config,
                           force=args.rerun)
    print_training_summary([summary])
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from skillrouter.index.build import build_index, open_index, sync_index

    config = _config(args)
    if args.action == "info":
        with open_index(config) as index:
            print(json.dumps(index.info(), indent=1))
    elif args.action == "build":
        build_index(_corpus(config, args.corpus), config)
    else:
        sync_index(_corpus(config, args.corpus), config)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from skillrouter.serving.app import serve_and_route, start, stop

    config = _config(args)
    if args.host:
        config.serving.host = args.host
    if args.port is not None:
        config.serving.port = args.port
    if args.smoke:
        queries = [e.query for e in config.examples] or ["merge these PDF files into one"]
        for query, answer in zip(queries, serve_and_route(config, queries, top_k=args.top_k, port=args.port or 0)):
            t = answer["timings_ms"]
            print(f"\n> {query}\n  first stage {answer['first_stage']}, reranked {answer['reranked']}, "
                  f"{t['total']:.0f} ms in the server (embed {t['embed']:.0f}, search {t['search']:.0f}, "
                  f"rerank {t['rerank']:.0f}), {answer['client_ms']:.0f} ms at the client")
            for r in answer["results"]:
                rerank = "" if r["rerank_score"] is None else f"  rerank {r['rerank_score']:7.3f}"
                print(f"  {r['rank']:>2}. {r['skill_id']:<50} first {r['retrieval_score']:7.3f}{rerank}")
        print("\nserve: stopped")
        return 0
    url = start(config)
    print(f"skillrouter is serving at {url} (API: {url}/docs, schema: {url}/openapi.json); Ctrl-C stops it",
          flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("serve: stopping")
    finally:
        stop()
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from skillrouter.serving.mcp import run_stdio

    config = _config(args)
    run_stdio(lambda: _corpus(config, args.corpus), args.system or config.routing.system, config)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from skillrouter.common.console import filtered_stderr
    from skillrouter.pipeline.run import run_pipeline

    config = _config(args)
    # Ray's benign lines (its C++ core worker's too) stay off the console; RUN_DIR/logs/stderr.log keeps them
    with filtered_stderr(Path(config.run_dir) / "logs" / "stderr.log"):
        run_pipeline(config, skip=args.skip.split(","), rerun=args.rerun.split(","))
    return 0


def cmd_systems(args: argparse.Namespace) -> int:
    width = max(len(name) for name in SYSTEMS)
    for s in SYSTEMS.values():
        print(f"{s.name:<{width}}  {s.description}")
    print("\nalso: dense:MODEL and dense-nd:MODEL (any bi-encoder, full text or name | description), hybrid:DENSE "
          "(a dense system and bm25, fused as serving.fusion says); any of them +reranker (the profile's) or "
          "+rerank:MODEL")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillrouter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", help="YAML profile (default: built-in defaults)")
        p.set_defaults(fn=fn)
        return p

    p = add("ingest", cmd_ingest, "read skills from trees, JSONL(.gz), Parquet or eval_core pools into Parquet")
    p.add_argument("sources", nargs="+", metavar="SRC", help="paths, or 'bundled' for the sample corpus")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strict", action="store_true", help="fail if any record is quarantined")
    p.add_argument("--max-skill-chars", type=int, help="quarantine records longer than this")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("route", cmd_route, "rank skills for one request")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--system", help=f"one of: {', '.join(SYSTEMS)} (default: routing.system)")
    p.add_argument("--corpus", help="ingested directory, any source, or 'bundled' (default: the run directory's "
                                    "corpus, else corpus.sources)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("eval", cmd_eval, "evaluate systems on an eval_core benchmark")
    p.add_argument("--benchmark", default="bundled", help="eval_core directory, or 'bundled' (the dev set)")
    p.add_argument("--system", action="append", required=True, help="system name; repeat for several")
    p.add_argument("--out", required=True, help="output directory (one subfolder per system if several)")
    p.add_argument("--top-k", type=int, default=None, help="predictions kept per task (default: eval.top_k)")
    p.add_argument("--distractors", action="append", metavar="SRC",
                   help="add unlabelled skills from SRC to the pool (default: eval.distractors)")
    p.add_argument("--report", action="store_true", help="also write OUT/report.md with plots")

    p = add("report", cmd_report, "(re)build a run's report.md and plots from its saved evaluation results")
    p.add_argument("--run", help="run directory (default: the profile's run_dir)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/report)")
    p.add_argument("--title", help="the page's title")

    p = add("ablations", cmd_ablations, "the paper's ablations on a finished run: train the variants they need, "
                                        "evaluate, add them to the report")
    p.add_argument("--run", help="run directory (default: the profile's run_dir)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this ablation; repeat for several (text-bm25, text-inference, text-training, "
                        "reranker-loss, fn-filter)")

    p = add("export-devset", cmd_export_devset, "write a bundled labelled set in the eval_core layout")
    p.add_argument("--out", required=True)
    p.add_argument("--set", choices=("bundled", "realistic"), default="bundled",
                   help="the old dev set (default) or the realistic requests written in users' words")
    p.add_argument("--tier", choices=("easy", "hard"), default="easy",
                   help="realistic only: hard adds look-alike distractors of every needed skill to pool/")
    p.add_argument("--lookalikes", type=int, choices=(1, 2), default=2, help="look-alikes per skill (hard tier)")
    p.add_argument("--seed", type=int, default=0, help="seed of the look-alikes' damage (hard tier)")

    p = add("synth", cmd_synth, "grow the sample corpus into a large synthetic pool with controlled overlap")
    p.add_argument("--num-skills", type=int, default=80_000)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--near-dup-rate", type=float, default=0.06)
    p.add_argument("--same-name-rate", type=float, default=0.25)
    p.add_argument("--shard-size", type=int, default=10_000)

    p = add("generate-queries", cmd_generate_queries, "generate synthetic queries (LLM or offline) on Ray Data")
    p.add_argument("--corpus", help="skills to use (default: the run directory's corpus, else corpus.sources)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/queries)")
    p.add_argument("--dry-run", action="store_true", help="print the cost estimate and stop")

    p = add("mine", cmd_mine, "mine hard negatives for generated queries and filter false negatives, on Ray Data")
    p.add_argument("--corpus", help="skills (default: the run directory's corpus, else corpus.sources)")
    p.add_argument("--queries", help="queries.parquet (default: RUN_DIR/queries/queries.parquet)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/mined)")

    p = add("train", cmd_train, "fine-tune the encoder or the reranker on mined groups (Ray Train + DeepSpeed)")
    p.add_argument("kind", choices=["encoder", "reranker"])
    p.add_argument("--corpus", help="skills (default: the run directory's corpus, else corpus.sources)")
    p.add_argument("--groups", help="groups.parquet (default: RUN_DIR/mined/groups.parquet)")
    p.add_argument("--rerun", action="store_true", help="train again from the initial weights even when the "
                                                        "export is up to date (else: resume, or nothing to do)")

    p = add("index", cmd_index, "build the Milvus skill index (a new verified version), sync it by content hash, "
                                "or describe it")
    p.add_argument("action", choices=["build", "sync", "info"])
    p.add_argument("--corpus", help="skills (default: the run directory's corpus, else corpus.sources)")

    p = add("serve", cmd_serve, "serve the HTTP API with Ray Serve on this machine (Ctrl-C stops it)")
    p.add_argument("--host", help="address to listen on (default: serving.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serving.port, 8000; 0: any free port)")
    p.add_argument("--smoke", action="store_true", help="route the profile's example requests over HTTP, print the "
                                                        "answers and stop")
    p.add_argument("--top-k", type=int, default=3, help="skills per answer with --smoke")

    p = add("mcp", cmd_mcp, "serve the search_skills and open_skill tools to an agent over MCP (stdio)")
    p.add_argument("--system", help=f"one of: {', '.join(SYSTEMS)} (default: routing.system)")
    p.add_argument("--corpus", help="ingested directory, any source, or 'bundled' (default: the run directory's "
                                    "corpus, else corpus.sources)")

    p = add("pipeline", cmd_pipeline, "run the main job from a profile, every stage in order (`make run`)")
    _stages_in_help(p)
    p.add_argument("--skip", default="", metavar="STAGES", help="comma-separated stages to skip (their outputs from "
                                                                "an earlier run are used as they are)")
    p.add_argument("--rerun", default="", metavar="STAGES", help="comma-separated stages to run even when their "
                                                                 "inputs are unchanged")
    add("systems", cmd_systems, "list the named retrieval systems")
    return parser


def _stages_in_help(parser: argparse.ArgumentParser) -> None:
    """List the pipeline's stages in its --help, read from the pipeline itself when help is asked for (importing
    it on every command would cost seconds of start-up)."""
    plain = parser.format_help

    def format_help() -> str:
        from skillrouter.pipeline.run import STAGES

        parser.epilog = (f"stages, in order: {', '.join(STAGES)}. A stage whose inputs are unchanged since its last "
                         "run is not run again (--rerun STAGE runs it again); training resumes from its last "
                         "checkpoint.")
        return plain()
    parser.format_help = format_help


def _user_errors() -> tuple[type[Exception], ...]:
    """What a command reports as `error: ...` (exit 2) rather than a traceback; imported only then (the LLM
    client's module costs a second of every command's start-up)."""
    from skillrouter.querygen.client import JobFailed

    return ConfigError, IngestError, BenchmarkError, UnsupportedSource, ValueError, JobFailed, SkillIndexError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no per-load weight reports in job output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    # `key=value` words are config overrides wherever they appear (torchtune style).
    overrides = [a for a in argv if is_override(a)]
    args = build_parser().parse_args([a for a in argv if not is_override(a)])
    args.overrides = overrides
    try:
        return args.fn(args)
    except _user_errors() as err:  # evaluated only when something is raised
        print(f"skillrouter {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
