"""``edgefleet sim`` against a controller as shipped (tokens required, reads authorised):
given an operator token it enrolls its devices the real way, and they take a rollout.

A real Mosquitto, ``controller serve`` without ``--insecure-dev`` and the sim's agent
stacks (``--mode agent``) as processes; the device CA and the operator token are made
in-process, as ``pki init`` and ``token create --data`` make them.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.db import make_engine
from edgefleet.controller.pki import DevicePki
from edgefleet.controller.tokens import create_token
from sqlmodel import Session

from edgefleet.devbroker import DevBroker, free_port
from tests.e2e.conftest import REPO, SAMPLES, Procs, cli, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V1 = REPO / "models" / "shapes" / "v1" / "model.onnx"


def _operator_token(data: Path) -> str:
    engine = make_engine(f"sqlite:///{data / 'edgefleet.db'}")
    try:
        with Session(engine) as session:
            return create_token(session, "sim", "operator", "test")[1]
    finally:
        engine.dispose()


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_sim_enrolls_its_devices_and_takes_a_rollout_from_a_secured_controller(
    tmp_path: Path,
) -> None:
    broker = DevBroker(tmp_path / "mosquitto").start()
    procs = Procs(tmp_path)
    port, data = free_port(), tmp_path / "controller"
    url = f"http://127.0.0.1:{port}"
    DevicePki(data / "pki").init(("localhost",))
    token = _operator_token(data)
    auth = {"Authorization": f"Bearer {token}"}
    procs.start("controller", cli("controller", "serve", "--data", str(data), "--mqtt",
                                  broker.url, "--listen", f"127.0.0.1:{port}"))  # fmt: skip
    http = httpx.Client(base_url=url, timeout=60)
    try:
        wait_for("controller /healthz", lambda: _healthy(http), timeout=60)
        assert http.get("/v1/devices").status_code == 401  # secured: reads too
        assert http.get("/tuf/image/metadata/timestamp.json").status_code == 401
        with V1.open("rb") as f:
            r = http.post("/v1/models/shapes/versions", data={"version": "v1"},
                          files={"file": ("model.onnx", f)}, headers=auth)  # fmt: skip
        assert r.status_code == 200, r.text
        sim = procs.start("sim", cli(
            "sim", "--devices", "2", "--controller", url, "--mqtt", broker.url,
            "--data", str(tmp_path / "fleet"), "--source", str(SAMPLES), "--poll", "2",
            "--fps", "1", "--token", token,
        ))  # fmt: skip

        def online() -> bool:
            devices = http.get("/v1/devices", headers=auth).json()["data"]
            return len(devices) == 2 and all(d["online"] for d in devices)

        wait_for("2 enrolled sim devices online", online, timeout=120)
        for i in range(2):  # each enrolled with its own key and credential
            assert (tmp_path / "fleet" / f"sim-{i:04d}" / "identity" / "upload-token").is_file()
        r = http.post("/v1/rollouts", json={"model": "shapes", "version": "v1",
                                            "stages": "100%"}, headers=auth)  # fmt: skip
        assert r.status_code == 200, r.text

        def installed() -> bool:
            devices = http.get("/v1/devices", headers=auth).json()["data"]
            return all(d["version"] == "v1" and d["phase"] == "COMMITTED" for d in devices)

        wait_for("both sim devices on v1 (TUF fetched with their credential)", installed,
                 timeout=120)  # fmt: skip
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(60) == 0, procs.log("sim")[-3000:]
    except BaseException:
        for name in ("controller", "sim"):
            print(f"--- {name}\n{procs.log(name)[-3000:]}")
        raise
    finally:
        http.close()
        procs.stop_all()
        broker.stop()
