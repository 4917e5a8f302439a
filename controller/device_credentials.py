"""Which enrolled device a credential (``efu_...``, issued at enrollment) belongs to.

Every idle device polls its director metadata and the image repository's timestamp with
that credential, so the answer is kept in memory for ``ttl`` seconds instead of costing a
database read per poll. What the cache can delay: a re-enrolled device's *old* credential
stays good for at most ``ttl``. What it cannot delay: revocation, which the callers check
against :class:`~edgefleet.controller.enrollment.RevokedDevices` on every request (the
revoking process updates that set at once) besides the ``revoked_at`` read here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.controller.enrollment import UPLOAD_PREFIX
from edgefleet.controller.models.devices import UploadCredential
from edgefleet.controller.tokens import digest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select


@dataclass(frozen=True)
class DeviceOf:
    """A known credential: whose it is, and whether the device was revoked."""

    device_id: str
    revoked: bool


class _Miss:
    """Not in the cache (distinct from a cached "unknown credential", None)."""


MISS = _Miss()


class DeviceCredentials:
    """``digest(secret) -> DeviceOf | None``, each answer kept ``ttl`` seconds."""

    def __init__(
        self,
        engine: Engine,
        ttl: float = 30.0,  # seconds an answer is reused
        max_entries: int = 100_000,  # past this the cache starts over (a flood of bad secrets)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()  # guards the dict only, no I/O under it
        self._known: dict[str, tuple[DeviceOf | None, float]] = {}

    @staticmethod
    def looks_like(secret: str) -> bool:
        return secret.startswith(UPLOAD_PREFIX)

    def cached(self, secret: str) -> DeviceOf | _Miss | None:
        """The cached answer, or MISS; never touches the database (safe on the event loop)."""
        with self._lock:
            entry = self._known.get(digest(secret))
        if entry is None or self._clock() - entry[1] > self._ttl:
            return MISS
        return entry[0]

    def lookup(self, secret: str) -> DeviceOf | None:
        """The cached answer, else one database read (blocking: call it off the event loop)."""
        hit = self.cached(secret)
        if not isinstance(hit, _Miss):
            return hit
        key = digest(secret)
        with Session(self._engine) as session:
            row = session.exec(select(UploadCredential).where(UploadCredential.sha256 == key))
            cred = row.first()
            found = None if cred is None else DeviceOf(cred.device_id, cred.revoked_at is not None)
        with self._lock:
            if len(self._known) >= self._max:
                self._known.clear()
            self._known[key] = (found, self._clock())
        return found
