"""Bounded requests: a body size limit per route and a rate limit on credential routes.

Both are checked in a small ASGI middleware before any route code runs, so neither an
unauthenticated client nor a big upload costs the controller more than the limit:

- the declared ``Content-Length`` is refused at once (413) when over the route's limit,
  and a body that arrives in chunks (no length, or a lying one) is counted as it streams
  and cut off at the limit; the route never sees the rest;
- enrollment and token routes take at most ``burst`` requests per client address, then one
  every ``1 / rate`` seconds (429 with Retry-After): guessing enrollment tokens or flooding
  the token table is slow;
- with tokens required, an upload (model, plan, sample) must name a live credential (an API
  token or a device's upload credential) before a byte of its body is read: FastAPI parses
  a multipart body before any dependency runs, so without this an anonymous client could
  make the controller spool up to the upload limit to disk before its 401. The route still
  checks the role or the device itself.

:func:`body_limit` and :class:`TokenBuckets` are pure (the clock is passed in); the
middleware is the shell around them.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

JSON_MAX = 1024 * 1024  # bytes: every JSON body (rollout specs, cards, pins, tokens)
SAMPLE_MAX = 32 * 1024 * 1024  # bytes: one sample frame with its metadata
UPLOAD_ROUTES = (
    re.compile(r"^/v1/models/[^/]+/versions$"),  # model push (ONNX)
    re.compile(r"^/v1/models/[^/]+/signed$"),  # a publisher's signed push
    re.compile(r"^/v1/models/[^/]+/versions/[^/]+/plans$"),  # TensorRT plan push
    re.compile(r"^/v1/devices/[^/]+/plans$"),  # a device shares a plan it built
    re.compile(r"^/v1/datasets/[^/]+$"),  # a validation set (the gate's images, a tar)
)
SAMPLE_ROUTES = (re.compile(r"^/v1/samples$"),)
# Uploads a device makes with its own upload credential (from enrollment).
DEVICE_UPLOAD_ROUTES = (UPLOAD_ROUTES[3], *SAMPLE_ROUTES)
CREDENTIAL_ROUTES = (
    re.compile(r"^/v1/enroll$"),
    re.compile(r"^/v1/enroll-tokens$"),
    re.compile(r"^/v1/tokens(/.*)?$"),
    re.compile(r"^/v1/devices/[^/]+/certificate$"),  # renewal: a signature check, a CA sign
)
RATE_PER_S = 1.0  # requests per second per client on credential routes, after the burst
BURST = 20  # requests a client may make at once on credential routes
MAX_CLIENTS = 10_000  # buckets kept; the least recently seen are forgotten first

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def body_limit(method: str, path: str, upload_max: int) -> int:
    """The most bytes a request body on this route may carry."""
    if method not in ("POST", "PUT", "PATCH"):
        return JSON_MAX
    if any(r.match(path) for r in UPLOAD_ROUTES):
        return upload_max
    if any(r.match(path) for r in SAMPLE_ROUTES):
        return SAMPLE_MAX
    return JSON_MAX


def is_upload_route(method: str, path: str) -> bool:
    return method == "POST" and any(r.match(path) for r in (*UPLOAD_ROUTES, *SAMPLE_ROUTES))


def bearer_secret(authorization: str) -> str:
    """The secret of an ``Authorization: Bearer SECRET`` header, or ""."""
    scheme, _, secret = authorization.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def is_credential_route(method: str, path: str) -> bool:
    return method == "POST" and any(r.match(path) for r in CREDENTIAL_ROUTES)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per key (a client address); thread-safe, bounded in size."""

    def __init__(
        self,
        rate: float = RATE_PER_S,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_CLIENTS,
    ) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when the request may go; else the seconds until it may."""
        now = self.clock()
        with self._lock:
            b = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.rate)
            b.at = now
            self._buckets[key] = b
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate


class _TooLargeError(Exception):
    pass


class RequestLimits:
    """ASGI middleware: body limits per route, rate limits on credential routes."""

    def __init__(
        self,
        app: App,
        upload_max: int,
        buckets: TokenBuckets | None = None,
        holds_credential: Callable[[str], bool] | None = None,
    ) -> None:
        """``holds_credential(secret)`` (blocking: run on a worker thread) gates uploads
        before their body is read; None (no tokens required) lets them through."""
        self.app, self.upload_max = app, upload_max
        self.buckets = buckets or TokenBuckets()
        self.holds_credential = holds_credential

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if is_credential_route(method, path):
            client = scope.get("client") or ("unknown", 0)
            wait = self.buckets.take(str(client[0]))
            if wait > 0:
                await _answer(send, 429, "too many requests: slow down",
                              {"retry-after": str(math.ceil(wait))})  # fmt: skip
                return
        limit = body_limit(method, path, self.upload_max)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, f"request body over {limit} bytes for {path}")
            return
        gated = self.holds_credential is not None and is_upload_route(method, path)
        if gated and await self._refuse_upload(scope, send):
            return
        await self._guarded(scope, receive, send, limit, path)

    async def _refuse_upload(self, scope: Scope, send: Send) -> bool:
        """Answer an upload that holds no live credential (True), before its body is read:
        401, or 403 for a device's upload whose credential is not live (as the sample and
        plan-share routes answer it themselves)."""
        assert self.holds_credential is not None
        secret = bearer_secret(_header(scope, b"authorization"))
        if not secret:
            await _answer(send, 401, f"an upload to {scope['path']} needs an API token or the "
                          "device's upload credential (Authorization: Bearer)",
                          {"www-authenticate": "Bearer"})  # fmt: skip
            return True
        if await anyio.to_thread.run_sync(self.holds_credential, secret):
            return False
        if any(r.match(scope["path"]) for r in DEVICE_UPLOAD_ROUTES):
            await _answer(send, 403, "the upload credential is unknown or revoked")
        else:
            await _answer(send, 401, "unknown or revoked API token",
                          {"www-authenticate": "Bearer"})  # fmt: skip
        return True

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, limit: int, path: str
    ) -> None:
        seen = 0
        over = False  # the body passed the limit: whatever the app answers becomes a 413
        answered = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _TooLargeError  # the route stops reading; FastAPI may wrap it
            return message

        async def replaced(message: Message) -> None:
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:
                answered = True
                await _answer(send, 413, f"request body over {limit} bytes for {path}")

        try:
            await self.app(scope, counted, replaced)
        except _TooLargeError:
            if not answered:
                await _answer(send, 413, f"request body over {limit} bytes for {path}")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length"))
    except ValueError:
        return None


async def _answer(
    send: Send, status: int, detail: str, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
