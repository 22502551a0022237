"""An OpenAI-compatible chat client for JSON answers, with the retry policy a batch job needs.

The `openai` SDK talks to any compatible endpoint (`base_url`); its own retries are turned off so that every HTTP
attempt passes through the shared budget and is counted. Retried: 429 (waiting at least the server's
`Retry-After`), 5xx, timeouts and connection errors, with exponential backoff and jitter. Not retried: 400 (a
problem with this request: the skill is recorded as failed) and 401/403/404 (a problem with the whole job: it stops).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai

from skillrouter.querygen.budget import Usage


class BudgetExhausted(Exception):
    """The shared budget refused the request; nothing was sent."""


class RequestFailed(Exception):
    """A request that cannot succeed or kept failing after every retry; `transient` says which."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class JobFailed(Exception):
    """An error that every request would hit (bad key, unknown model): stop the job."""


@dataclass
class Reply:
    data: Any  # parsed JSON, or None when the answer was not valid JSON
    raw: str
    usage: Usage


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter in [0.5, 1.5) of the nominal delay, so clients do not retry in step."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt) * (0.5 + rng.random())


def retry_after_seconds(headers: Any) -> float | None:
    """`Retry-After` (seconds or an HTTP date) or `retry-after-ms`, as seconds; None when absent or unreadable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# reserve(prompt_tokens, max_completion_tokens) -> bool; settle(prompt_tokens, max_completion_tokens, usage)
Reserve = Callable[[int, int], Awaitable[bool]]
Settle = Callable[[int, int, Usage], Awaitable[None]]


async def _always(prompt_tokens: int, max_tokens: int) -> bool:
    return True


async def _ignore(prompt_tokens: int, max_tokens: int, usage: Usage) -> None:
    return None


class ChatClient:
    def __init__(self, base_url: str | None, api_key: str, model: str, *, timeout_s: float = 60.0,
                 temperature: float = 0.8, max_tokens: int = 400, retry: RetryPolicy | None = None,
                 json_mode: bool = True, seed: int = 0):
        self.model, self.temperature, self.max_tokens, self.json_mode = model, temperature, max_tokens, json_mode
        self.retry = retry or RetryPolicy()
        self.rng = random.Random(seed)
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    async def complete_json(self, messages: list[dict], reserve: Reserve = _always,
                            settle: Settle = _ignore) -> Reply:
        """One answer, retried as the module describes; every HTTP attempt is reserved and settled."""
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 8  # ~4 characters per token
        kwargs = {"response_format": {"type": "json_object"}} if self.json_mode else {}
        last_error = ""
        for attempt in range(self.retry.max_retries + 1):
            if not await reserve(prompt_tokens, self.max_tokens):
                raise BudgetExhausted("budget exhausted before the request was sent")
            used = Usage(requests=1)
            try:
                resp = await self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=self.temperature,
                    max_tokens=self.max_tokens, **kwargs)
                if resp.usage is not None:
                    used = Usage(1, resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
                raw = (resp.choices[0].message.content or "") if resp.choices else ""
                try:
                    data = json.loads(raw)
                except json.JSONDecodeError:
                    data = None
                return Reply(data, raw, used)
            except openai.RateLimitError as exc:
                asked = retry_after_seconds(exc.response.headers)
                delay = (min(asked, self.retry.max_retry_after_s) if asked is not None
                         else self.retry.backoff(attempt, self.rng))
                last_error = "429 rate limited"
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403, 404):
                    raise JobFailed(f"{exc.status_code} from {self._client.base_url}: {exc.message}") from None
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    raise RequestFailed(f"{exc.status_code}: {exc.message}", transient=False) from None
                delay = self.retry.backoff(attempt, self.rng)
                last_error = f"{exc.status_code} server error"
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                delay = self.retry.backoff(attempt, self.rng)
                last_error = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection error"
            finally:
                await settle(prompt_tokens, self.max_tokens, used)
            if attempt < self.retry.max_retries:
                await asyncio.sleep(delay)
        raise RequestFailed(f"gave up after {self.retry.max_retries + 1} attempts: {last_error}", transient=True)

    async def close(self) -> None:
        await self._client.close()
