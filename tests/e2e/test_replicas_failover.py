"""Three controller replicas behind no shared folder: one PostgreSQL database (a fresh one
per test, ``EDGEFLEET_TEST_PG_URL`` or 127.0.0.1:5432, skipped with the reason when
unreachable), the TUF metadata in it (``--tuf-store database``), the artifacts in an
S3-compatible bucket (a real moto server over HTTP), one Mosquitto. Each replica has its
own data folder; they share only the signing keys (copied, as deploy/README.md says).

Any replica answers any request: the model is pushed to one, the rollout made on another,
devices fetch from the other two. The replica holding the rollout lease is killed
(SIGKILL: no release, its lease must expire) in the middle of a staged rollout; another
takes the lease over, under a new fencing token, and finishes it: every device on the new
version, and each scheduler action in the audit log once.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
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

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

BUCKET = "fleet"
NAMES = ("ctl-a", "ctl-b", "ctl-c")
MODEL = REPO / "models" / "shapes" / "v2" / "model.onnx"
GATES = [{"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1}]


@dataclass
class Cluster:
    broker: DevBroker
    folder: Path
    procs: Procs
    urls: dict[str, str]
    database_url: str
    bucket_url: str

    def start(self, *names: str) -> list[subprocess.Popen[bytes]]:
        """Start the replicas at once, then wait for each to answer."""
        procs = [self._spawn(name) for name in names]
        for name in names:
            wait_for(f"controller {name}", lambda: self._healthy(name), timeout=90)  # noqa: B023
        return procs

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        port = self.urls[name].rsplit(":", 1)[1]
        return self.procs.start(name, cli(
            "controller", "serve", "--data", str(self.folder / name), "--mqtt", self.broker.url,
            "--listen", f"127.0.0.1:{port}", "--insecure-dev",
            "--database-url", self.database_url, "--tuf-store", "database",
            "--artifact-store", self.bucket_url,
        ))  # fmt: skip

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.urls[name]}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, sql: str) -> list[Any]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as c:
                return list(c.execute(text(sql)).all())
        finally:
            engine.dispose()

    def lease(self) -> tuple[int, int] | None:
        """(pid of the holder, fencing token) of the rollout lease."""
        rows = self.query("SELECT holder, epoch FROM scheduler_lease WHERE name = 'rollouts'")
        return (int(rows[0][0].split(":")[-2]), int(rows[0][1])) if rows else None

    def http(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[name], timeout=120)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) with a bucket; the replicas' credentials."""
    for key, value in (("AWS_ACCESS_KEY_ID", "edgefleet-test"),
                       ("AWS_SECRET_ACCESS_KEY", "edgefleet-test-secret")):  # fmt: skip
        monkeypatch.setenv(key, value)
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        wait_for("moto_server", lambda: proc.poll() is None and _bucket_made(client))
        yield f"s3://{BUCKET}/artifacts?endpoint={endpoint}&presign=600"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bucket_made(client: Any) -> bool:
    try:
        client.create_bucket(Bucket=BUCKET)
    except Exception:  # noqa: BLE001 - botocore's connection errors until moto listens
        return False
    return True


@pytest.fixture
def cluster(pg_url: str, s3_bucket: str, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811
    broker = DevBroker(tmp_path / "mosquitto").start()
    procs = Procs(tmp_path)
    urls = {n: f"http://127.0.0.1:{free_port()}" for n in NAMES}
    try:
        yield Cluster(broker, tmp_path, procs, urls, pg_url, s3_bucket)
    finally:
        procs.stop_all()
        broker.stop()


def _push(http: httpx.Client, version: str) -> None:
    with MODEL.open("rb") as f:
        r = http.post("/v1/models/shapes/versions", files={"file": (MODEL.name, f)},
                      data={"version": version})  # fmt: skip
    assert r.status_code == 200, r.text


def _state(http: httpx.Client, rid: int) -> dict[str, Any]:
    return http.get(f"/v1/rollouts/{rid}").json()  # type: ignore[no-any-return]


def test_the_leader_dies_mid_rollout_and_another_replica_finishes_it_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    [a] = cluster.start("ctl-a")  # makes the keys and both repositories
    wait_for("ctl-a holds the lease", lambda: (cluster.lease() or (0, 0))[0] == a.pid)
    for name in NAMES[1:]:  # the other replicas: the same keys, nothing else shared
        shutil.copytree(tmp_path / "ctl-a" / "keys", tmp_path / name / "keys")
    others = cluster.start(*NAMES[1:])
    configs = []
    for name in NAMES[1:]:  # the devices fetch from the replicas that stay up
        configs += fleet_configs(
            2, controller_url=cluster.urls[name], mqtt_url=cluster.broker.url,
            data_dir=tmp_path / "sim", source=SAMPLES, prefix=f"cam-{name[-1]}",
            fps=5, window_s=1, poll_s=2,
        )  # fmt: skip
    fleet = SimFleet(configs)
    with cluster.http("ctl-a") as http_a, cluster.http("ctl-b") as http_b, \
            cluster.http("ctl-c") as http_c:  # fmt: skip
        try:
            fleet.start()
            _push(http_c, "v2")  # into the bucket and the database through C
            online = lambda: all((d := http_b.get(f"/v1/devices/{i}")).status_code == 200  # noqa: E731
                                 and d.json()["online"] for i in fleet.devices)  # fmt: skip
            wait_for("simulated devices online", online, timeout=120)
            r = http_b.post("/v1/rollouts", headers={"X-Edgefleet-Actor": "e2e"}, json={
                "model": "shapes", "version": "v2", "stages": "1,2,100%", "soak_s": 2,
                "gates": GATES,
            })  # fmt: skip
            assert r.status_code == 200, r.text
            rid = int(r.json()["id"])
            wait_for("stage 2 under ctl-a", lambda: int(_state(http_c, rid)["stage"]) >= 1,
                     timeout=120)  # fmt: skip
            assert _state(http_a, rid)["state"] == "running"
            first = cluster.lease()
            assert first is not None and first[0] == a.pid
            cluster.procs.stop("ctl-a", signal.SIGKILL)  # mid-rollout, no lease release
            body: dict[str, Any] = {}

            def ended() -> bool:
                nonlocal body
                body = _state(http_b, rid)
                return body["state"] != "running"

            wait_for("another replica finishes the rollout", ended, timeout=180)
            assert not fleet.errors()
        finally:
            fleet.stop()
    assert body["state"] == "succeeded", body
    assert [s["outcome"] for s in body["stages"]] == ["successful"] * 3
    assert sorted(d["device_id"] for d in body["devices"]) == sorted(fleet.devices)
    assert all(d["version"] == "v2" and d["done"] for d in body["devices"]), body["devices"]
    holder, epoch = cluster.lease() or (0, 0)
    assert holder in {p.pid for p in others} and epoch > first[1]
    actions = cluster.query(
        "SELECT action, detail FROM audit WHERE actor = 'scheduler' "
        f"AND target = 'rollout/{rid}' ORDER BY id"
    )
    steps = [(action, detail["stage"]) for action, detail in actions]
    assert steps == [("next_stage", 1), ("next_stage", 2), ("succeed", 3)], steps
    for name in NAMES[1:]:
        log = cluster.procs.log(name)
        assert "Traceback" not in log, log[log.find("Traceback") - 1000 :][:5000]
