"""One TUF repository: a folder (or its rows in the database) of consistent-snapshot
metadata files.

File names follow the TUF spec for consistent snapshots: ``N.root.json``,
``N.targets.json``, ``N.<delegated>.json``, ``N.snapshot.json`` and an unversioned
``timestamp.json``. Old versions stay, so a client in the middle of a refresh still finds
the snapshot its timestamp named. Files are written leaves first and ``timestamp.json``
last: until the timestamp lands, clients see the previous, complete repository.

Several controller processes may share the metadata (one data dir, or one database; see
storage.py): the repositories that own a chain hold the store's lock around every read
and write, and call :meth:`MetadataChain.refresh_from_disk` inside it, so nobody signs on
top of a stale chain. The chain reads and writes through :class:`MetadataFiles`.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from edgefleet.shared.errors import ConfigError, TrustError
from securesystemslib.signer import Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

log = logging.getLogger(__name__)

SPEC_VERSION = "1.0.31"
TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
LIFETIMES: Mapping[str, timedelta] = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
DELEGATED_LIFETIME = timedelta(days=90)  # like targets: the publisher signs it
_VERSIONED = re.compile(r"^(\d+)\.root\.json$")


class MetadataFiles(Protocol):
    """The files of one repository: a folder, or its rows in the database (storage.py)."""

    where: str  # for messages: a folder, or "database:<repo>"

    def read(self, name: str) -> bytes | None: ...

    def names(self) -> list[str]: ...

    def stamp(self) -> object | None:  # changes whenever timestamp.json is replaced
        ...

    def stamp_of(self, data: bytes) -> object | None:
        """What :meth:`stamp` says once ``data`` was written as timestamp.json."""

    def write(self, name: str, data: bytes) -> None: ...

    def write_unsynced(self, files: list[tuple[str, bytes]]) -> None:
        """Write each (name, bytes), each whole or not at all; durable only after sync()."""

    def sync(self) -> None:
        """Make what write_unsynced wrote durable (on a folder: its whole file system)."""

    def delete(self, names: list[str]) -> list[str]: ...


LOCK_TIMEOUT_S = 60.0  # seconds to wait for another process's signing write


class RepoLock:
    """One data dir's TUF writes, one at a time across threads and processes (flock).

    Re-entrant within a thread. Waiting longer than ``timeout_s`` raises TrustError.
    """

    def __init__(
        self,
        path: Path,
        timeout_s: float = LOCK_TIMEOUT_S,
        on_enter: Callable[[], object] | None = None,  # e.g. re-read what others wrote
    ) -> None:
        self.path, self.timeout_s, self._on_enter = path, timeout_s, on_enter
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> RepoLock:
        if not self._thread.acquire(timeout=self.timeout_s):
            raise TrustError(f"signing lock {self.path} busy for {self.timeout_s:g} s")
        if self._depth == 0:
            try:
                self._fd = self._flock()
                self._depth = 1
                if self._on_enter is not None:
                    self._on_enter()
            except BaseException:
                self.__exit__(None, None, None)
                raise
            return self
        self._depth += 1
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self._thread.release()

    def _flock(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise TrustError(f"cannot open signing lock {self.path}: {e}") from e
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TrustError(
                        f"signing lock {self.path} held by another process for {self.timeout_s:g} s"
                    ) from None
                time.sleep(0.01)
            else:
                return fd


class BatchWriter:
    """Metadata files of many chains, written together with two flushes instead of three
    fsyncs per file (the director signs thousands of devices per stage).

    :meth:`flush` writes every leaf file (root, targets, snapshot) with write + rename,
    flushes the file system once, then every ``timestamp.json`` the same way: a client
    never sees a timestamp whose snapshot is not on disk, and a crash before the second
    flush leaves each device on its previous, complete chain. (In the database, all of
    it lands in the signing transaction, which commits when the lock is released.)
    """

    def __init__(self, background_prune: bool = True) -> None:
        self._files: dict[int, MetadataFiles] = {}
        self._leaves: dict[int, list[tuple[str, bytes]]] = {}
        self._stamps: dict[int, list[tuple[str, bytes]]] = {}
        self._chains: list[tuple[MetadataChain, bytes]] = []
        self._stale: list[tuple[MetadataFiles, dict[str, int]]] = []
        self._background_prune = background_prune

    def add(self, name: str, data: bytes, chain: MetadataChain, *, last: bool) -> None:
        key = id(chain.files)
        self._files[key] = chain.files
        (self._stamps if last else self._leaves).setdefault(key, []).append((name, data))
        if last:
            self._chains.append((chain, data))

    def prune_later(self, files: MetadataFiles, versions: dict[str, int]) -> None:
        """Once the batch is durable, prune these files below these versions - 1 (off the
        signing path: on a busy disk an unlink costs as much as signing a role)."""
        self._stale.append((files, versions))

    def flush(self) -> None:
        for group in (self._leaves, self._stamps):
            for key, written in group.items():
                self._files[key].write_unsynced(written)
            if group:  # every folder of a store is on one file system: one sync
                self._files[next(iter(group))].sync()
        for chain, data in self._chains:
            chain.remember_stamp(data)
        if self._stale:
            if self._background_prune:
                _PRUNER.submit(_prune_all, self._stale)
            else:
                for files, versions in self._stale:
                    prune(files, versions)
        self._files, self._leaves, self._stamps, self._chains = {}, {}, {}, []
        self._stale = []


_PRUNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuf-prune")


def pruning_done(timeout: float | None = None) -> None:
    """Wait until every prune handed to the background so far is done (tests, shutdown)."""
    _PRUNER.submit(lambda: None).result(timeout)


def _prune_all(stale: list[tuple[MetadataFiles, dict[str, int]]]) -> None:
    try:
        for files, versions in stale:
            prune(files, versions)
    except OSError as e:  # a file left behind costs disk space only; say so once
        log.warning("pruning old director metadata failed: %s", e)


PRUNE_SPAN = 16  # versions below current - 1 a prune looks at (each publish prunes)


def prune(files: MetadataFiles, versions: Mapping[str, int]) -> list[str]:
    """Delete ``N.<role>.json`` for version - 2 - PRUNE_SPAN < N <= version - 2 (older
    ones went in an earlier prune). Returns the names deleted."""
    doomed = [
        metadata_filename(role, old)
        for role, version in versions.items()
        for old in range(version - 2, max(0, version - 2 - PRUNE_SPAN), -1)
    ]
    return files.delete(doomed)


def write_unsynced(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
    tmp.replace(path)


_LIBC = ctypes.CDLL(None, use_errno=True) if hasattr(os, "sync") else None


def sync_fs(folder: Path) -> None:
    """syncfs(2) on the folder's file system (Linux); os.sync() elsewhere."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs({folder}) failed")
    finally:
        os.close(fd)


