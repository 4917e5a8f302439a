"""Where TUF metadata lives, and what serialises the signing: a folder or the database.

Both stores hold the same repositories under the same names, the layout devices fetch
from ``/tuf/`` (``image/metadata/N.root.json``, ``director/<device>/metadata/...``):

- :class:`FolderStore` (default): files under ``DATA/tuf/``, signing serialised by
  :class:`RepoLock` (flock on ``DATA/tuf/.lock``). Replicas must share that folder.
- :class:`DatabaseStore` (``controller serve --tuf-store database``): rows of the
  ``tuf_metadata`` table, signing serialised by the database: on PostgreSQL a
  transaction-scoped advisory lock (``pg_advisory_xact_lock``), on SQLite the database's
  own write lock (taken by an UPDATE of the ``tuf_lock`` row). Everything one lock hold
  writes commits at once when the hold ends, so a reader sees the whole publish or none
  of it. Replicas on one database need no shared folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from edgefleet.controller.models.tuf import TufLock, TufMetadata
from edgefleet.controller.signing._chain import MetadataFiles, RepoLock, sync_fs, write_unsynced
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import TrustError
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col

log = logging.getLogger(__name__)

IMAGE = "image/metadata"
DIRECTOR = "director"
_DEVICE_REPO = re.compile(r"^director/([^/]+)/metadata$")
_FILE = re.compile(r"^(\d+\.)?[A-Za-z0-9_-]+\.json$")  # N.role.json, timestamp.json
# pg_advisory_xact_lock key of TUF signing: "edgetuf", apart from the migrations' key
_PG_LOCK_KEY = int.from_bytes(b"edgetuf", "big")
SQLITE_LOCK = "tuf"


def director_repo(device_id: str) -> str:
    return f"{DIRECTOR}/{device_id}/metadata"


@dataclass(frozen=True)
class Blob:
    """One metadata file as the database holds it (``/tuf`` serves it with this ETag)."""

    data: bytes
    etag: str


class MetadataStore(Protocol):
    background_prune: bool  # prune off the signing path (files) or in the hold (rows)

    def files(self, repo: str) -> MetadataFiles: ...

    def device_repos(self) -> list[str]: ...

    def lock(self, on_enter: Callable[[], object] | None = None) -> RepoLock | DatabaseLock: ...


# -- files -------------------------------------------------------------------------------


class FolderFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return [p.name for p in self.folder.iterdir()]

    def stamp(self) -> object | None:
        try:
            st = (self.folder / "timestamp.json").stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def stamp_of(self, data: bytes) -> object | None:
        return self.stamp()  # one stat of the file just written

    def write(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes(self.folder / name, data)

    def write_unsynced(self, files: list[tuple[str, bytes]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            write_unsynced(self.folder / name, data)

    def sync(self) -> None:
        sync_fs(self.folder)

    def delete(self, names: list[str]) -> list[str]:
        removed = []
        for name in names:
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                continue
            removed.append(name)
        return removed


class FolderStore:
    """Metadata files under ``DATA/tuf/`` (the default)."""

    background_prune = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self, repo: str) -> FolderFiles:
        return FolderFiles(self.root / repo)

    def device_repos(self) -> list[str]:
        folder = self.root / DIRECTOR
        if not folder.is_dir():
            return []
        return sorted(director_repo(p.name) for p in folder.iterdir() if (p / "metadata").is_dir())

    def lock(self, on_enter: Callable[[], object] | None = None) -> RepoLock:
        return RepoLock(self.root / ".lock", on_enter=on_enter)


# -- the database ------------------------------------------------------------------------


class DatabaseStore:
    """Metadata rows in the ``tuf_metadata`` table; one lock for every repository."""

    background_prune = False

    def __init__(self, engine: Engine, lock_engine: Engine | None = None) -> None:
        self.engine = engine  # reads outside the lock (/tuf polls)
        # The lock hold's connection comes from its own pool when given (the server's
        # request pool may be exhausted by threads that wait for this very lock).
        self.lock_engine = lock_engine or engine
        self.hold = LockHold()  # this process's side of the lock

    def files(self, repo: str) -> DatabaseFiles:
        return DatabaseFiles(self, repo)

    def device_repos(self) -> list[str]:
        with self.connection() as conn:
            rows = conn.execute(
                select(col(TufMetadata.repo))
                .where(col(TufMetadata.repo).like(f"{DIRECTOR}/%"),
                       col(TufMetadata.name) == "timestamp.json")
                .order_by(col(TufMetadata.repo))
            ).scalars()  # fmt: skip
            return list(rows)

    def lock(self, on_enter: Callable[[], object] | None = None) -> DatabaseLock:
        return DatabaseLock(self, on_enter)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The signing transaction when this thread holds the lock, else a short one."""
        held = self.hold.connection if self.hold.owner == threading.get_ident() else None
        try:
            if held is not None:
                yield held
                return
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise TrustError(f"TUF metadata in the database: {_first_line(e)}") from e

    def read(self, repo: str, name: str) -> Blob | None:
        """One file for ``/tuf`` (no lock: readers see committed publishes only)."""
        with self.connection() as conn:
            row = conn.execute(
                select(col(TufMetadata.data), col(TufMetadata.sha256)).where(
                    col(TufMetadata.repo) == repo, col(TufMetadata.name) == name
                )
            ).first()
        return Blob(bytes(row[0]), f'"{row[1]}"') if row is not None else None


