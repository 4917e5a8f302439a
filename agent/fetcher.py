"""python-tuf's download seam on urllib3, with a deadline per download and optional mTLS.

``fetch(url)`` is bounded three ways: the connect timeout, the longest gap between two
received bytes (``timeout_s``), and an overall deadline for the whole body
(``deadline_s``), so a server trickling one byte a second cannot hold the agent forever.
The deadline is checked between chunks: a download may overrun it by at most one gap.
Errors become the DownloadError variants ``FetcherInterface`` promises.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from edgefleet import __version__


@dataclass(frozen=True)
class FetcherConfig:
    deadline_s: float = 300.0  # seconds for one whole download, request to last byte
    timeout_s: float = 30.0  # seconds to connect, and the longest gap between bytes
    ca_bundle: Path | None = None  # PEM CA bundle; None: the system's trust store
    client_cert: Path | None = None  # PEM client certificate for mTLS
    client_key: Path | None = None  # PEM key of client_cert; None: inside client_cert
    chunk_size: int = 256 * 1024  # bytes per read


class DeadlineFetcher(FetcherInterface):
    """Urllib3 fetcher whose every download has a deadline; one pool per instance."""

    def __init__(self, config: FetcherConfig | None = None) -> None:
        self.config = config or FetcherConfig()
        c = self.config
        self._pool = urllib3.PoolManager(
            ca_certs=str(c.ca_bundle) if c.ca_bundle else None,
            cert_reqs="CERT_REQUIRED",
            cert_file=str(c.client_cert) if c.client_cert else None,
            key_file=str(c.client_key) if c.client_key else None,
            headers={"User-Agent": f"edgefleet-agent/{__version__}"},
            retries=False,  # the agent's reconcile loop retries, with backoff
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        deadline = time.monotonic() + self.config.deadline_s
        timeout = min(self.config.timeout_s, self.config.deadline_s)
        try:
            response = self._pool.request(
                "GET",
                url,
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
        if response.status >= 400:
            response.close()  # the error body stays unread: the connection is spent
            raise exceptions.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return self._chunks(response, url, deadline)

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
