"""deploy/compose/ceremony.sh, the compose stack's one-time ceremony, run here outside
Docker (its paths and users moved to a temp folder and this user) against PostgreSQL: the
device CA and broker files, replica 2's identity, the TUF keys with the offline ones apart,
the first admin token in the database; a second run keeps all of it."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test

pytestmark = pytest.mark.postgres

CEREMONY = Path(__file__).resolve().parent.parent / "deploy" / "compose" / "ceremony.sh"


def _run(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    me = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "EDGEFLEET_PUBLIC_HOST": "fleet.example.internal",
        "EDGEFLEET_DATABASE_URL": database_url,
        "EDGEFLEET_DATA": str(tmp_path / "data"),
        "EDGEFLEET_BROKER_DIR": str(tmp_path / "broker-pki"),
        "EDGEFLEET_OFFLINE_KEYS": str(tmp_path / "offline-keys"),
        "EDGEFLEET_OWNER": me,
        "EDGEFLEET_BROKER_USER": me,
    }
    return subprocess.run(["sh", str(CEREMONY)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _tokens(database_url: str) -> list[tuple[str, str]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(text("SELECT name, role FROM api_token"))]
    finally:
        engine.dispose()


def test_the_ceremony_makes_what_the_stack_needs_once(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    first = _run(tmp_path, pg_url)
    assert first.returncode == 0, first.stderr
    data = tmp_path / "data"
    pki = data / "pki"
    for name in ("device-ca.pem", "controller.pem", "controller-2.pem", "broker.pem"):
        assert (pki / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "broker-pki").iterdir()) == [
        "broker.key", "broker.pem", "device-ca.crl", "device-ca.pem"]  # fmt: skip
    offline = {p.name for p in (tmp_path / "offline-keys").iterdir()}
    online = {p.name for p in (data / "keys").iterdir()}
    assert {"image-root-1.pem", "image-targets.pem", "image-models.pem"} <= offline
    assert not any(name.startswith(("image-root", "image-targets", "image-models"))
                   for name in online)  # fmt: skip
    assert (data / "tuf" / "image" / "metadata" / "timestamp.json").is_file()
    assert _tokens(pg_url) == [("ops", "admin")]
    assert sum(ln.startswith("eft_") for ln in first.stdout.splitlines()) == 1
    assert not (data / "edgefleet.db").exists()  # the token went to PostgreSQL

    ca = (pki / "device-ca.pem").read_bytes()
    again = _run(tmp_path, pg_url)
    assert again.returncode == 0, again.stderr
    assert "already holds a device CA; kept" in again.stdout
    assert (pki / "device-ca.pem").read_bytes() == ca
    assert _tokens(pg_url) == [("ops", "admin")]
    assert not any(ln.startswith("eft_") for ln in again.stdout.splitlines())
