"""End to end: an operator pushes a model and two real agent processes run it, verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from edgefleet.shared.hashing import sha256_file

from tests.e2e.conftest import REPO, System, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V1 = REPO / "models" / "shapes" / "v1" / "model.onnx"
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
AGENTS = ("cam-a", "cam-b")


def _on(system: System, device_id: str, version: str) -> dict[str, Any] | None:
    d = system.device(device_id)
    if d and d["version"] == version and d["phase"] == "COMMITTED" and d["online"]:
        return d
    return None


def _push(system: System, path: Path, version: str) -> None:
    out = system.run_cli("model", "push", "shapes", str(path), "--version", version)
    assert out.returncode == 0, out.stderr


def _rollout(system: System, version: str, *selector: str) -> str:
    args = ["rollout", "create", f"shapes:{version}"]
    for s in selector:
        args += ["--selector", s]
    out = system.run_cli(*args)
    assert out.returncode == 0, out.stderr
    rollouts = system.http.get("/v1/rollouts").json()["data"]
    return str(max(r["id"] for r in rollouts))


def _diagnose(system: System) -> str:
    return "\n".join(f"--- {n}\n{system.procs.log(n)[-3000:]}" for n in system.procs.running)


def _frames_on(system: System, device_id: str, version: str) -> int:
    windows = system.http.get(f"/v1/devices/{device_id}/telemetry").json()["data"]
    return sum(w["frames"] for w in windows if w["version"] == version)


def test_push_roll_out_and_every_agent_reports_the_new_version(system: System) -> None:
    for device_id in AGENTS:
        system.start_agent(device_id, {"site": "store-1", "fleet": "e2e"})
    wait_for("agents online", lambda: all(
        (d := system.device(a)) and d["online"] for a in AGENTS), timeout=60)  # fmt: skip

    for path, version in ((V1, "v1"), (V2, "v2")):
        _push(system, path, version)
        rid = _rollout(system, version, "fleet=e2e")
        try:
            for device_id in AGENTS:
                wait_for(
                    f"{device_id} on {version}", lambda d=device_id, v=version: _on(system, d, v)
                )
        except AssertionError:
            pytest.fail(f"rollout to {version} did not converge\n{_diagnose(system)}")

        def state(rid: str = rid) -> str:
            status = system.run_cli("rollout", "status", rid, "--json")
            assert status.returncode == 0, status.stderr
            return str(json.loads(status.stdout)["state"])

        # The scheduler's next round (every second) records it; a read only shows it.
        wait_for(f"rollout {rid} succeeded", lambda: state() == "succeeded", timeout=30)

    # What runs is the signed artifact, byte for byte, and it really runs on frames.
    registered = {
        v["version"]: v for v in system.http.get("/v1/models/shapes/versions").json()["data"]
    }
    assert registered["v2"]["sha256"] == sha256_file(V2)
    for device_id in AGENTS:
        assert system.device(device_id)["version"] == "v2"  # type: ignore[index]
        stored = list((system.procs.folder / device_id).rglob(f"{registered['v2']['sha256']}*"))
        assert stored, f"{device_id} has no verified copy of v2"
        wait_for(
            f"{device_id} telemetry on v2", lambda d=device_id: _frames_on(system, d, "v2") > 0
        )

    table = system.run_cli("device", "list", "--json")
    assert table.returncode == 0, table.stderr
    rows = {r["device_id"]: r for r in json.loads(table.stdout)}
    assert {rows[a]["version"] for a in AGENTS} == {"v2"}
    assert rows["cam-a"]["labels"] == {"site": "store-1", "fleet": "e2e"}


def test_agent_keeps_serving_through_a_tampered_update(system: System) -> None:
    system.start_agent("cam-a", {"fleet": "e2e"})
    wait_for("agent online", lambda: (d := system.device("cam-a")) and d["online"], timeout=60)
    _push(system, V1, "v1")
    _rollout(system, "v1")
    wait_for("cam-a on v1", lambda: _on(system, "cam-a", "v1"))

    # The controller's stored bytes of v2 are changed after signing: a compromised store.
    _push(system, V2, "v2")
    v2 = next(v for v in system.http.get("/v1/models/shapes/versions").json()["data"]
              if v["version"] == "v2")  # fmt: skip
    (stored,) = (system.data / "artifacts").rglob(v2["sha256"])
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    _rollout(system, "v2")

    def refused() -> dict[str, Any] | None:
        d = system.device("cam-a")
        return d if d and d["error"] else None

    dev = wait_for("cam-a reports the refused update", refused, timeout=90)
    assert dev["version"] == "v1", _diagnose(system)
    before = _frames_on(system, "cam-a", "v1")
    wait_for("frames still served on v1", lambda: _frames_on(system, "cam-a", "v1") > before)
    assert _frames_on(system, "cam-a", "v2") == 0
    assert "Traceback" not in system.procs.log("cam-a")
