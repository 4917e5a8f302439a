"""Files served like a static server: the /tuf metadata and artifacts.

What a client sees is plain HTTP (agent/updater.py relies on exactly this):

- ``ETag`` on every file, ``If-None-Match`` -> ``304 Not Modified`` (an unchanged poll);
- ``Range: bytes=A-B`` -> ``206 Partial Content`` (an interrupted download resumes),
  ``416`` when unsatisfiable, ``If-Range`` honoured; several ranges get the whole file;
- over the download limit -> ``503 Service Unavailable`` with ``Retry-After: SECONDS``.

Why not Starlette's FileResponse: it has no ``If-None-Match``, and it reads each chunk on
the request threadpool, the pool a stuck database can fill; here reads go through a small
limiter of their own, every send has a stall timeout, and no database session is open
(the route closed it before this response is sent, see deps.SessionDep). With
``offload_prefix`` set the controller only decides *which* file (and that it is a
registered one) and nginx sends it (``X-Accel-Redirect``, sendfile; deploy/nginx/).
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes per read and per send
INLINE_READ = 64 * 1024  # bytes read on the event loop itself (TUF metadata is smaller)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class FileServing:
    """How the app sends files; built once in create_app from the settings."""

    data_dir: Path
    max_downloads: int = 256  # artifact downloads at once; more get 503
    retry_after: int = 10  # seconds, the 503's Retry-After
    stall_timeout: float = 60.0  # seconds one send may wait on a client that does not read
    read_threads: int = 8  # file reads at once (their own limiter, not the request pool)
    offload_prefix: str | None = None  # e.g. "/_edgefleet_data": nginx sends the file
    active: int = 0  # artifact downloads being sent (touched on the event loop only)
    _limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)

    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made on the event loop, on first use
            self._limiter = anyio.CapacityLimiter(self.read_threads)
        return self._limiter


async def file_serving(request: Request) -> FileServing:  # async: no threadpool trip
    serving: FileServing = request.app.state.files
    return serving


def metadata_etag(st: os.stat_result) -> str:
    # os.replace gives a re-signed file a new inode; mtime_ns and size catch the rest.
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def if_none_match(header: str | None, etag: str) -> bool:
    """The request's If-None-Match names ``etag``: answer 304."""
    return header is not None and _matches(header, etag)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match uses."""
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in {t.removeprefix("W/") for t in tags}


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=A-B`` -> [start, end) or None (serve the whole file); ValueError = 416."""
    found = _RANGE.match(header.strip())
    if found is None:  # malformed or several ranges: RFC 9110 lets us ignore Range
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise ValueError("range not satisfiable")
    return start, end


class StaticFile(Response):
    """One file, sent with the semantics in the module docstring."""

    def __init__(  # noqa: PLR0917 - one value per header it decides
        self,
        path: Path,
        st: os.stat_result,
        etag: str,
        serving: FileServing,
        media_type: str,
        counted: bool = False,  # True: an artifact download, under the download limit
        headers: dict[str, str] | None = None,
    ) -> None:
        if not stat_mod.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a file")
        self.path, self.st, self.etag, self.serving = path, st, etag, serving
        self.counted = counted
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.body = b""
        self.init_headers(headers)
        self.headers["etag"] = etag
        self.headers["last-modified"] = formatdate(st.st_mtime, usegmt=True)
        self.headers["accept-ranges"] = "bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Headers(scope=scope)
        inm = request.get("if-none-match")
        if inm is not None and _matches(inm, self.etag):
            del self.headers["content-type"], self.headers["content-length"]
            return await self._headers_only(send, 304)
        if self.serving.offload_prefix:
            return await self._offload(send)
        if self.counted and self.serving.active >= self.serving.max_downloads:
            retry = {"retry-after": str(self.serving.retry_after)}
            return await _plain(send, 503, b"too many downloads, retry later\n", retry)
        if self.counted:
            self.serving.active += 1
        try:
            await self._send_file(scope, receive, send, request)
        finally:
            if self.counted:
                self.serving.active -= 1

    async def _send_file(self, scope: Scope, receive: Receive, send: Send, req: Headers) -> None:
        size = self.st.st_size
        span, status = (0, size), 200
        if "range" in req and self._range_applies(req.get("if-range")):
            try:
                found = parse_range(req["range"], size)
            except ValueError:
                return await _plain(send, 416, b"", {"content-range": f"bytes */{size}"})
            if found is not None:
                span, status = found, 206
                self.headers["content-range"] = f"bytes {found[0]}-{found[1] - 1}/{size}"
        self.headers["content-length"] = str(span[1] - span[0])
        if scope["method"] == "HEAD":
            return await self._headers_only(send, status)
        await send({"type": "http.response.start", "status": status, "headers": self.raw_headers})
        if status == 200 and "http.response.pathsend" in scope.get("extensions", {}):
            await send({"type": "http.response.pathsend", "path": str(self.path)})
            return None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await self._stream(send, *span)
                tg.cancel_scope.cancel()
        except TimeoutError:  # the ASGI server closes the connection of an unfinished response
            log.info("dropped a download of %s: the client read nothing for %.0f s",
                     self.path.name, self.serving.stall_timeout)  # fmt: skip
        return None

    def _range_applies(self, if_range: str | None) -> bool:
        return if_range is None or if_range.strip() == self.etag

    async def _stream(self, send: Send, start: int, end: int) -> None:
        limiter = self.serving.limiter()
        fd = os.open(self.path, os.O_RDONLY)  # the route's stat just read its inode: no wait
        try:
            now = os.fstat(fd)
            if (now.st_ino, now.st_size) != (self.st.st_ino, self.st.st_size):
                # Replaced (re-signed metadata) since the headers were made: cut the response
                # rather than send bytes that do not match them; the client retries. One log
                # line, not an exception: another replica re-signing is routine.
                log.info("%s was replaced while being sent: response cut", self.path.name)
                return
            while start < end:
                n = min(CHUNK, end - start)
                if end - start <= INLINE_READ:
                    # Metadata and the tail of a file: one read of a few pages that the
                    # route's stat just touched, cheaper here than a trip to a thread.
                    chunk = os.pread(fd, n, start)
                else:
                    chunk = await anyio.to_thread.run_sync(os.pread, fd, n, start,
                                                           limiter=limiter)  # fmt: skip
                if not chunk:
                    raise OSError(f"{self.path} is shorter than its size")
                start += len(chunk)
                # A client that stops reading is dropped after stall_timeout seconds.
                with anyio.fail_after(self.serving.stall_timeout):
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": start < end})  # fmt: skip
        finally:
            os.close(fd)

    async def _offload(self, send: Send) -> None:
        prefix = (self.serving.offload_prefix or "").rstrip("/")
        relative = self.path.resolve().relative_to(self.serving.data_dir.resolve())
        self.headers["x-accel-redirect"] = f"{prefix}/{quote(relative.as_posix())}"
        del self.headers["etag"], self.headers["last-modified"]  # nginx sets its own
        self.headers["content-length"] = "0"
        await self._headers_only(send, 200)

    async def _headers_only(self, send: Send, status: int) -> None:
        await send({"type": "http.response.start", "status": status, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _plain(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw: list[Any] = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"content-length", str(len(body)).encode()), (b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
