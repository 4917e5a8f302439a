"""End to end: after a rollback, a version pushed before it still reaches the rolled-back
devices (real agents, real broker, real TUF, a controller process with its scheduler).

The issue saw the agent refuse "release 2 is lower than installed release 3" forever while
the rollout stayed running: the controller now signs the version again under a new
release for devices that installed a higher one, as rollback does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import System, wait_for
from tests.e2e.test_canary import V2, Canary, _retagged

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def fleet_of_two(system: System, tmp_path: Path) -> Iterator[Canary]:
    with Canary(system, tmp_path) as c:
        yield c


def test_a_version_older_than_a_rollback_still_reaches_the_rolled_back_devices(
    fleet_of_two: Canary,
) -> None:
    c = fleet_of_two
    c.push(V2, "v2")  # release 1
    c.push(_retagged(V2, c.tmp / "v3.onnx", "v3"), "v3")  # release 2
    fleet = c.start_fleet(2)
    c.baseline("v2")
    rid = c.create({"version": "v3"})
    c.wait_state(rid, "succeeded", timeout=120)
    assert c.system.run_cli("rollout", "rollback", str(rid)).returncode == 0
    back = c.rollout(rid)["rollback_version"].split(":")[1]  # v2-rb3: release 3 installed
    wait_for("rolled back", lambda: all(c.on(d, back) for d in fleet.devices), timeout=90)
    assert c.rollout(rid)["state"] == "rolled_back"

    again = c.create({"version": "v3"})  # release 2 < 3: re-signed for these devices
    body = c.wait_state(again, "succeeded", "failed", "paused", timeout=120)
    assert body["state"] == "succeeded", body
    assert {d["version"] for d in body["devices"]} == {"v3-rb4"}
    assert not any(d["refused"] for d in body["devices"])
    # The first rollout is a record: what its devices did since does not reopen it.
    assert c.rollout(rid)["state"] == "rolled_back"
