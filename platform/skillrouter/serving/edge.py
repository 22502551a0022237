"""What runs in Serve's HTTP proxy, before Serve reads a request's headers: `ProxyHeaders`.

Serve's proxy takes a client's `X-Request-ID` as the request's id whatever it holds, echoes it in the answer, and
decodes it as UTF-8 (a Latin-1 byte in it is a 500 from the proxy); it also obeys headers meant for its own
callers (a per-request time-out, no cancelling on disconnect, multiplexing and session routing). The proxy runs
the middlewares that `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names outside its own, so `start` sets it to
`proxy_middlewares` in the Serve controller's environment (`controller_options`), which the proxies inherit; a
Serve config file does the same with a top-level `controller_options: {runtime_env: {env_vars: ...}}`.

This module is imported by the proxy: it needs nothing but Starlette.
"""

from __future__ import annotations

import re

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


def proxy_middlewares() -> list[Middleware]:
    """The callback of `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`."""
    return [Middleware(ProxyHeaders)]