def lifetime(role: str) -> timedelta:
    return LIFETIMES.get(role, DELEGATED_LIFETIME)


def needs_refresh(expires: datetime, role: str, now: datetime) -> bool:
    """Re-sign once less than half of the role's lifetime is left."""
    return expires - now < lifetime(role) / 2


def metadata_filename(role: str, version: int) -> str:
    return "timestamp.json" if role == "timestamp" else f"{version}.{role}.json"


class MetadataChain:
    """The current metadata of one repository, and the rules to change it.

    ``signers`` maps every role (top-level and delegated) to its signer; ``online`` names
    the roles that :meth:`refresh_online` may re-sign just because time passed.
    """

    def __init__(
        self,
        files: MetadataFiles,
        signers: Mapping[str, Signer],
        online: frozenset[str],
        *,
        prune: bool = False,
    ) -> None:
        self.files = files
        self._signers = signers
        self._online = online
        # Drop targets/snapshot versions older than the previous one after each publish
        # (root files are never pruned: clients walk the root chain version by version).
        self._prune = prune
        self.sink: BatchWriter | None = None  # set: writes are collected, not made
        self.md: dict[str, Metadata[Any]] = {}
        self._stamp: object | None = None  # timestamp.json as last read/written

    # -- building -------------------------------------------------------------------

    def create(self, now: datetime, delegations: Mapping[str, list[str]]) -> None:
        """Sign version 1 of every role; ``delegations`` maps role name -> path patterns."""
        root = Root(expires=now + lifetime("root"), consistent_snapshot=True)
        for role in TOP_LEVEL:
            root.add_key(self._signers[role].public_key, role)
        targets = Targets(expires=now + lifetime("targets"))
        if delegations:
            roles = {
                name: DelegatedRole(name, [], 1, terminating=True, paths=paths)
                for name, paths in delegations.items()
            }
            targets.delegations = Delegations(keys={}, roles=roles)
        for name in delegations:
            targets.add_key(self._signers[name].public_key, name)
            self.md[name] = Metadata(Targets(expires=now + DELEGATED_LIFETIME))
        self.md["root"] = Metadata(root)
        self.md["targets"] = Metadata(targets)
        self.md["snapshot"] = Metadata(Snapshot(expires=now + lifetime("snapshot")))
        self.md["timestamp"] = Metadata(Timestamp(expires=now + lifetime("timestamp")))
        self._fill_snapshot()
        self._fill_timestamp()
        for role in (*delegations, "root", "targets", "snapshot", "timestamp"):
            self._sign_and_write(role)

    def load(self) -> None:
        """Read the newest complete repository: timestamp -> snapshot -> targets roles."""
        self._stamp = self.files.stamp()
        try:
            self.md["root"] = self._read(self._newest_root())
            timestamp: Metadata[Timestamp] = self._read("timestamp.json")
            self.md["timestamp"] = timestamp
            snap_version = timestamp.signed.snapshot_meta.version
            snapshot: Metadata[Snapshot] = self._read(metadata_filename("snapshot", snap_version))
            self.md["snapshot"] = snapshot
            for name, meta in snapshot.signed.meta.items():
                role = name.removesuffix(".json")
                self.md[role] = self._read(metadata_filename(role, meta.version))
        except (OSError, DeserializationError, ValueError) as e:
            raise TrustError(f"repository metadata in {self.files.where} unreadable: {e}") from e
        self._check_keys()

    def refresh_from_disk(self) -> bool:
        """Load again when another process published since this chain read or wrote
        (timestamp.json is replaced on every publish); True when it did."""
        stamp = self.files.stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self.md.clear()
        self.load()
        return True

    def remember_stamp(self, data: bytes) -> None:
        """timestamp.json is ``data`` now, written by this chain (BatchWriter.flush)."""
        self._stamp = self.files.stamp_of(data)

    def _read(self, name: str) -> Metadata[Any]:
        data = self.files.read(name)
        if data is None:
            raise FileNotFoundError(f"no {name} in {self.files.where}")
        return Metadata.from_bytes(data)

    def _check_keys(self) -> None:
        """Refuse to start with keys the repository does not trust (e.g. a lost keys/ dir)."""
        root = self.md["root"].signed
        assert isinstance(root, Root)
        delegations = self.targets().delegations
        for role, signer in self._signers.items():
            keyid = signer.public_key.keyid
            if role in TOP_LEVEL:
                trusted = root.roles[role].keyids
            elif delegations is not None and delegations.roles and role in delegations.roles:
                trusted = delegations.roles[role].keyids
            else:
                trusted = []
            if keyid not in trusted:
                raise ConfigError(
                    f"signing key for {role} is not the one {self.files.where} trusts; "
                    "restore the keys folder that signed it"
                )

    def _newest_root(self) -> str:
        versions = [int(m.group(1)) for name in self.files.names() if (m := _VERSIONED.match(name))]
        if not versions:
            raise FileNotFoundError(f"no N.root.json in {self.files.where}")
        return f"{max(versions)}.root.json"

    # -- reading --------------------------------------------------------------------

    def targets(self, role: str = "targets") -> Targets:
        signed = self.md[role].signed
        assert isinstance(signed, Targets)
        return signed

    def version(self, role: str) -> int:
        return int(self.md[role].signed.version)

    # -- changing -------------------------------------------------------------------

    def use_signers(self, signers: Mapping[str, Signer]) -> None:
        """Sign from now on with these keys (key rotation, offline ceremonies)."""
        self._signers = signers

    def publish_root(self, signers: Sequence[Signer]) -> None:
        """Write the current root, as edited, signed by each of ``signers`` (a threshold)."""
        md = self.md["root"]
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        self.files.write(
            metadata_filename("root", md.signed.version), md.to_bytes(JSONSerializer(compact=False))
        )

    def bump(self, role: str, now: datetime) -> None:
        """Re-sign ``role`` as a new version (then :meth:`publish_snapshot` for targets roles)."""
        self._bump(role, now)

    def publish_snapshot(self, now: datetime) -> None:
        self._publish_snapshot(now)

    def update_targets(self, role: str, now: datetime, edit: Callable[[Targets], None]) -> int:
        """Apply ``edit`` to a targets role, then publish it with snapshot and timestamp."""
        edit(self.targets(role))
        self._bump(role, now)
        self._publish_snapshot(now)
        return self.version(role)

    def refresh_online(self, now: datetime) -> list[str]:
        """Re-sign the online roles close to expiry; returns the roles re-signed."""
        stale = [
            role for role in self._online if needs_refresh(self.md[role].signed.expires, role, now)
        ]
        targets_roles = [r for r in stale if r not in ("snapshot", "timestamp")]
        for role in targets_roles:
            self._bump(role, now)
        if targets_roles or "snapshot" in stale:
            self._publish_snapshot(now)
            return sorted({*stale, "snapshot", "timestamp"})
        if "timestamp" in stale:
            self._bump("timestamp", now)
        return sorted(stale)

    def _publish_snapshot(self, now: datetime) -> None:
        self._fill_snapshot()
        self._bump("snapshot", now)
        self._fill_timestamp()
        self._bump("timestamp", now)
        if self._prune:
            if self.sink is not None:
                self.sink.prune_later(self.files, self._current_versions())
            else:
                self.prune_old()

    def prune_old(self) -> list[str]:
        """Delete versioned targets-role and snapshot files older than current - 1.

        A client that read the previous timestamp still finds the snapshot and targets it
        names; nothing older is reachable from any timestamp served since. Root stays.
        """
        return prune(self.files, self._current_versions())

    def _current_versions(self) -> dict[str, int]:
        return {
            role: int(md.signed.version)
            for role, md in self.md.items()
            if role not in ("root", "timestamp")
        }

    def _fill_snapshot(self) -> None:
        snapshot = self.md["snapshot"].signed
        assert isinstance(snapshot, Snapshot)
        for role, md in self.md.items():
            if role not in ("root", "snapshot", "timestamp"):
                snapshot.meta[f"{role}.json"] = MetaFile(version=md.signed.version)

    def _fill_timestamp(self) -> None:
        timestamp = self.md["timestamp"].signed
        assert isinstance(timestamp, Timestamp)
        timestamp.snapshot_meta = MetaFile(version=self.version("snapshot"))

    def _bump(self, role: str, now: datetime) -> None:
        signed = self.md[role].signed
        signed.version += 1
        signed.expires = now + lifetime(role)
        self._sign_and_write(role)

    def _sign_and_write(self, role: str) -> None:
        md = self.md[role]
        md.sign(self._signers[role], append=False)
        name = metadata_filename(role, md.signed.version)
        data = md.to_bytes(JSONSerializer(compact=False))
        if self.sink is not None:
            self.sink.add(name, data, self, last=role == "timestamp")
            return
        self.files.write(name, data)
        if role == "timestamp":
            self.remember_stamp(data)
