"""The LLM path against a scripted OpenAI-compatible server on 127.0.0.1 (no Ray here; see test_querygen_job)."""

import asyncio
import json
import time

import pytest

from skillrouter.corpus.skill import Skill
from skillrouter.querygen.budget import Budget, Usage
from skillrouter.querygen.client import ChatClient, JobFailed, RetryPolicy, retry_after_seconds
from skillrouter.querygen.generate import MALFORMED, generate_llm
from skillrouter.querygen.leak_guard import NAMES_SKILL, TOO_SHORT, LeakGuard
from skillrouter.querygen.log import FAILED, OK, LogWriter, SkillState, replay
from skillrouter.querygen.prompts import QueryPrompt
from skillrouter.testing.openai_server import OpenAIStub

SKILL = Skill("ops/log-shipper", "log-shipper", "Ship application logs to a central store.",
              "# Shipping logs\n\n## Steps\n1. Install the agent.")


@pytest.fixture
def stub():
    with OpenAIStub(timeout_sleep_s=1.5, retry_after="1") as server:
        yield server


@pytest.fixture
def prompt(repo_root):
    return QueryPrompt.load(repo_root / "configs" / "prompts" / "query_generation.yaml")


def run(stub, prompt, tmp_path, *, max_attempts=3, max_retries=3, timeout_s=5.0, budget=None, state=None):
    client = ChatClient(stub.base_url, "test-key", "stub-model", timeout_s=timeout_s,
                        retry=RetryPolicy(max_retries=max_retries, backoff_base_s=0.01, backoff_max_s=0.05))
    log = LogWriter(tmp_path / "parts" / "w.jsonl")

    async def reserve(p, m):
        return budget.reserve(p, m) if budget else True

    async def settle(p, m, usage):
        if budget:
            budget.settle(p, m, usage)

    async def go():
        try:
            return await generate_llm(SKILL, state or SkillState(SKILL.id), n=3, max_attempts=max_attempts,
                                      client=client, prompt=prompt, guard=LeakGuard.for_skill(SKILL), log=log,
                                      reserve=reserve, settle=settle)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    finally:
        log.close()


def test_plain_answer(stub, prompt, tmp_path):
    st = run(stub, prompt, tmp_path)
    assert st.status == OK and len(st.queries) == 3 and st.attempts == 1 and st.usage.requests == 1
    assert st.usage.prompt_tokens > 100 and stub.requests["log-shipper"] == 1
    logged = replay(tmp_path / "parts")[SKILL.id]
    records = [json.loads(line) for line in (tmp_path / "parts" / "w.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["request", "answer", "done"]  # the paid attempt, then its answer
    assert logged.status == OK and logged.queries == st.queries and "queries" in json.loads(records[1]["raw"])


def test_429_waits_for_retry_after(stub, prompt, tmp_path):
    stub.script("log-shipper", "429")
    started = time.perf_counter()
    st = run(stub, prompt, tmp_path)
    assert time.perf_counter() - started >= 1.0  # Retry-After: 1, far above the 0.01 s backoff
    assert st.status == OK and stub.requests["log-shipper"] == 2


def test_500_and_timeout_are_retried(stub, prompt, tmp_path):
    stub.script("log-shipper", "500", "timeout", "500")
    st = run(stub, prompt, tmp_path, timeout_s=0.5)
    assert st.status == OK and stub.requests["log-shipper"] == 4 and st.attempts == 1


def test_malformed_and_leaking_answers_are_regenerated(stub, prompt, tmp_path):
    stub.script("log-shipper", "malformed", "leak")
    st = run(stub, prompt, tmp_path)
    assert st.status == OK and st.attempts == 3 and stub.answered["log-shipper"] == 3
    assert st.rejected == {MALFORMED: 1, NAMES_SKILL: 3}


def test_failed_after_max_attempts_with_reason(stub, prompt, tmp_path):
    stub.script("log-shipper", "short", "leak")
    st = run(stub, prompt, tmp_path, max_attempts=2)
    assert st.status == FAILED and st.queries == [] and "0/3 valid queries after 2 attempts" in st.reason
    assert st.rejected == {TOO_SHORT: 3, NAMES_SKILL: 3}
    assert replay(tmp_path / "parts")[SKILL.id].status == FAILED


def test_transient_errors_past_the_retries_leave_the_skill_unfinished(stub, prompt, tmp_path):
    stub.script("log-shipper", "500", "500", "500")
    st = run(stub, prompt, tmp_path, max_retries=2)
    assert st.status is None and "gave up after 3 attempts: 500" in st.reason
    logged = replay(tmp_path / "parts")[SKILL.id]  # three paid attempts are logged, no answer: a rerun retries it
    assert not logged.done and logged.queries == [] and logged.usage.requests == 3
    again = run(stub, prompt, tmp_path)
    assert again.status == OK and stub.requests["log-shipper"] == 4


def test_bad_key_stops_the_job(stub, prompt, tmp_path):
    stub.script("log-shipper", "401")
    with pytest.raises(JobFailed, match="401"):
        run(stub, prompt, tmp_path)


def test_resume_continues_a_partial_skill_without_repeating(stub, prompt, tmp_path):
    stub.script("log-shipper", "leak")
    prior = SkillState(SKILL.id, queries=["My service writes logs to disk and nobody can search them."],
                       attempts=1)
    st = run(stub, prompt, tmp_path, state=prior)
    assert st.status == OK and len(st.queries) == 3 and st.attempts == 3 and stub.requests["log-shipper"] == 2


def test_budget_refuses_before_sending(stub, prompt, tmp_path):
    budget = Budget(max_requests=1)
    stub.script("log-shipper", "malformed")
    st = run(stub, prompt, tmp_path, budget=budget)
    assert st.status is None and stub.requests["log-shipper"] == 1 and budget.closed_reason
    assert budget.spent.requests == 1 and budget.reserved == Usage()


def test_budget_by_tokens_and_money():
    b = Budget(max_tokens=1000)
    assert b.reserve(300, 400) and not b.reserve(200, 400) and not b.reserve(1, 1)  # closed stays closed
    m = Budget(max_cost_usd=1.0, input_per_mtok=1.0, output_per_mtok=1.0)
    assert m.reserve(400_000, 400_000)
    m.settle(400_000, 400_000, Usage(1, 300_000, 100_000))
    assert m.reserve(300_000, 300_000) and not m.reserve(300_000, 300_000)
    assert "cost budget of $1.00" in m.closed_reason


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None
