"""What runs in Serve's HTTP proxy, before Serve reads a request's headers: `ProxyHeaders` and `ProxyAdmission`.

Serve's proxy takes a client's `X-Request-ID` as the request's id whatever it holds, echoes it in the answer, and
decodes it as UTF-8 (a Latin-1 byte in it is a 500 from the proxy); it also obeys headers meant for its own
callers (a per-request time-out, no cancelling on disconnect, multiplexing and session routing). The proxy runs
the middlewares that `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names outside its own, so `start` sets it to
`proxy_middlewares` in the Serve controller's environment (`controller_options`), which the proxies inherit; a
Serve config file does the same with a top-level `controller_options: {runtime_env: {env_vars: ...}}`.

`ProxyAdmission` refuses route requests over the application's in-flight limit in the proxy itself: a refusal
that travels to an ingress replica and back costs the proxy a hop (about 200 a second on 2 cores), so a flood of a
thousand clients waited 5 s for its 503s. It reads a route's body first, against the same deadline as the ingress,
so a client that stalls holds a socket and a coroutine, never a slot; only requests with their body in hand count.
The limits come from the controller's environment too (`proxy_env`).

This module is imported by the proxy: it needs nothing but Starlette (and Ray's metrics, which the proxy has).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable

from starlette.middleware import Middleware

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "skillrouter.serving.edge:proxy_middlewares"
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's id outside this is replaced, never echoed
# Serve's own per-request controls, meant for a trusted caller in front of the proxy, not for clients
SERVE_CONTROL_HEADERS = frozenset({b"x-request-timeout-seconds", b"x-request-disconnect-disabled",
                                   b"serve-multiplexed-model-id", b"x-session-id"})


class ProxyHeaders:
    """Drop an unsafe `X-Request-ID` (the proxy then makes a new one) and Serve's control headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if allowed(k, v)]}
        await self.app(scope, receive, send)


def allowed(name: bytes, value: bytes) -> bool:
    """Whether a request header reaches Serve: not an unsafe request id, not one of Serve's controls."""
    if name.lower() == b"x-request-id":
        return SAFE_REQUEST_ID.fullmatch(value.decode("latin-1")) is not None
    return name.lower().replace(b"_", b"-") not in SERVE_CONTROL_HEADERS


MAX_IN_FLIGHT_ENV, BODY_TIMEOUT_ENV, RETRY_AFTER_ENV, MAX_BODY_ENV = (
    "SKILLROUTER_PROXY_MAX_IN_FLIGHT", "SKILLROUTER_PROXY_BODY_TIMEOUT_S", "SKILLROUTER_PROXY_RETRY_AFTER_S",
    "SKILLROUTER_PROXY_MAX_BODY_BYTES")


def proxy_env(max_in_flight: int, body_timeout_s: float, retry_after_s: int, max_body_bytes: int) -> dict[str, str]:
    """The environment that sets `ProxyAdmission`'s limits (and installs the middlewares) in every proxy."""
    return {CALLBACK_ENV: CALLBACK, MAX_IN_FLIGHT_ENV: str(max_in_flight), BODY_TIMEOUT_ENV: str(body_timeout_s),
            RETRY_AFTER_ENV: str(retry_after_s), MAX_BODY_ENV: str(max_body_bytes)}


class ProxyAdmission:
    """`POST /v1/route` with its body read (within `body_timeout_s`) is let through while fewer than
    `max_in_flight` are in this proxy's hands, else answered 503 with `Retry-After` here; a body that does not
    arrive in time is 408, one over `max_body_bytes` 413 (the ingress checks both again). Other requests pass.
    `on_refusal(reason)` hears of each refusal (in Serve's proxy: the `skillrouter_proxy_rejected_total` counter,
    since a request refused here never reaches a replica's metrics)."""

    def __init__(self, app, max_in_flight: int, body_timeout_s: float, retry_after_s: int, max_body_bytes: int,
                 on_refusal: Callable[[str], None] = lambda reason: None):
        self.app, self.max_in_flight, self.body_timeout_s = app, max_in_flight, body_timeout_s
        self.retry_after_s, self.max_body_bytes = retry_after_s, max_body_bytes
        self.on_refusal = on_refusal
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/route":
            return await self.app(scope, receive, send)
        try:
            body = await asyncio.wait_for(read_body(receive, self.max_body_bytes), self.body_timeout_s)
        except asyncio.TimeoutError:
            self.on_refusal("body_timeout")
            return await _answer(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s "
                                 "(serving.body_timeout_s)", close=True)
        if body is None:  # the client left
            return
        if len(body) > self.max_body_bytes:
            self.on_refusal("body_too_large")
            return await _answer(send, 413, f"request body over {self.max_body_bytes:,} bytes", close=True)
        if self.in_flight >= self.max_in_flight:
            self.on_refusal("in_flight")
            return await _answer(send, 503, f"{self.in_flight} requests in flight (serving.max_in_flight); retry "
                                 f"after {self.retry_after_s} s", {"retry-after": str(self.retry_after_s)})
        self.in_flight += 1
        done = False

        def release():
            nonlocal done
            if not done:
                done = True
                self.in_flight -= 1

        async def send_and_release(message):
            await send(message)
            # the answer is out: the request no longer counts, though the proxy's task may wait on the connection
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                release()
        try:
            await self.app(scope, replaying(body, receive), send_and_release)
        finally:
            release()


async def read_body(receive, limit: int) -> bytes | None:
    """A request's body, or as soon as it passes `limit`, what came so far; None when the client disconnects."""
    chunks, size, more = [], 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    return b"".join(chunks)


def replaying(body: bytes, receive):
    """An ASGI `receive` that hands the app a body already read, then the connection's own messages."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _answer(send, status: int, detail: str, headers: dict[str, str] | None = None, close: bool = False):
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    raw += [(b"connection", b"close")] if close else []
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Middleware]:
    """The callback of `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`: headers first, then admission when the
    controller's environment sets its limits."""
    out = [Middleware(ProxyHeaders)]
    if MAX_IN_FLIGHT_ENV in os.environ:
        from skillrouter.serving.metrics import count_proxy_refusal

        out.append(Middleware(ProxyAdmission, max_in_flight=int(os.environ[MAX_IN_FLIGHT_ENV]),
                              body_timeout_s=float(os.environ[BODY_TIMEOUT_ENV]),
                              retry_after_s=int(os.environ[RETRY_AFTER_ENV]),
                              max_body_bytes=int(os.environ[MAX_BODY_ENV]), on_refusal=count_proxy_refusal))
    return out
