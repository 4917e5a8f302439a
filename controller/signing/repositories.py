"""The facade the controller builds in ``main()``: both TUF repositories of one data dir.

Layout (served by the controller under ``/tuf/``)::

    DATA/keys/                                every signing key (skeleton, see keys.py)
    DATA/tuf/image/metadata/                  image repository
    DATA/tuf/director/<device_id>/metadata/   each device's director repository

With ``--tuf-store database`` the two ``metadata/`` trees are rows of the database
instead (storage.py), under the same names; the keys stay in ``DATA/keys/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from edgefleet.controller.signing.director_repo import DirectorRepository
from edgefleet.controller.signing.image_repo import ImageRepository
from edgefleet.controller.signing.keys import KeyStore
from edgefleet.controller.signing.storage import (
    IMAGE,
    Blob,
    DatabaseStore,
    FolderStore,
    MetadataStore,
    director_repo,
    import_folder,
)
from edgefleet.controller.signing.targets import TargetInfo
from edgefleet.shared.errors import NotFoundError, TrustError
from edgefleet.shared.topics import validate_device_id


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TufRepositories:
    """Image + director repositories of one controller data dir; safe to share across threads."""

    def __init__(
        self,
        data_dir: Path,
        clock: Callable[[], datetime] = utc_now,
        store: MetadataStore | None = None,  # None: files under DATA/tuf/
    ) -> None:
        self.data_dir = data_dir
        self.keys = KeyStore(data_dir / "keys")
        folder = FolderStore(data_dir / "tuf")
        if isinstance(store, DatabaseStore):  # `keys init` (or a folder-mode run) came first
            import_folder(folder, store)
        self.store: MetadataStore = store or folder
        self.image = ImageRepository(self.store, self.keys, clock)
        self.director = DirectorRepository(self.store, self.keys, clock)

    @property
    def image_metadata_dir(self) -> Path:
        """The image repository's folder (folder store only: tests, ceremonies)."""
        return self.data_dir / "tuf" / IMAGE

    def director_metadata_dir(self, device_id: str) -> Path:
        return self.data_dir / "tuf" / self.director.repo(device_id)

    def metadata_folder(self, repo: str) -> Path | None:
        """Where ``repo``'s files are on disk; None when they are in the database."""
        return self.store.root / repo if isinstance(self.store, FolderStore) else None

    def read_metadata(self, repo: str, name: str) -> Blob | None:
        """One metadata file of ``repo`` from the database store (blocks: a query)."""
        if not isinstance(self.store, DatabaseStore):
            raise TypeError("read_metadata is for the database store")
        return self.store.read(repo, name)

    def newest_root(self, repo: str) -> str:
        """The newest ``N.root.json`` of ``repo`` (a device's bootstrap root at enrollment)."""
        files = self.store.files(repo)
        versions = [int(n.split(".")[0]) for n in files.names()
                    if n.endswith(".root.json") and n.split(".")[0].isdigit()]  # fmt: skip
        data = files.read(f"{max(versions)}.root.json") if versions else None
        if data is None:
            raise NotFoundError(f"no root metadata in {files.where}")
        return data.decode()

    @staticmethod
    def image_repo() -> str:
        return IMAGE

    @staticmethod
    def director_repo(device_id: str) -> str:
        return director_repo(validate_device_id(device_id))

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
