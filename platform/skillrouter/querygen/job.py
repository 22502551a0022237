"""The query-generation job on Ray Data: sample skills, generate (LLM or offline), resume, summarise.

Layout of `out_dir`: `parts/*.jsonl` (the resumable log, see `querygen.log`), `queries.parquet`
(`query_id, skill_id, query, generator, model, attempts, usage`), `summary.json` and `categories.json`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skillrouter.common.raycluster import ensure_ray
from skillrouter.config import PipelineConfig, QueryGenConfig
from skillrouter.corpus.skill import Skill
from skillrouter.querygen.budget import Budget, Usage
from skillrouter.querygen.client import ChatClient, JobFailed, RetryPolicy
from skillrouter.querygen.generate import generate_llm, generate_offline_logged
from skillrouter.querygen.leak_guard import LeakGuard, document_frequencies, normalise
from skillrouter.querygen.log import FAILED, OK, LogWriter, SkillState, replay, spent
from skillrouter.querygen.prompts import QueryPrompt
from skillrouter.querygen.sampling import stratified_sample
from skillrouter.retrieval.categories import saved_categories

QUERIES_FILE = "queries.parquet"
QUERY_SCHEMA = pa.schema([("query_id", pa.string()), ("skill_id", pa.string()), ("query", pa.string()),
                          ("generator", pa.string()), ("model", pa.string()), ("attempts", pa.int32()),
                          ("usage", pa.string())])


def resolve_generator(qc: QueryGenConfig) -> str:
    if qc.generator != "auto":
        return qc.generator
    return "llm" if os.environ.get(qc.api_key_env) else "offline"


def _guard(row: dict, qc: QueryGenConfig) -> LeakGuard:
    return LeakGuard(normalise(row["name"]), set(row["identifiers"]), min_chars=qc.min_chars,
                     max_chars=qc.max_chars, min_words=qc.min_words)


def _rows(batch: dict) -> list[dict]:
    keys = list(batch)
    return [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]


def _skill(row: dict) -> Skill:
    return Skill(row["id"], row["name"], row["description"], row["body"], row.get("category"))


def _prior(row: dict) -> SkillState:
    return SkillState(row["id"], queries=list(row["queries"]), attempts=int(row["attempts"]))


def _summary_batch(states: list[SkillState]) -> dict:
    return {"skill_id": [s.skill_id for s in states], "status": [s.status or "unfinished" for s in states],
            "num_queries": [len(s.queries) for s in states]}


class OfflineWorker:
    """Ray Data actor: the deterministic offline generator, logging to its own part file."""

    def __init__(self, out_dir: str, qc: QueryGenConfig, seed: int):
        self.qc, self.seed = qc, seed
        self.log = LogWriter(Path(out_dir) / "parts" / f"offline-{uuid.uuid4().hex[:12]}.jsonl")

    def __call__(self, batch: dict) -> dict:
        states = [generate_offline_logged(_skill(r), _prior(r), n=self.qc.queries_per_skill,
                                          guard=_guard(r, self.qc), log=self.log, seed=self.seed)
                  for r in _rows(batch)]
        return _summary_batch(states)


class LLMWorker:
    """Ray Data actor: an async client with at most `max_in_flight_per_actor` requests in flight.

    Ray Data runs several batches of one actor concurrently on its event loop; the semaphore bounds the requests
    of all of them together, so the endpoint sees a steady, bounded load from each actor."""

    def __init__(self, out_dir: str, qc: QueryGenConfig, budget, seed: int):
        self.qc, self.budget = qc, budget
        self.prompt = QueryPrompt.load(qc.prompt_file, qc.body_chars)
        self.client = ChatClient(
            qc.base_url or os.environ.get("OPENAI_BASE_URL"), os.environ.get(qc.api_key_env, "not-set"), qc.model,
            timeout_s=qc.timeout_s, temperature=qc.temperature, max_tokens=qc.max_tokens,
            retry=RetryPolicy(qc.max_retries, qc.backoff_base_s, qc.backoff_max_s), seed=seed)
        self.log = LogWriter(Path(out_dir) / "parts" / f"llm-{uuid.uuid4().hex[:12]}.jsonl")
        self.slots: asyncio.Semaphore | None = None

    async def _reserve(self, prompt_tokens: int, max_tokens: int) -> bool:
        await self.slots.acquire()  # released in _settle, after the HTTP attempt ends
        granted = self.budget is None or await self.budget.reserve.remote(prompt_tokens, max_tokens)
        if not granted:
            self.slots.release()
        return granted

    async def _settle(self, prompt_tokens: int, max_tokens: int, usage: Usage) -> None:
        self.slots.release()
        if self.budget is not None:
            await self.budget.settle.remote(prompt_tokens, max_tokens, usage)

    async def __call__(self, batch: dict):
        if self.slots is None:  # created on the event loop that Ray Data runs this actor's batches on
            self.slots = asyncio.Semaphore(self.qc.max_in_flight_per_actor)
        rows = _rows(batch)
        states = await asyncio.gather(*(
            generate_llm(_skill(r), _prior(r), n=self.qc.queries_per_skill, max_attempts=self.qc.max_attempts,
                         client=self.client, prompt=self.prompt, guard=_guard(r, self.qc), log=self.log,
                         reserve=self._reserve, settle=self._settle)
            for r in rows))
        yield _summary_batch(list(states))


def _overlapping_actor_pool(size: int):
    """Several batches in flight on each actor: a batch ends with its slowest request, and with one batch at a
    time an actor's load sags at every boundary (measured: 89% of a local server's capacity, against 97% with
    four). The coroutines still run on the actor's single event loop, so the semaphore and log need no lock."""
    import ray

    return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=4, max_concurrent_calls_per_actor=4)


