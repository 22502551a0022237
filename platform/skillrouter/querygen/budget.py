"""A hard spending limit shared by every worker: requests, tokens, or money at configured prices.

Workers reserve the worst case (prompt estimate plus `max_tokens` of output) before sending a request and settle
the real usage after, so that concurrent requests can never overshoot the limit. Once a reservation is refused
the budget is closed and every later one is refused too: the job stops cleanly, keeping what it has. A rerun into
the same folder starts from what earlier runs spent (`spent`, summed from its log), so the limit is cumulative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.requests + other.requests, self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.requests - other.requests, self.prompt_tokens - other.prompt_tokens,
                     self.completion_tokens - other.completion_tokens)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, input_per_mtok: float, output_per_mtok: float) -> float:
        return (self.prompt_tokens * input_per_mtok + self.completion_tokens * output_per_mtok) / 1e6

    def to_json(self) -> dict:
        return asdict(self)


class Budget:
    """Limits are optional; `None` means unlimited. Not thread-safe: share it through one Ray actor."""

    def __init__(self, max_requests: int | None = None, max_tokens: int | None = None,
                 max_cost_usd: float | None = None, input_per_mtok: float = 0.0, output_per_mtok: float = 0.0,
                 spent: Usage | None = None):
        self.max_requests, self.max_tokens, self.max_cost_usd = max_requests, max_tokens, max_cost_usd
        self.prices = (input_per_mtok, output_per_mtok)
        self.spent = spent or Usage()
        self.reserved = Usage()
        self.closed_reason: str | None = None

    def _over(self, usage: Usage) -> str | None:
        if self.max_requests is not None and usage.requests > self.max_requests:
            return f"request budget of {self.max_requests} reached"
        if self.max_tokens is not None and usage.tokens > self.max_tokens:
            return f"token budget of {self.max_tokens:,} reached"
        if self.max_cost_usd is not None and usage.cost(*self.prices) > self.max_cost_usd:
            return f"cost budget of ${self.max_cost_usd:.2f} reached"
        return None

    def reserve(self, prompt_tokens: int, max_completion_tokens: int) -> bool:
        if self.closed_reason:
            return False
        ask = Usage(1, prompt_tokens, max_completion_tokens)
        reason = self._over(self.spent + self.reserved + ask)
        if reason:
            self.closed_reason = reason
            return False
        self.reserved = self.reserved + ask
        return True

    def settle(self, prompt_tokens: int, max_completion_tokens: int, actual: Usage) -> None:
        """Release a reservation and record what the request really used (a failed request still counts)."""
        self.reserved = Usage(self.reserved.requests - 1, self.reserved.prompt_tokens - prompt_tokens,
                              self.reserved.completion_tokens - max_completion_tokens)
        self.spent = self.spent + actual

    def state(self) -> dict:
        return {"spent": self.spent.to_json(), "cost_usd": round(self.spent.cost(*self.prices), 6),
                "closed_reason": self.closed_reason}
