"""The REST surface against PostgreSQL (``EDGEFLEET_TEST_PG_URL``), in a fresh database.

Skipped, with the reason, when the server is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.models.devices import Device
from edgefleet.controller.services import Services
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin_engine(url: URL):  # type: ignore[no-untyped-def]
    """An autocommit engine on the URL's database, or on ``postgres`` if that one is missing."""
    last: Exception | None = None
    for database in (url.database, "postgres"):
        engine = create_engine(
            url.set(database=database),
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},  # seconds
        )
        try:
            with engine.connect():
                return engine
        except OperationalError as e:
            last = e
            engine.dispose()
    reason = " ".join(str(getattr(last, "orig", last)).split())[:200]
    pytest.skip(f"PostgreSQL unreachable at {url.render_as_string(hide_password=True)}: {reason}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = make_url(os.environ.get("EDGEFLEET_TEST_PG_URL", DEFAULT_URL))
    admin = _admin_engine(url)
    name = f"edgefleet_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_api_on_postgres(
    pg_url: str,
    make_services: Callable[..., Services],
    serve: Callable[[Services], AbstractContextManager[httpx.Client]],
    onnx_model: Path,
) -> None:
    services = make_services(database_url=pg_url)
    with Session(services.engine) as s:
        s.add(Device(device_id="cam-1", labels={"site": "a"}, online=True))
        s.add(Device(device_id="cam-2", labels={"site": "b"}))
        s.commit()
    with serve(services) as client, onnx_model.open("rb") as f:
        r = client.post("/v1/models/shapes/versions", files={"file": ("m.onnx", f)})
        assert r.status_code == 200, r.text
        assert r.json()["release"] == 1
        f.seek(0)
        dup = client.post(
            "/v1/models/shapes/versions", files={"file": ("m.onnx", f)}, data={"version": "v1"}
        )
        assert dup.status_code == 409
        assert client.get("/v1/models").json()["data"][0]["latest_version"] == "v1"

        body = {"model": "shapes", "version": "v1", "selector": {"site": "a"}}
        rollout = client.post("/v1/rollouts", json=body).json()
        assert [d["device_id"] for d in rollout["devices"]] == ["cam-1"]
        assert client.get(f"/v1/rollouts/{rollout['id']}").json()["state"] == "running"
        devices = client.get("/v1/devices").json()
        assert devices["count"] == 2
        assert devices["data"][0]["desired_version"] == "v1"
        assert devices["data"][0]["labels"] == {"site": "a"}


def test_first_admin_token_goes_into_the_database_the_controller_uses(
    pg_url: str, tmp_path: Path
) -> None:
    """`token create --data` on a PostgreSQL deployment (deploy/compose.yaml's ceremony):
    the token lands in PostgreSQL, read from EDGEFLEET_DATABASE_URL, not in a SQLite file."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    made = subprocess.run(
        [sys.executable, "-m", "edgefleet", "token", "create", "--role", "admin",
         "--name", "ops", "--data", str(data), "--quiet"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "EDGEFLEET_DATABASE_URL": pg_url, "EDGEFLEET_TOKEN": ""},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("eft_")
    assert not (data / "edgefleet.db").exists()
    engine = create_engine(pg_url)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT name, role FROM api_token")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("ops", "admin")]
