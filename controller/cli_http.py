"""The operator CLI's HTTP to the controller: $EDGEFLEET_URL with $EDGEFLEET_TOKEN, one-line
errors from the controller's ``detail``, and who acts for the audit log."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from edgefleet.shared.errors import ConfigError, EdgefleetError, TransportError

DEFAULT_URL = "http://127.0.0.1:8600"
TIMEOUT = httpx.Timeout(30.0, read=600.0)  # seconds; signing a large upload takes a while


def controller_url() -> str:
    return os.environ.get("EDGEFLEET_URL", DEFAULT_URL).rstrip("/")


@contextmanager
def controller_client() -> Iterator[httpx.Client]:
    url = controller_url()
    token = os.environ.get("EDGEFLEET_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT, headers=headers) as client:
            yield client
    except httpx.TransportError as e:
        raise TransportError(
            f"cannot reach the controller at {url}: {e or type(e).__name__}"
        ) from e
    except httpx.InvalidURL as e:
        raise ConfigError(f"bad EDGEFLEET_URL {url!r}: {e}") from e


def check_response(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = f"{response.status_code} {response.reason_phrase}"
    raise EdgefleetError(" ".join(detail.split()))


def request(method: str, path: str, **kwargs: Any) -> Any:
    with controller_client() as client:
        return check_response(client.request(method, path, **kwargs))


def actor_header() -> dict[str, str]:
    """Who acts, for the audit log when the controller runs without --auth (with it, the
    audit log names the EDGEFLEET_TOKEN's token instead)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return {"X-Edgefleet-Actor": user}
