"""Two controller processes on one data dir and one database (SQLite, or PostgreSQL from
``EDGEFLEET_TEST_PG_URL``, skipped with the reason when unreachable), one broker.

Both ingest (shared subscription), both serve REST and TUF, both sign (the flock on
DATA/tuf/.lock, re-reading the chains other processes wrote). Only the holder of the
database lease advances rollouts: a staged rollout runs under controller A, A is killed
(SIGKILL: no goodbye, its lease must expire) mid-rollout, and B takes over and finishes.
The simulated agents (``edgefleet.sim``: the real agent stack, real MQTT, real TUF) fetch
from B, so they see metadata A signed and B signed on top of it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from edgefleet.devbroker import DevBroker, free_port
from edgefleet.sim import SimFleet, fleet_configs
from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test
from tests.e2e.conftest import REPO, SAMPLES, Procs, cli, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

LEASE = "SELECT holder FROM scheduler_lease WHERE name = 'rollouts'"

V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
GATES = [
    {"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1},
    {"metric": "errors", "threshold": 0, "min_samples": 1},
]


@dataclass
class Replicas:
    broker: DevBroker
    data: Path
    procs: Procs
    urls: dict[str, str]
    database_url: str | None = None  # None: SQLite in the data dir

    def start(self, name: str) -> subprocess.Popen[bytes]:
        port = self.urls[name].rsplit(":", 1)[1]
        db = ["--database-url", self.database_url] if self.database_url else []
        proc = self.procs.start(name, cli(
            "controller", "serve", "--data", str(self.data), "--mqtt", self.broker.url,
            "--listen", f"127.0.0.1:{port}", "--insecure-dev", *db,
        ))  # fmt: skip
        wait_for(f"controller {name}", lambda: self._healthy(name), timeout=90)
        return proc

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.urls[name]}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def lease_pid(self) -> int | None:
        """The pid in the lease holder's name (host:pid:nonce), from the shared database."""
        url = self.database_url or f"sqlite:///{self.data / 'edgefleet.db'}"
        engine = create_engine(url)
        try:
            with engine.connect() as c:
                holder = c.execute(text(LEASE)).scalar()
        finally:
            engine.dispose()
        return int(holder.split(":")[-2]) if holder else None

    def http(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[name], timeout=120)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    broker = DevBroker(tmp_path / "mosquitto").start()
    procs = Procs(tmp_path)
    urls = {n: f"http://127.0.0.1:{free_port()}" for n in ("ctl-a", "ctl-b")}
    try:
        yield Replicas(broker, tmp_path / "controller", procs, urls, database_url)
    finally:
        procs.stop_all()
        broker.stop()


def _push(http: httpx.Client, path: Path, version: str) -> None:
    with path.open("rb") as f:
        r = http.post("/v1/models/shapes/versions", files={"file": (path.name, f)},
                      data={"version": version})  # fmt: skip
    assert r.status_code == 200, r.text


def _retagged(src: Path, dest: Path, note: str) -> Path:
    import onnx

    model = onnx.load(str(src))
    model.metadata_props.add(key="edgefleet_note", value=note)
    onnx.save(model, str(dest))
    return dest


def _create(http: httpx.Client, body: dict[str, Any]) -> int:
    r = http.post("/v1/rollouts", json={"model": "shapes", **body},
                  headers={"X-Edgefleet-Actor": "e2e"})  # fmt: skip
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def _state(http: httpx.Client, rid: int) -> dict[str, Any]:
    return http.get(f"/v1/rollouts/{rid}").json()  # type: ignore[no-any-return]


def test_one_scheduler_at_a_time_and_the_other_takes_over(
    replicas: Replicas, tmp_path: Path
) -> None:
    a = replicas.start("ctl-a")
    wait_for("ctl-a holds the lease", lambda: replicas.lease_pid() == a.pid, timeout=60)
    b = replicas.start("ctl-b")
    fleet = SimFleet(fleet_configs(
        3, controller_url=replicas.urls["ctl-b"], mqtt_url=replicas.broker.url,
        data_dir=tmp_path / "sim", source=SAMPLES, prefix="cam", fps=5, window_s=1, poll_s=3,
    ))  # fmt: skip
    with replicas.http("ctl-a") as http_a, replicas.http("ctl-b") as http_b:
        try:
            fleet.start()
            _push(http_b, V2, "v2")  # B signs the image repo...
            _push(http_a, _retagged(V2, tmp_path / "v3.onnx", "v3"), "v3")  # ...A on top
            online = lambda: all((d := http_b.get(f"/v1/devices/{i}")).status_code == 200  # noqa: E731
                                 and d.json()["online"] for i in fleet.devices)  # fmt: skip
            wait_for("simulated devices online", online, timeout=120)
            first = _create(http_b, {"version": "v2"})  # the first tick runs in B
            wait_for("v2 everywhere", lambda: _state(http_b, first)["state"] == "succeeded",
                     timeout=180)  # fmt: skip

            rid = _create(http_b, {"version": "v3", "stages": "1,2,100%", "soak_s": 3,
                                   "gates": GATES})  # fmt: skip
            holders: set[int | None] = set()

            def in_stage_2() -> bool:  # A's scheduler advances it; B only serves
                holders.add(replicas.lease_pid())
                return int(_state(http_b, rid)["stage"]) >= 1

            wait_for("stage 2 under ctl-a", in_stage_2, timeout=120)
            assert holders == {a.pid}
            assert "holds the rollout lease" not in replicas.procs.log("ctl-b")
            assert _state(http_b, rid)["state"] == "running"
            replicas.procs.stop("ctl-a", signal.SIGKILL)  # mid-rollout, no lease release
            body: dict[str, Any] = {}

            def ended() -> bool:
                nonlocal body
                body = _state(http_b, rid)
                return body["state"] != "running"

            wait_for("B finishes the rollout", ended, timeout=240)
        finally:
            fleet.stop()
    assert body["state"] == "succeeded", body
    assert [s["outcome"] for s in body["stages"]] == ["successful"] * 3
    assert replicas.lease_pid() == b.pid
    assert "holds the rollout lease" in replicas.procs.log("ctl-b")
    assert all(d["version"] == "v3" and d["done"] for d in body["devices"]), body["devices"]
    log_b = replicas.procs.log("ctl-b")
    assert "Traceback" not in log_b
    assert "lost the broker" not in log_b  # the replicas' MQTT sessions are apart