class LockHold:
    """The lock's state, shared by every :class:`DatabaseLock` of one store."""

    def __init__(self) -> None:
        self.thread = threading.RLock()
        self.owner: int | None = None
        self.depth = 0
        self.connection: Connection | None = None


class DatabaseLock:
    """Signing serialised by the database, re-entrant within a thread (like RepoLock)."""

    def __init__(self, store: DatabaseStore, on_enter: Callable[[], object] | None) -> None:
        self._store, self._on_enter = store, on_enter

    def __enter__(self) -> DatabaseLock:
        hold = self._store.hold
        hold.thread.acquire()
        hold.owner = threading.get_ident()
        hold.depth += 1
        if hold.depth > 1:
            return self
        try:
            hold.connection = self._begin()
            if self._on_enter is not None:
                self._on_enter()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _begin(self) -> Connection:
        engine = self._store.lock_engine
        try:
            conn = engine.connect()
        except SQLAlchemyError as e:
            raise TrustError(f"cannot take the TUF signing lock: {_first_line(e)}") from e
        try:
            conn.begin()
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            else:  # SQLite: the write lock, until the commit
                _take_sqlite_lock(conn)
        except BaseException as e:
            conn.close()  # back to the pool (of one, in the server)
            if isinstance(e, SQLAlchemyError):
                raise TrustError(f"cannot take the TUF signing lock: {_first_line(e)}") from e
            raise
        return conn

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        hold = self._store.hold
        hold.depth -= 1
        try:
            if hold.depth == 0 and hold.connection is not None:
                conn, hold.connection = hold.connection, None
                _finish(conn, commit=t is None)
        finally:
            if hold.depth == 0:
                hold.owner = None
            hold.thread.release()


def _take_sqlite_lock(conn: Connection) -> None:
    stmt = (
        update(TufLock).where(col(TufLock.name) == SQLITE_LOCK).values(holds=col(TufLock.holds) + 1)
    )
    if conn.execute(stmt).rowcount == 1:
        return
    try:
        with conn.begin_nested():
            conn.execute(TufLock.__table__.insert().values(name=SQLITE_LOCK, holds=1))  # type: ignore[attr-defined]
    except IntegrityError:  # another process inserted it first
        conn.execute(stmt)