def estimate(todo: Sequence[Skill], qc: QueryGenConfig) -> dict:
    """What the LLM path would spend if every skill succeeded at its first answer (a lower bound), and at
    its last allowed attempt (an upper bound)."""
    prompt = QueryPrompt.load(qc.prompt_file, qc.body_chars)
    prompt_tokens = sum(sum(len(m["content"]) for m in prompt.messages(s, qc.queries_per_skill)) // 4 + 8
                        for s in todo)
    low = Usage(len(todo), prompt_tokens, len(todo) * min(qc.max_tokens, 60 * qc.queries_per_skill))
    high = Usage(len(todo) * qc.max_attempts, prompt_tokens * qc.max_attempts,
                 len(todo) * qc.max_attempts * qc.max_tokens)
    prices = (qc.budget.input_usd_per_mtok, qc.budget.output_usd_per_mtok)
    return {"skills": len(todo), "requests": [low.requests, high.requests],
            "prompt_tokens": [low.prompt_tokens, high.prompt_tokens],
            "completion_tokens": [low.completion_tokens, high.completion_tokens],
            "cost_usd": [round(low.cost(*prices), 4), round(high.cost(*prices), 4)]}


def _query_id(skill_id: str, query: str) -> str:
    return "q-" + hashlib.sha1(f"{skill_id}\n{query}".encode()).hexdigest()[:16]


def write_queries(states: dict[str, SkillState], sample: Sequence[Skill], out: Path) -> int:
    rows = []
    for s in sample:
        st = states.get(s.id)
        if st is None:
            continue
        usage = json.dumps(st.usage.to_json())
        rows += [{"query_id": _query_id(s.id, q), "skill_id": s.id, "query": q, "generator": st.generator,
                  "model": st.model, "attempts": st.attempts, "usage": usage} for q in st.queries]
    pq.write_table(pa.Table.from_pylist(rows, schema=QUERY_SCHEMA), out / QUERIES_FILE)
    return len(rows)


