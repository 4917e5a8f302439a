"""Alembic migrations at start, on SQLite and PostgreSQL: empty -> head is the models'
schema, a database of the previous release (create_all, no alembic_version) is stamped at
the baseline and upgraded with its rows, and two controllers starting at once both work."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from edgefleet.controller.db import BASELINE, alembic_config, make_engine
from edgefleet.controller.models.alerts import AlertRow
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.shared.errors import ConfigError
from sqlalchemy import Column, MetaData, String, create_engine, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test

PREVIOUS_RELEASE = Path(__file__).parent / "previous_release"  # schema dumps of 7f80677
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'edgefleet.db'}"


def _diff(engine: Engine, metadata: MetaData = SQLModel.metadata) -> list[object]:
    with engine.connect() as c:
        return list(compare_metadata(MigrationContext.configure(c), metadata))


def _revision(engine: Engine) -> str | None:
    with engine.connect() as c:
        return MigrationContext.configure(c).get_current_revision()


def test_empty_to_head_is_exactly_the_models_schema(db_url: str) -> None:
    """Also the guard for a model changed without a migration: the diff is then not empty
    (add one with ``python -m edgefleet.controller.migrations "what changed"``)."""
    engine = make_engine(db_url)
    make_engine(db_url).dispose()  # twice: nothing left to do
    assert _diff(engine) == []
    assert _revision(engine) == HEAD
    engine.dispose()


def test_the_schema_check_sees_a_column_without_a_migration(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'edgefleet.db'}")
    changed = MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["device"].append_column(Column("new_thing", String(16)))
    (added,) = _diff(engine, changed)
    assert added[0] == "add_column" and added[3].name == "new_thing"  # type: ignore[index]


def test_a_database_of_the_previous_release_upgrades_with_its_rows(db_url: str) -> None:
    old = create_engine(db_url)
    with old.begin() as c:  # the schema that release's create_all made, dumped from it
        schema = (PREVIOUS_RELEASE / f"{old.dialect.name}.sql").read_text()
        if old.dialect.name == "sqlite":
            c.connection.driver_connection.executescript(schema)  # type: ignore[union-attr]
        else:
            c.exec_driver_sql(schema)
    seen = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with old.begin() as c:
        c.execute(
            text(
                "INSERT INTO device (device_id, online, labels, desired_version, last_seen)"
                " VALUES ('cam-1', true, '{\"site\": \"a\"}', 'v3', :seen)"
            ),
            {"seen": seen},
        )
        c.execute(
            text(
                "INSERT INTO alert (scope, metric, value, threshold, state, fired_at, labels)"
                " VALUES ('device:cam-1', 'psi', 0.5, 0.25, 'firing', :seen, '{}')"
            ),
            {"seen": seen},
        )
        c.execute(text("INSERT INTO model (name, created_at) VALUES ('shapes', :seen)"),
                  {"seen": seen})  # fmt: skip
        c.execute(
            text(
                "INSERT INTO model_version (name, version, release, sha256, length, target,"
                " format, created_at) VALUES ('shapes', 'v1', 1, 'ab', 1,"
                " 'models/shapes/v1/model.onnx', 'onnx', :seen)"
            ),
            {"seen": seen},
        )
    assert _revision(old) is None
    old.dispose()

    engine = make_engine(db_url)
    assert _revision(engine) == HEAD != BASELINE
    assert _diff(engine) == []
    with Session(engine) as s:
        (device,) = s.exec(select(Device)).all()
        (alert,) = s.exec(select(AlertRow)).all()
        (version,) = s.exec(select(ModelVersion)).all()
    assert (device.device_id, device.labels, device.desired_version) == (
        "cam-1",
        {"site": "a"},
        "v3",
    )
    assert device.desired_set_by is None
    assert (alert.scope, alert.state) == ("device:cam-1", "firing")
    assert (version.version, version.release, version.lineage) == ("v1", 1, None)  # 0003
    engine.dispose()


def test_two_controllers_starting_at_once_both_migrate(db_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def open_db() -> None:
        start.wait()
        try:
            make_engine(db_url).dispose()
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=open_db) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    engine = create_engine(db_url)
    assert _revision(engine) == HEAD
    engine.dispose()


def test_a_database_from_a_newer_release_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'edgefleet.db'}"
    make_engine(url).dispose()
    with create_engine(url).begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigError, match=r"from revision 9999.*newer edgefleet"):
        make_engine(url)


def test_a_database_older_than_the_baseline_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "edgefleet.db"
    with sqlite3.connect(path) as db:  # a release before 7f80677: no alert.reason yet
        db.executescript((PREVIOUS_RELEASE / "sqlite.sql").read_text())
        db.execute("ALTER TABLE alert DROP COLUMN reason")
    with pytest.raises(ConfigError, match=r"predates .* lacks alert\.reason\)"):
        make_engine(f"sqlite:///{path}")
