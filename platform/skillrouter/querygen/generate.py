"""Generate one skill's queries: ask, validate, regenerate what was rejected, log every answer."""

from __future__ import annotations

from collections import Counter

from skillrouter.corpus.skill import Skill
from skillrouter.querygen.budget import Usage
from skillrouter.querygen.client import BudgetExhausted, ChatClient, RequestFailed, Reserve, Settle
from skillrouter.querygen.leak_guard import LeakGuard
from skillrouter.querygen.log import FAILED, OK, LogWriter, SkillState
from skillrouter.querygen.offline import GENERATOR as OFFLINE
from skillrouter.querygen.offline import generate_offline
from skillrouter.querygen.prompts import QueryPrompt

MALFORMED = "malformed_output"


def validate_reply(data: object, guard: LeakGuard, need: int) -> tuple[list[str], Counter]:
    """Accept up to `need` queries from a parsed answer; everything else is counted by reason."""
    rejected: Counter = Counter()
    if not isinstance(data, dict) or not isinstance(data.get("queries"), list):
        rejected[MALFORMED] += 1
        return [], rejected
    accepted = []
    for q in data["queries"]:
        if not isinstance(q, str):
            rejected[MALFORMED] += 1
            continue
        q = " ".join(q.split())
        reason = guard.check(q)
        if reason is None and len(accepted) < need:
            guard.accept(q)
            accepted.append(q)
        elif reason is not None:
            rejected[reason] += 1
    return accepted, rejected


def _finish_if_settled(state: SkillState, n: int, max_attempts: int) -> bool:
    if len(state.queries) >= n:
        state.status = OK
    elif state.attempts >= max_attempts:
        state.status = FAILED
        top = state.rejected.most_common(1)
        state.reason = (f"{len(state.queries)}/{n} valid queries after {state.attempts} attempts"
                        + (f"; most rejections: {top[0][0]}" if top else ""))
    return state.done


async def generate_llm(skill: Skill, state: SkillState, *, n: int, max_attempts: int, client: ChatClient,
                       prompt: QueryPrompt, guard: LeakGuard, log: LogWriter, reserve: Reserve,
                       settle: Settle) -> SkillState:
    """Drive one skill to OK or FAILED; returns early, unfinished, when the budget closes or the API keeps failing
    (the state is in the log, so a rerun continues it)."""
    state.generator, state.model = "llm", client.model
    for q in state.queries:  # a resumed skill: earlier queries still count as duplicates
        guard.accept(q)

    async def settle_logged(prompt_tokens: int, max_tokens: int, usage: Usage) -> None:
        state.usage = state.usage + usage
        log.request(state.skill_id, usage)  # before the budget hears of it: a kill then overcounts, never under
        await settle(prompt_tokens, max_tokens, usage)

    while not _finish_if_settled(state, n, max_attempts):
        need = n - len(state.queries)
        try:
            reply = await client.complete_json(prompt.messages(skill, need), reserve, settle_logged)
        except BudgetExhausted:
            return state
        except RequestFailed as err:
            if err.transient:
                state.reason = str(err)
                return state
            state.status, state.reason = FAILED, str(err)
            break
        state.attempts += 1
        accepted, rejected = validate_reply(reply.data, guard, need)
        state.queries += accepted
        state.rejected.update(rejected)
        log.answer(state, accepted, dict(rejected), reply.usage, reply.raw)
    log.finish(state)
    return state


def generate_offline_logged(skill: Skill, state: SkillState, *, n: int, guard: LeakGuard, log: LogWriter,
                            seed: int) -> SkillState:
    state.generator, state.model = OFFLINE, OFFLINE
    try:
        queries, rejected = generate_offline(skill, n, guard, seed)
    except Exception as exc:  # one odd skill must not sink a 70K-skill job; the summary names it
        queries, rejected = [], {"generator_error": 1}
        state.reason = f"offline generator error: {exc!r}"
    state.attempts, state.queries = 1, queries
    state.rejected.update(rejected)
    log.answer(state, queries, rejected, Usage(), "")
    state.status = OK if len(queries) >= n else FAILED
    if state.status == FAILED and state.reason is None:
        state.reason = f"the skill's text yields {len(queries)}/{n} usable requests"
    log.finish(state)
    return state
