"""The facade the controller builds in ``main()``: both TUF repositories of one data dir.

Layout (served by the controller under ``/tuf/``)::

    DATA/keys/                                every signing key (skeleton, see keys.py)
    DATA/tuf/image/metadata/                  image repository
    DATA/tuf/director/<device_id>/metadata/   each device's director repository
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from edgefleet.controller.signing.director_repo import DirectorRepository
from edgefleet.controller.signing.image_repo import ImageRepository
from edgefleet.controller.signing.keys import KeyStore
from edgefleet.controller.signing.targets import TargetInfo
from edgefleet.shared.errors import TrustError


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TufRepositories:
    """Image + director repositories of one controller data dir; safe to share across threads."""

    def __init__(self, data_dir: Path, clock: Callable[[], datetime] = utc_now) -> None:
        self.data_dir = data_dir
        self.keys = KeyStore(data_dir / "keys")
        self.image = ImageRepository(data_dir / "tuf" / "image" / "metadata", self.keys, clock)
        self.director = DirectorRepository(data_dir / "tuf" / "director", self.keys, clock)

    @property
    def image_metadata_dir(self) -> Path:
        return self.image.metadata_dir

    def director_metadata_dir(self, device_id: str) -> Path:
        return self.director.metadata_dir(device_id)

    def assign(self, device_id: str, targets: Sequence[TargetInfo]) -> int:
        """Director assignment, refused unless the image repo signed exactly these targets."""
        return self.assign_many({device_id: targets})[device_id]

    def assign_many(self, assignments: Mapping[str, Sequence[TargetInfo]]) -> dict[str, int]:
        """:meth:`assign` for many devices in one batch (one lock hold, two flushes)."""
        checked: set[str] = set()  # a stage assigns one or two targets to every device
        for targets in assignments.values():
            for t in targets:
                key = repr(t)
                if key in checked:
                    continue
                # The same artifact; what only the director adds (a shadow request) aside.
                if self.image.target(t.target_path) != dataclasses.replace(t, shadow=None):
                    raise TrustError(f"{t.target_path} differs from the image repository's target")
                checked.add(key)
        return self.director.assign_many(assignments)

    def refresh_online_roles(self, now: datetime | None = None) -> None:
        """Re-sign image snapshot/timestamp and every director chain that nears expiry."""
        now = now or utc_now()
        self.image.refresh_online_roles(now)
        self.director.refresh_online_roles(now)
