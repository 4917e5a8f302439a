"""The seam between the controller service and its TUF repositories.

:class:`Signing` is what the routes and the ingest need; :class:`TufSigning` adapts
``edgefleet.controller.signing.TufRepositories`` to it, so changes inside the signing
package stay out of the service code.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgefleet.controller.signing import TargetInfo, TufRepositories
    from edgefleet.controller.signing.storage import Blob
    from sqlalchemy.engine import Engine


class Signing(Protocol):
    def add_model_target(
        self,
        name: str,
        version: str,
        release: int,
        artifact_path: Path,
        *,
        format: str = "onnx",
        fingerprint: dict[str, Any] | None = None,
        model_info: dict[str, Any] | None = None,
    ) -> TargetInfo: ...

    def target(self, target_path: str) -> TargetInfo: ...

    def ensure_device(self, device_id: str) -> int: ...

    def ensure_devices(self, device_ids: list[str]) -> dict[str, int]: ...

    def assign(self, device_id: str, targets: list[TargetInfo]) -> int: ...

    def assign_many(self, assignments: dict[str, list[TargetInfo]]) -> dict[str, int]: ...

    def refresh_online_roles(self, now: datetime) -> None: ...

    def image_repo(self) -> str: ...

    def director_repo(self, device_id: str) -> str: ...

    def metadata_folder(self, repo: str) -> Path | None: ...

    def read_metadata(self, repo: str, name: str) -> Blob | None: ...

    def newest_root(self, repo: str) -> str: ...


class TufSigning:
    """Both repositories of one data folder, behind :class:`Signing`."""

    def __init__(self, repos: TufRepositories) -> None:
        self.repos = repos

    @classmethod
    def open(
        cls, data_dir: Path, database: Engine | None = None, lock_database: Engine | None = None
    ) -> TufSigning:
        """The repositories of ``data_dir``; their metadata in ``database`` when given
        (the signing lock's connection from ``lock_database``, a pool of its own)."""
        from edgefleet.controller.signing import TufRepositories
        from edgefleet.controller.signing.storage import DatabaseStore

        store = DatabaseStore(database, lock_database) if database is not None else None
        return cls(TufRepositories(data_dir, store=store))

    def add_model_target(
        self,
        name: str,
        version: str,
        release: int,
        artifact_path: Path,
        format: str = "onnx",
        **extra: Any,
    ) -> TargetInfo:
        return self.repos.image.add_model_target(
            name, version, release, artifact_path, format=format, **extra
        )

    def target(self, target_path: str) -> TargetInfo:
        return self.repos.image.target(target_path)

    def ensure_device(self, device_id: str) -> int:
        return self.repos.director.ensure_device(device_id)

    def ensure_devices(self, device_ids: list[str]) -> dict[str, int]:
        return self.repos.director.ensure_devices(device_ids)

    def assign(self, device_id: str, targets: list[TargetInfo]) -> int:
        return self.repos.assign(device_id, targets)

    def assign_many(self, assignments: dict[str, list[TargetInfo]]) -> dict[str, int]:
        return dict(self.repos.assign_many(assignments))

    def refresh_online_roles(self, now: datetime) -> None:
        self.repos.refresh_online_roles(now)

    def image_repo(self) -> str:
        return self.repos.image_repo()

    def director_repo(self, device_id: str) -> str:
        return self.repos.director_repo(device_id)

    def metadata_folder(self, repo: str) -> Path | None:
        return self.repos.metadata_folder(repo)

    def read_metadata(self, repo: str, name: str) -> Blob | None:
        return self.repos.read_metadata(repo, name)

    def newest_root(self, repo: str) -> str:
        return self.repos.newest_root(repo)