def _finish(conn: Connection, *, commit: bool) -> None:
    try:
        if commit:
            conn.commit()
        else:
            conn.rollback()
    except SQLAlchemyError as e:
        raise TrustError(f"TUF metadata not saved: {_first_line(e)}") from e
    finally:
        conn.close()


class DatabaseFiles:
    def __init__(self, store: DatabaseStore, repo: str) -> None:
        self._store, self.repo = store, repo
        self.where = f"database:{repo}"

    def read(self, name: str) -> bytes | None:
        blob = self._store.read(self.repo, name)
        return blob.data if blob is not None else None

    def names(self) -> list[str]:
        with self._store.connection() as conn:
            stmt = select(col(TufMetadata.name)).where(col(TufMetadata.repo) == self.repo)
            return list(conn.execute(stmt).scalars())

    def stamp(self) -> object | None:
        with self._store.connection() as conn:
            return conn.execute(
                select(col(TufMetadata.sha256)).where(
                    col(TufMetadata.repo) == self.repo, col(TufMetadata.name) == "timestamp.json"
                )
            ).scalar()

    def stamp_of(self, data: bytes) -> object | None:
        return hashlib.sha256(data).hexdigest()

    def write(self, name: str, data: bytes) -> None:
        self.write_unsynced([(name, data)])

    def sync(self) -> None:
        """Nothing: the rows commit with the signing transaction, all at once."""

    def write_unsynced(self, files: list[tuple[str, bytes]]) -> None:
        if not files:
            return
        latest = dict(files)  # a batch may write one name twice (timestamp.json): last wins
        replaced = latest.pop("timestamp.json", None)  # the one name written again and again
        with self._store.connection() as conn:
            rows = [self._row(n, d) for n, d in latest.items()]  # versioned: new names
            if replaced is not None:
                row = self._row("timestamp.json", replaced)
                stmt = (
                    update(TufMetadata)
                    .where(col(TufMetadata.repo) == self.repo,
                           col(TufMetadata.name) == "timestamp.json")
                    .values(data=row["data"], sha256=row["sha256"])
                )  # fmt: skip
                if conn.execute(stmt).rowcount == 0:
                    rows.append(row)
            if rows:
                conn.execute(TufMetadata.__table__.insert(), rows)  # type: ignore[attr-defined]

    def _row(self, name: str, data: bytes) -> dict[str, object]:
        return {"repo": self.repo, "name": name, "data": data,
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip

    def delete(self, names: list[str]) -> list[str]:
        if not names:
            return []
        with self._store.connection() as conn:
            gone = conn.execute(
                delete(TufMetadata).where(col(TufMetadata.repo) == self.repo,
                                          col(TufMetadata.name).in_(names))
                .returning(col(TufMetadata.name))
            ).scalars()  # fmt: skip
            return list(gone)


def import_folder(folder: FolderStore, db: DatabaseStore) -> list[str]:
    """Copy every repository of ``folder`` into ``db`` when ``db`` holds none yet and the
    folder does (made by ``edgefleet keys init``, or by a controller on the folder store
    before). Returns the repositories copied."""
    if folder.files(IMAGE).stamp() is None:
        return []
    with db.lock():
        if db.files(IMAGE).stamp() is not None:
            return []
        repos = [IMAGE, *folder.device_repos()]
        for repo in repos:
            source = folder.files(repo)
            files = [(n, data) for n in sorted(source.names())
                     if _FILE.match(n) and (data := source.read(n)) is not None]  # fmt: skip
            db.files(repo).write_unsynced(files)
    log.warning(
        "TUF metadata of %s copied into the database (%d repositories); the database copy "
        "is signed and served from now on", folder.root, len(repos),
    )  # fmt: skip
    return repos


def _first_line(e: BaseException) -> str:
    text_ = " ".join(str(getattr(e, "orig", e)).split())
    return text_[:200] or type(e).__name__


def device_of(repo: str) -> str | None:
    found = _DEVICE_REPO.match(repo)
    return found.group(1) if found else None
