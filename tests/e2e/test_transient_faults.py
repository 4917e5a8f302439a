"""End to end: a controller SIGKILLed while the devices of a staged rollout download from
it is a transient fault, not a failed rollout (issue 12, item 1).

The real controller process (SQLite, or PostgreSQL from ``EDGEFLEET_TEST_PG_URL`` /
127.0.0.1:5432, skipped with the reason when unreachable) and a simulated fleet (the real
agent stack, real MQTT, real TUF). Downloads are held to a slow rate by the test hook
``download_rate_bps`` (tests/hooked_agent.py); the controller is killed once every device of
the first stage has part of the new model on disk (its ``.part`` file), so every one of those
downloads breaks off mid-way. The devices report the fault as transient and retry with
backoff; the restarted scheduler waits for them, and the rollout succeeds with every
device on the new version. Before the fix it failed on "install errors".
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgefleet.shared.hashing import sha256_file

from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test
from tests.e2e.conftest import running_system, wait_for
from tests.e2e.test_canary import GATES, V2, Canary, _retagged

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RATE = 800_000  # bytes per second: a 9.6 MB model downloads in about 12 s


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def canary_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Canary]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    with (
        running_system(tmp_path, database_url=database_url) as system,
        Canary(system, tmp_path) as c,
    ):
        yield c


def _partial(tmp: Path, device_id: str, sha256: str, length: int) -> bool:
    """Part of the artifact ``sha256`` on the device's disk, not all of it yet."""
    part = tmp / "sim" / device_id / "models" / f".{sha256}.onnx.part"
    try:
        return 0 < part.stat().st_size < length
    except FileNotFoundError:
        return False


def test_controller_killed_during_downloads_then_the_rollout_succeeds(
    canary_db: Canary, caplog: pytest.LogCaptureFixture
) -> None:
    canary = canary_db
    caplog.set_level(logging.WARNING, logger="edgefleet.agent.reconcile")
    v3 = _retagged(V2, canary.tmp / "v3.onnx", "v3")
    canary.push(V2, "v2")
    canary.push(v3, "v3")
    fleet = canary.start_fleet(4, hooks={"download_rate_bps": RATE}, site=["a", "b"])
    canary.baseline("v2")
    spec = {"version": "v3", "stages": "2,100%", "soak_s": 3, "gates": GATES,
            "stratify_by": "site", "on_failure": "rollback"}  # fmt: skip
    rid = canary.create(spec)
    wait_for("stage 1 assigned", lambda: canary.rollout(rid)["total"] == 2, timeout=60)
    stage = [d["device_id"] for d in canary.rollout(rid)["devices"]]
    sha, length = sha256_file(v3), v3.stat().st_size

    wait_for("every stage-1 device part-way through its download", lambda: all(
        _partial(canary.tmp, d, sha, length) for d in stage), timeout=90)  # fmt: skip
    canary.restart_controller(signal.SIGKILL)

    body = canary.wait_state(rid, "succeeded", "failed", "rolled_back", "paused", timeout=240)
    assert body["state"] == "succeeded", body["reason"]
    assert [s["outcome"] for s in body["stages"]] == ["successful"] * 2
    wait_for("every device on v3", lambda: all(canary.on(d, "v3") for d in fleet.devices), 60)
    interrupted = [r for r in caplog.records if "v3: DOWNLOADING: download interrupted"
                   in r.getMessage()]  # fmt: skip
    assert len(interrupted) >= len(stage), "the kill broke off every stage-1 download"
    assert not [r for r in caplog.records if "v3: FAILED" in r.getMessage()]
    assert not fleet.errors()
