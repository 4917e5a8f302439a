"""The director repository: which artifacts each device must run (Uptane's director).

One metadata chain per device (``director/<device_id>/metadata/`` of the metadata store:
``DATA/tuf/`` or the database, see storage.py), all signed
with the same online director keys, so a device only ever sees its own assignment and no
snapshot grows with the fleet. Every role here is online: targets, snapshot and timestamp
are re-signed by :meth:`DirectorRepository.refresh_online_roles` as they near expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

from edgefleet.controller.signing._chain import TOP_LEVEL, BatchWriter, MetadataChain
from edgefleet.controller.signing.keys import KeyStore
from edgefleet.controller.signing.storage import MetadataStore, device_of, director_repo
from edgefleet.controller.signing.targets import TargetInfo
from edgefleet.shared.errors import NotFoundError
from edgefleet.shared.topics import validate_device_id
from securesystemslib.signer import Signer
from tuf.api.metadata import Targets

ONLINE = frozenset({"targets", "snapshot", "timestamp"})


class DirectorRepository:
    """Per-device director metadata in one metadata store."""

    def __init__(self, store: MetadataStore, keys: KeyStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        # Shared with the image repository and the other controller processes on the store.
        self._lock = store.lock()
        self._signers: dict[str, Signer] = {r: keys.signer(f"director-{r}") for r in TOP_LEVEL}
        self._chains: dict[str, MetadataChain] = {}

    def repo(self, device_id: str) -> str:
        """The device's metadata folder under /tuf (``director/<device_id>/metadata``)."""
        return director_repo(validate_device_id(device_id))

    def ensure_device(self, device_id: str) -> int:
        """Create the device's chain (root + empty targets) if missing; its targets version."""
        with self._lock:
            return self._chain(device_id, create=True).version("targets")

    def ensure_devices(self, device_ids: Sequence[str]) -> dict[str, int]:
        """:meth:`ensure_device` for many devices under one lock hold, their new chains'
        files written and flushed together (``BatchWriter``); device -> targets version."""
        out: dict[str, int] = {}
        with self._batch() as (sink, touched):
            for device_id in device_ids:
                chain = self._chain(device_id, create=True, sink=sink)
                touched.append(chain)
                out[device_id] = chain.version("targets")
        return out

    def assign(self, device_id: str, targets: Sequence[TargetInfo]) -> int:
        """List exactly ``targets`` for the device; returns the director targets version.

        Assigning what is already listed re-signs nothing and returns the current version.
        """
        return self.assign_many({device_id: targets})[device_id]

    def assign_many(self, assignments: Mapping[str, Sequence[TargetInfo]]) -> dict[str, int]:
        """:meth:`assign` for many devices under one lock hold, with the files of all of
        them written and flushed together (see ``BatchWriter``); device -> version."""
        out: dict[str, int] = {}
        with self._batch() as (sink, touched):
            for device_id, targets in assignments.items():
                chain = self._chain(device_id, create=True, sink=sink)
                chain.sink = sink
                touched.append(chain)
                out[device_id] = self._replace(chain, targets)
        return out

    @contextmanager
    def _batch(self) -> Iterator[tuple[BatchWriter, list[MetadataChain]]]:
        """One lock hold and one flush for every chain the block touches; on an error the
        touched chains are dropped from memory (signed, maybe never written) and re-read."""
        sink = BatchWriter(self._store.background_prune)
        touched: list[MetadataChain] = []
        with self._lock:
            try:
                yield sink, touched
                sink.flush()
            except BaseException:
                for device_id in [d for d, c in self._chains.items() if c in touched]:
                    del self._chains[device_id]
                raise
            finally:
                for chain in touched:
                    chain.sink = None

    def _replace(self, chain: MetadataChain, targets: Sequence[TargetInfo]) -> int:
        wanted = {t.target_path: t.director_target_file() for t in targets}
        current = chain.targets().targets
        if {p: t.to_dict() for p, t in current.items()} == {
            p: t.to_dict() for p, t in wanted.items()
        }:
            return chain.version("targets")

        def replace(signed: Targets) -> None:
            signed.targets = wanted

        return chain.update_targets("targets", self._clock(), replace)

    def director_version(self, device_id: str) -> int:
        """The device's current director targets version (NotFoundError if it has none)."""
        with self._lock:
            return self._chain(device_id, create=False).version("targets")

    def assigned(self, device_id: str) -> list[TargetInfo]:
        with self._lock:
            listed = self._chain(device_id, create=False).targets().targets.values()
        return [TargetInfo.from_target_file(t) for t in listed]

    def devices(self) -> list[str]:
        return sorted(d for r in self._store.device_repos() if (d := device_of(r)) is not None)

    def refresh_online_roles(self, now: datetime) -> dict[str, list[str]]:
        """Re-sign every device's roles that are within half their lifetime of expiry."""
        refreshed = {}
        for device_id in self.devices():
            with self._lock:
                roles = self._chain(device_id, create=False).refresh_online(now)
            if roles:
                refreshed[device_id] = roles
        return refreshed

    def _chain(
        self, device_id: str, *, create: bool, sink: BatchWriter | None = None
    ) -> MetadataChain:
        chain = self._chains.get(device_id)
        if chain is not None:
            chain.refresh_from_disk()  # another controller process may have assigned since
            return chain
        files = self._store.files(self.repo(device_id))
        chain = MetadataChain(files, self._signers, ONLINE, prune=True)
        if files.stamp() is not None:
            chain.load()
        elif create:
            chain.sink = sink
            chain.create(self._clock(), {})
        else:
            raise NotFoundError(f"no director metadata for device {device_id}", device_id=device_id)
        self._chains[device_id] = chain
        return chain
