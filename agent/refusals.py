"""Artifacts this device refused, and when it may try each again.

A refusal (bad hash, bad signature, a model that will not load) used to last until an
operator command: a controller that fixed the artifact's metadata, or a broken USB stick
that corrupted one download, left the device off the rollout for good. Now a refused
artifact is tried again after a backoff that doubles per refusal (5 minutes up to 6
hours), at once when the controller signs a new release of it or a new director version
for this device, and at once on a ``refresh`` command (``edgefleet device refresh ID``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

RETRY_MIN_S = 300.0  # seconds before a refused artifact is tried again the first time
RETRY_MAX_S = 6 * 3600.0  # seconds between tries at most
MAX_KEPT = 32  # refusals remembered; the oldest are forgotten (tried again) first


@dataclass(frozen=True)
class Refusal:
    reason: str
    release: int  # the release that was refused; a new one is tried at once
    director_version: int | None  # the director version it came with
    attempts: int  # refusals in a row of this artifact at this release
    retry_at: float  # clock seconds


class RefusalBook:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.clock = clock
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._by_sha: dict[str, Refusal] = {}
        self.director_version: int | None = None  # newest announced to this device

    def __len__(self) -> int:
        return len(self._by_sha)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._by_sha

    def get(self, sha256: str) -> Refusal | None:
        return self._by_sha.get(sha256)

    def refuse(self, sha256: str, release: int, reason: str) -> Refusal:
        before = self._by_sha.pop(sha256, None)
        attempts = before.attempts + 1 if before and before.release == release else 1
        wait = min(self.retry_max_s, self.retry_min_s * 2.0 ** (attempts - 1))
        refusal = Refusal(reason, release, self.director_version, attempts, self.clock() + wait)
        self._by_sha[sha256] = refusal
        while len(self._by_sha) > MAX_KEPT:
            del self._by_sha[next(iter(self._by_sha))]
        return refusal

    def may_try(self, sha256: str, release: int) -> bool:
        """True unless this artifact was refused and nothing since warrants a new try."""
        refusal = self._by_sha.get(sha256)
        if refusal is None or refusal.release != release:
            return True
        newer_director = self.director_version is not None and (
            refusal.director_version is None or self.director_version > refusal.director_version
        )
        return newer_director or self.clock() >= refusal.retry_at

    def announced(self, director_version: int | None) -> None:
        """A ``desired`` hint named this director version."""
        if director_version is not None:
            self.director_version = max(self.director_version or 0, director_version)

    def forget(self, sha256: str) -> None:
        self._by_sha.pop(sha256, None)

    def clear(self) -> None:
        self._by_sha.clear()
