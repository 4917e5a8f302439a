"""python-tuf's download seam on urllib3, with a deadline per download and optional mTLS.

``fetch(url)`` is bounded three ways: the connect timeout, the longest gap between two
received bytes (``timeout_s``), and an overall deadline for the whole body
(``deadline_s``), so a server trickling one byte a second cannot hold the agent forever.
The deadline is checked between chunks: a download may overrun it by at most one gap.
Errors become the DownloadError variants ``FetcherInterface`` promises.

Besides ngclient's seam, two plain-HTTP savings the controller offers (RFC 9110):

* :meth:`DeadlineFetcher.fetch_conditional`: ``If-None-Match`` with the last ETag, so an
  unchanged file costs a 304 and no body;
* :meth:`DeadlineFetcher.download_resumable`: a partial file on disk is continued with
  ``Range: bytes=N-``; a server that ignores Range (200) restarts it from byte 0. The
  caller verifies the whole file's length and hashes afterwards, so a resumed file is
  trusted exactly as much as a fresh one.

A busy controller answers 503 (or 429) with ``Retry-After``: every request waits that long
plus exponential backoff with full jitter, for at most ``busy_budget_s`` of waiting in
all, then gives up with ``DownloadHTTPError`` (the updater's TransportError); the agent
keeps serving its current model meanwhile.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from edgefleet import __version__

BUSY = (429, 503)  # "come back later": retried after Retry-After and backoff
REDIRECTS = (301, 302, 303, 307, 308)  # followed once (a presigned artifact URL)


@dataclass(frozen=True)
class FetcherConfig:
    deadline_s: float = 300.0  # seconds for one whole download, request to last byte
    timeout_s: float = 30.0  # seconds to connect, and the longest gap between bytes
    ca_bundle: Path | None = None  # PEM CA bundle; None: the system's trust store
    client_cert: Path | None = None  # PEM client certificate for mTLS
    client_key: Path | None = None  # PEM key of client_cert; None: inside client_cert
    chunk_size: int = 256 * 1024  # bytes per read
    busy_budget_s: float = 120.0  # seconds of 503/429 answers to sit out per request
    backoff_base_s: float = 1.0  # seconds: the first backoff's upper bound
    backoff_cap_s: float = 60.0  # seconds: no single backoff draws above this
    retry_after_max_s: float = 300.0  # seconds: a larger Retry-After is read as this
    rate_bps: float | None = None  # test-only: bytes per second a model download is held to
    credential: str | None = None  # the device's credential (Bearer) from enrollment


@dataclass(frozen=True)
class Conditional:
    """The answer to a conditional GET: 304 (``body`` empty) or 200 with the body."""

    status: int
    body: bytes
    etag: str | None


Observer = Callable[[str, int], None]  # (url, HTTP status) of every answer; for benchmarks


def busy_wait_s(
    attempt: int, retry_after_s: float | None, config: FetcherConfig, rng: random.Random
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based) of a busy answer.

    Full jitter (uniform in [0, min(cap, base * 2**attempt)]) spreads a fleet that was
    refused at the same moment; Retry-After, when given, is a floor under it.
    """
    jitter = rng.uniform(0.0, min(config.backoff_cap_s, config.backoff_base_s * 2**attempt))
    floor = min(retry_after_s, config.retry_after_max_s) if retry_after_s is not None else 0.0
    return floor + jitter


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from ``now`` (epoch seconds): delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _headers(credential: str | None) -> dict[str, str]:
    """Sent with every request; the credential is what a controller with auth on asks of a
    device before it serves /tuf (TUF still verifies every byte: it is not trust)."""
    headers = {"User-Agent": f"edgefleet-agent/{__version__}"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


class DeadlineFetcher(FetcherInterface):
    """Urllib3 fetcher whose every download has a deadline; one pool per instance."""

    def __init__(
        self,
        config: FetcherConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or FetcherConfig()
        self._sleep, self._rng, self._observer = sleep, rng or random.Random(), observer
        c = self.config
        self._pool = urllib3.PoolManager(
            ca_certs=str(c.ca_bundle) if c.ca_bundle else None,
            cert_reqs="CERT_REQUIRED",
            cert_file=str(c.client_cert) if c.client_cert else None,
            key_file=str(c.client_key) if c.client_key else None,
            headers=_headers(c.credential),
            retries=False,  # busy answers are retried below; the reconcile loop does the rest
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        deadline = time.monotonic() + self.config.deadline_s
        response = self._request(url, {})
        return self._chunks(response, url, deadline)

    def fetch_conditional(self, url: str, etag: str | None, max_length: int) -> Conditional:
        """GET ``url`` with ``If-None-Match: etag``; a 304 carries no body."""
        deadline = time.monotonic() + self.config.deadline_s
        response = self._request(url, {"If-None-Match": etag} if etag else {})
        if response.status == 304:
            response.release_conn()
            return Conditional(304, b"", response.headers.get("ETag") or etag)
        body = bytearray()
        for chunk in self._chunks(response, url, deadline):
            body += chunk
            if len(body) > max_length:
                raise exceptions.DownloadLengthMismatchError(f"{url} is over {max_length} bytes")
        return Conditional(response.status, bytes(body), response.headers.get("ETag"))

    def download_resumable(self, url: str, part: Path, length: int) -> None:
        """Bring ``part`` to ``length`` bytes of ``url``, continuing what is already there.

        The bytes written are fsync'd even when the download breaks off, so the next try
        (after a lost connection, a deadline, or a reboot) asks only for the rest.
        """
        have = part.stat().st_size if part.exists() else 0
        if have > length:
            have = 0  # not a prefix of this target: start over
        if have == length:
            return
        deadline = time.monotonic() + self.config.deadline_s
        response = self._request(url, {"Range": f"bytes={have}-"} if have else {})
        if response.status == 206 and not _continues_at(response, have):
            response.close()
            raise exceptions.DownloadError(f"{url}: the server sent another range than asked")
        if response.status != 206:
            have = 0  # the server ignored Range and sends the whole file
        started, start_at = time.monotonic(), have
        with part.open("r+b" if have else "wb") as f:
            f.seek(have)
            f.truncate()
            try:
                for chunk in self._chunks(response, url, deadline):
                    self._throttle(have - start_at, started)
                    have += len(chunk)
                    if have > length:
                        raise exceptions.DownloadLengthMismatchError(
                            f"{url} is over {length} bytes"
                        )
                    f.write(chunk)
            finally:
                f.flush()
                os.fsync(f.fileno())

    def _throttle(self, sent: int, started: float) -> None:
        """Hold a download to ``rate_bps`` (tests kill a controller mid-download)."""
        rate = self.config.rate_bps
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                self._sleep(ahead)

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        """One GET, retried while the server says it is busy; errors as DownloadError."""
        waited, attempt = 0.0, 0
        while True:
            response = self._follow(url, headers, self._send(url, headers))
            if response.status not in BUSY:
                break
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            response.close()
            wait = busy_wait_s(attempt, retry_after, self.config, self._rng)
            if waited + wait > self.config.busy_budget_s:
                raise exceptions.DownloadHTTPError(
                    f"HTTP {response.status} for {url}: controller busy for "
                    f"{self.config.busy_budget_s:g} s",
                    response.status,
                )
            self._sleep(wait)
            waited, attempt = waited + wait, attempt + 1
        if response.status >= 400:
            response.close()  # the error body stays unread: the connection is spent
            raise exceptions.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return response

    def _follow(
        self, url: str, headers: dict[str, str], response: urllib3.BaseHTTPResponse
    ) -> urllib3.BaseHTTPResponse:
        """One redirect hop (a controller with an S3 artifact store sends a presigned URL),
        without the device credential: the store is not the controller, and TUF verifies
        what it sends."""
        location = response.headers.get("Location")
        if response.status not in REDIRECTS or not location:
            return response
        response.close()
        target = urljoin(url, location)
        if urlsplit(target).scheme not in ("http", "https"):
            raise exceptions.DownloadError(f"{url} redirects to {target!r}")
        return self._send(target, headers, credential=False)

    def _send(
        self, url: str, headers: dict[str, str], *, credential: bool = True
    ) -> urllib3.BaseHTTPResponse:
        timeout = min(self.config.timeout_s, self.config.deadline_s)
        # urllib3 sends either the pool's headers or the ones given, never both: merge them,
        # or a conditional poll or a resumed download would go without the credential.
        sent = {**_headers(self.config.credential if credential else None), **headers}
        try:
            response = self._pool.request(
                "GET",
                url,
                headers=sent,
                preload_content=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
            )
        except urllib3.exceptions.NewConnectionError as e:
            # before TimeoutError: urllib3 makes "refused" a subclass of connect timeout
            raise exceptions.DownloadError(f"cannot connect to {url}") from e
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError(f"timed out connecting to {url}") from e
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(f"cannot reach {url}: {type(e).__name__}") from e
        if self._observer is not None:
            self._observer(url, response.status)
        return response

    def _chunks(
        self, response: urllib3.BaseHTTPResponse, url: str, deadline: float
    ) -> Iterator[bytes]:
        complete = False
        try:
            # read1: whatever one recv brings (up to chunk_size), so the deadline is
            # checked after every packet; stream() would wait to fill a whole chunk.
            while chunk := response.read1(self.config.chunk_size):
                if time.monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(
                        f"{url} took longer than {self.config.deadline_s:g} s"
                    )
                yield chunk
            complete = True
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError(f"{url} stalled") from e
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(f"{url} broke off: {type(e).__name__}") from e
        finally:
            # A connection with unread bytes on it cannot be reused: close it.
            if complete:
                response.release_conn()
            else:
                response.close()

    def close(self) -> None:
        self._pool.clear()


def _continues_at(response: urllib3.BaseHTTPResponse, offset: int) -> bool:
    """Does a 206 answer hold the bytes from ``offset`` on (``Content-Range: bytes N-``)?"""
    unit, _, spec = (response.headers.get("Content-Range") or "").partition(" ")
    return unit == "bytes" and spec.startswith(f"{offset}-")