def run_query_generation(skills: Sequence[Skill], config: PipelineConfig, out_dir: str | Path,
                         log=print) -> dict:
    """Generate queries for a stratified sample of `skills`; rerunnable, it continues where it stopped."""
    import ray

    qc = config.querygen
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cats = saved_categories(skills, qc.categories_k, config.seed, out / "categories.json")
    sample = stratified_sample(skills, cats, qc.num_skills, config.seed)
    states = replay(out / "parts")
    spent_before = spent(states)  # by earlier runs into this folder: the budget is cumulative
    todo = [s for s in sample if not (s.id in states and states[s.id].done)]
    generator = resolve_generator(qc)
    log(f"query generation ({generator}): {len(sample)} of {len(skills)} skills, stratified over "
        f"{len(cats.counts())} categories ({cats.method}); {len(sample) - len(todo)} already done, "
        f"{len(todo)} to do")
    if generator == "llm":
        QueryPrompt.load(qc.prompt_file, qc.body_chars)  # a bad prompt file fails before anything is sent
        est = estimate(todo, qc)
        log(f"estimate: {est['requests'][0]:,}-{est['requests'][1]:,} requests, "
            f"{est['prompt_tokens'][0]:,}-{est['prompt_tokens'][1]:,} prompt tokens, "
            f"${est['cost_usd'][0]:.4f}-${est['cost_usd'][1]:.4f} at ${qc.budget.input_usd_per_mtok}/"
            f"${qc.budget.output_usd_per_mtok} per million tokens")
        if qc.dry_run:
            return {"dry_run": True, "estimate": est}

    budget, budget_state = None, None
    if todo:
        df, num_docs = document_frequencies(skills)
        rows = []
        for s in todo:
            prior = states.get(s.id, SkillState(s.id))
            guard = LeakGuard.for_skill(s, df, num_docs)
            rows.append({"id": s.id, "name": s.name, "description": s.description, "body": s.body,
                         "category": cats.by_skill[s.id], "identifiers": sorted(guard.identifiers),
                         "queries": prior.queries, "attempts": prior.attempts})
        ensure_ray()
        ds = ray.data.from_items(rows)
        if generator == "llm":
            b = qc.budget
            # Without a limit there is nothing to enforce: skip two actor calls per request.
            limited = (b.max_requests, b.max_tokens, b.max_cost_usd) != (None, None, None)
            budget = ray.remote(Budget).remote(b.max_requests, b.max_tokens, b.max_cost_usd,
                                               b.input_usd_per_mtok, b.output_usd_per_mtok,
                                               spent=spent_before) if limited else None
            env = {k: os.environ[k] for k in (qc.api_key_env, "OPENAI_BASE_URL") if k in os.environ}
            ds = ds.map_batches(LLMWorker, fn_constructor_kwargs={"out_dir": str(out), "qc": qc, "budget": budget,
                                                                  "seed": config.seed},
                                batch_size=qc.batch_size, compute=_overlapping_actor_pool(qc.actors), num_cpus=0.5,
                                runtime_env={"env_vars": env} if env else None)
        else:
            ds = ds.map_batches(OfflineWorker, fn_constructor_kwargs={"out_dir": str(out), "qc": qc,
                                                                      "seed": config.seed},
                                batch_size=qc.batch_size, compute=ray.data.ActorPoolStrategy(size=qc.actors))
        try:
            for _ in ds.iter_batches(batch_size=None):
                pass
        except Exception as exc:  # a JobFailed inside a worker arrives wrapped by Ray
            if isinstance(exc, JobFailed) or "JobFailed" in str(exc):
                raise JobFailed(str(exc).splitlines()[-1]) from None
            raise
        if budget is not None:
            budget_state = ray.get(budget.state.remote())

    states = replay(out / "parts")
    n_queries = write_queries(states, sample, out)
    summary = summarise(states, sample, qc, generator, cats.method, budget_state, time.perf_counter() - started)
    summary["queries"] = n_queries
    summary["usage_this_run"] = (spent(states) - spent_before).to_json()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarise(states: dict[str, SkillState], sample: Sequence[Skill], qc: QueryGenConfig, generator: str,
              categories_method: str, budget_state: dict | None, seconds: float) -> dict:
    mine = [states[s.id] for s in sample if s.id in states]
    usage = spent(states)  # every paid request logged in the folder, answered or not, this run's and earlier ones'
    rejected: Counter = Counter()
    for st in mine:
        rejected.update(st.rejected)
    statuses = Counter(st.status or "unfinished" for st in mine)
    return {
        "generator": generator, "model": qc.model if generator == "llm" else "offline",
        "categories": categories_method, "skills_sampled": len(sample),
        "skills_ok": statuses.get(OK, 0), "skills_failed": statuses.get(FAILED, 0),
        "skills_unfinished": len(sample) - statuses.get(OK, 0) - statuses.get(FAILED, 0),
        "failed": {st.skill_id: st.reason for st in mine if st.status == FAILED},
        "rejections": dict(rejected), "usage": usage.to_json(),
        "estimated_cost_usd": round(usage.cost(qc.budget.input_usd_per_mtok, qc.budget.output_usd_per_mtok), 6),
        "stopped_by_budget": (budget_state or {}).get("closed_reason"), "seconds": round(seconds, 2),
    }


def print_query_summary(summary: dict, out: str | Path, log=print) -> None:
    """The few lines a person reads after a run: outcome, rejections, spend, where the files are."""
    u = summary["usage"]
    log(f"skills: {summary['skills_ok']} ok, {summary['skills_failed']} failed, "
          f"{summary['skills_unfinished']} unfinished of {summary['skills_sampled']}; "
          f"{summary['queries']} queries ({summary['generator']}, {summary['seconds']:.1f} s)")
    if summary["skills_failed"]:  # the offline generator's "failed": a text that yields fewer requests than asked
        groups: dict[str, list[str]] = {}
        for reason in summary["failed"].values():
            groups.setdefault(re.sub(r"\d+/\d+", "N/M", reason), []).append(reason)
        top = sorted(groups.items(), key=lambda kv: len(kv[1]), reverse=True)[:3]
        log("failed: " + "; ".join(f"{len(g)} x {g[0] if len(g) == 1 else pattern}" for pattern, g in top)
            + f" (each skill's reason: {Path(out) / 'summary.json'})")
    if summary["rejections"]:
        log("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["rejections"].items())))
    if u["requests"]:
        this_run = summary.get("usage_this_run", u)["requests"]
        log(f"requests {u['requests']:,} ({this_run:,} this run; the budget counts every run into this folder), "
            f"tokens {u['prompt_tokens']:,} in / {u['completion_tokens']:,} out, "
            f"estimated cost ${summary['estimated_cost_usd']:.4f}")
    if summary["stopped_by_budget"]:
        log(f"stopped: {summary['stopped_by_budget']}; rerun with a larger budget to continue")
    log(f"wrote {Path(out) / 'queries.parquet'} and {Path(out) / 'summary.json'}")
