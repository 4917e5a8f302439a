"""End to end at fleet size: 200 protocol-level devices take a staged rollout.

A real Mosquitto (the project's config, a free port), a real controller process on
SQLite or PostgreSQL, ``edgefleet sim --mode proto --procs 2`` (each device its own MQTT
client and its own verified director chain; see edgefleet/simproto.py), and the operator
CLI's ``rollout create``. Checked: every device ends COMMITTED on the new version at the
controller, the rollout succeeds through both stages, each simulator process downloaded
the artifact once, and the director keeps no more than two targets versions per device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from edgefleet.devbroker import DevBroker, free_port
from tests.controller.test_postgres import pg_url  # noqa: F401 - the PostgreSQL fixture
from tests.e2e.conftest import REPO, Procs, cli, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = 200
V1 = REPO / "models" / "shapes" / "v1" / "model.onnx"
TIMEOUT = 240.0  # seconds for the fleet to converge on a loaded 2-core machine


def _metric(http: httpx.Client, name: str, label: str) -> float:
    m = re.search(rf"^{name}\{{{label}\}} (\S+)$", http.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def _run_fleet_rollout(tmp_path: Path, database_url: str | None) -> None:
    broker = DevBroker(tmp_path / "mosquitto").start()
    procs = Procs(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "controller"
    argv = cli("controller", "serve", "--data", str(data), "--mqtt", broker.url,
               "--listen", f"127.0.0.1:{port}", "--insecure-dev")  # fmt: skip
    if database_url:
        argv += ["--database-url", database_url]
    procs.start("controller", argv)
    http = httpx.Client(base_url=url, timeout=60)
    sim: subprocess.Popen[bytes] | None = None
    try:
        wait_for("controller /healthz", lambda: _healthy(http), timeout=60)
        with V1.open("rb") as f:
            r = http.post("/v1/models/shapes/versions", data={"version": "v1"},
                          files={"file": ("model.onnx", f)})  # fmt: skip
        assert r.status_code == 200, r.text
        stats = tmp_path / "sim-stats.json"
        sim = procs.start("sim", cli(
            "sim", "--mode", "proto", "--procs", "2", "--devices", str(DEVICES),
            "--controller", url, "--mqtt", broker.url, "--data", str(tmp_path / "fleet"),
            "--label", "site=a,b", "--poll", "600", "--window", "30", "--stats", str(stats),
            "--quiet",
        ))  # fmt: skip
        wait_for(f"{DEVICES} devices online", lambda: _metric(
            http, "edgefleet_devices", 'online="true"') >= DEVICES, timeout=TIMEOUT)  # fmt: skip

        out = subprocess.run(
            cli("rollout", "create", "shapes:v1", "--stages", "10%,100%"), capture_output=True,
            text=True, env={**os.environ, "EDGEFLEET_URL": url}, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rid = max(r["id"] for r in http.get("/v1/rollouts").json()["data"])

        def succeeded() -> dict | None:  # type: ignore[type-arg]
            body = http.get(f"/v1/rollouts/{rid}").json()
            assert body["state"] in ("running", "succeeded"), body["reason"]
            return body if body["state"] == "succeeded" else None

        body = wait_for("the rollout to succeed", succeeded, timeout=TIMEOUT)
        assert (body["total"], body["done"], body["failed"]) == (DEVICES, DEVICES, 0)
        assert [s["outcome"] for s in body["stages"]] == ["successful", "successful"]
        devices = http.get("/v1/devices").json()["data"]
        assert len(devices) == DEVICES
        assert all(d["version"] == "v1" and d["phase"] == "COMMITTED" for d in devices)
        # Old director versions are pruned: root, current and previous at most.
        for d in devices[:: DEVICES // 10]:
            folder = data / "tuf" / "director" / d["device_id"] / "metadata"
            assert len(list(folder.glob("*.targets.json"))) <= 2

        sim.send_signal(signal.SIGTERM)
        assert sim.wait(60) == 0, procs.log("sim")[-3000:]
        per_proc = [json.loads(p.read_text()) for p in tmp_path.glob("sim-stats.json.*")]
        assert sum(s["devices"] for s in per_proc) == DEVICES
        assert [s["artifact_downloads"] for s in per_proc] == [1, 1]  # shared per process
        assert sum(s["installs"] for s in per_proc) == DEVICES
    except BaseException:
        for name in ("controller", "sim"):
            print(f"--- {name}\n{procs.log(name)[-3000:]}")
        raise
    finally:
        http.close()
        procs.stop_all()
        broker.stop()


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_200_devices_roll_out_on_sqlite(tmp_path: Path) -> None:
    _run_fleet_rollout(tmp_path, None)


@pytest.mark.postgres
def test_200_devices_roll_out_on_postgresql(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    _run_fleet_rollout(tmp_path, pg_url)
