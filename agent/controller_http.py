"""The agent's plain HTTP(S) calls to the controller (model cards, sample uploads).

One urllib3 pool, a timeout on every request, the device id in a header and, once the
device is enrolled, its credential (``Authorization: Bearer``: a controller with auth on
answers the agent's reads only to an enrolled device); a connection problem becomes
:class:`TransportError` so callers retry later instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from edgefleet.shared.errors import TransportError

DEVICE_HEADER = "X-Edgefleet-Device"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; {} when it is not one."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def detail(self) -> str:
        """The controller's one-line error, else the status."""
        detail = self.json().get("detail")
        return detail if isinstance(detail, str) else f"HTTP {self.status}"


class ControllerHttp:
    def __init__(
        self,
        base_url: str,
        device_id: str,
        *,
        timeout_s: float = 10.0,  # seconds to connect and between bytes
        ca_bundle: Path | None = None,  # PEM; None: the system's trust store
        client_cert: Path | None = None,  # PEM for mTLS
        client_key: Path | None = None,
        observer: Callable[[str, int], None] | None = None,  # (path, status); benchmarks
        credential: str | None = None,  # the device's credential from enrollment
    ) -> None:
        self.observer = observer
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self._auth = {"Authorization": f"Bearer {credential}"} if credential else {}
        kwargs: dict[str, Any] = {}
        if ca_bundle:
            kwargs["ca_certs"] = str(ca_bundle)
        if client_cert:
            kwargs["cert_file"] = str(client_cert)
            kwargs["key_file"] = str(client_key) if client_key else None
        self._pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
            **kwargs,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {DEVICE_HEADER: self.device_id, **self._auth, **kwargs.pop("headers", {})}
        try:
            r = self._pool.request(method, self.base_url + path, headers=headers, **kwargs)
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"controller {self.base_url} unreachable: {e}") from e
        if self.observer is not None:
            self.observer(path, r.status)
        return Answer(r.status, r.data, {k.lower(): v for k, v in r.headers.items()})

    def close(self) -> None:
        self._pool.clear()
