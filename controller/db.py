"""Database engine and sessions: SQLite (WAL) under the data folder, or any SQLAlchemy URL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydantic_core
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from edgefleet.controller import models  # noqa: F401  (registers the tables)
from edgefleet.shared.errors import ConfigError, TransportError
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

SQLITE_BUSY_TIMEOUT = 30  # seconds a writer waits for the lock (API and ingest share the file)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _json_dumps(value: Any) -> str:
    # JSON columns (histograms, labels) through pydantic's Rust encoder: about 7x faster
    # than json.dumps on a telemetry window's lists, which every ingested window pays.
    return pydantic_core.to_json(value).decode()


def make_engine(url: str, pool_size: int | None = None) -> Engine:
    """Build the engine and upgrade the database to the newest migration.

    ``pool_size``: connections the pool keeps and never exceeds (the server passes its
    thread count plus its background threads); None keeps SQLAlchemy's 5 + 10 (CLI tools).
    """
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    if pool_size is not None:
        options.update(pool_size=pool_size, max_overflow=0)
    try:
        if url.startswith("sqlite"):
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT},
                **options,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise ConfigError(f"bad database URL: {e}") from e
    try:
        upgrade_to_head(engine)
    except OperationalError as e:
        raise TransportError(f"cannot open the database: {str(e.orig).strip()}") from e
    return engine


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of the last release made with create_all
# pg_advisory_xact_lock key: one controller migrates at a time (a 64-bit "edgefleet")
_PG_LOCK_KEY = int.from_bytes(b"edgeflt", "big")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Run the migrations the database lacks, one controller at a time: PostgreSQL by an
    advisory lock held for the migration's transaction, SQLite by a lock on a file next to
    the database. A database the last release made with ``create_all`` (tables, no
    ``alembic_version``) is stamped at the baseline first."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(f"{engine.url.database}.migrate-lock")), engine.begin() as conn:
            _upgrade(conn)
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        _upgrade(conn)


def _upgrade(conn: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None and inspect(conn).has_table("device"):
        _check_is_baseline(conn)
        current = BASELINE
        command.stamp(config, BASELINE)
    if current == script.get_current_head():
        return
    try:
        command.upgrade(config, "head")
    except CommandError as e:  # e.g. a revision a newer release wrote
        raise ConfigError(
            f"cannot migrate the database from revision {current}: {e} (made by a newer edgefleet?)"
        ) from e


def _check_is_baseline(conn: Connection) -> None:
    """Refuse to stamp a database older than the baseline (a column it lacks would fail
    later, on some request): the release of the baseline brings it up to date first."""
    scratch = create_engine("sqlite://")
    with scratch.begin() as baseline:
        config = alembic_config()
        config.attributes["connection"] = baseline
        command.upgrade(config, BASELINE)
        want = inspect(baseline)
        have = inspect(conn)
        missing = [
            f"{table}.{column['name']}" if have.has_table(table) else table
            for table in want.get_table_names()
            if table != "alembic_version"
            for column in want.get_columns(table)
            if not have.has_table(table)
            or column["name"] not in {c["name"] for c in have.get_columns(table)}
        ]
    scratch.dispose()
    if missing:
        raise ConfigError(
            "the database predates the last release before migrations (it lacks "
            f"{', '.join(dict.fromkeys(missing))}): start that release (commit 7f80677)"
            " on it once first"
        )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on clean exit and rolled back on error (ingest, scripts)."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


TRANSIENT_ATTEMPTS = 5  # tries of a transaction PostgreSQL may abort for a concurrent one
# SQLSTATEs of a transaction aborted for a concurrent one: retrying it is the remedy.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` aborted the transaction for a concurrent one (deadlock victim,
    serialization failure): expected between replicas, and retrying succeeds."""
    sqlstate = getattr(e.orig, "sqlstate", None) if isinstance(e, OperationalError) else None
    return sqlstate in _TRANSIENT_SQLSTATES


def first_line(e: BaseException) -> str:
    """The first line of the database's message, for a one-line log."""
    text_ = str(getattr(e, "orig", None) or e).strip()
    return text_.splitlines()[0] if text_ else type(e).__name__
