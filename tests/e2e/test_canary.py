"""End to end: staged canary rollouts judged on ML signals, on a real broker.

A controller process (with its scheduler) and a simulated fleet (``edgefleet.sim``: the
real agent stacks in this process, real MQTT, real TUF downloads, real ONNX Runtime on
models/samples) run v2; then:

* a good model walks 1 -> 10 % -> 50 % -> 100 %, through a controller restart;
* models/shapes/bad (confidences pushed down) is stopped at its first stage and rolled
  back automatically, with the failing gate named in the status;
* a model ONNX Runtime cannot load fails on the device, which keeps serving v2, and the
  rollout stops;
* pause, resume, promote, abort and rollback through the CLI;
* a closed maintenance window holds its devices, and a device offline during its stage
  catches up when it returns.

Small and fast on purpose (two CPU cores): 1 s telemetry windows, 5 fps, seconds of soak.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgefleet.agent.hooks import install as install_hooks
from edgefleet.shared.hashing import sha256_file

from edgefleet.sim import SimFleet, fleet_configs
from tests.e2e.conftest import REPO, SAMPLES, System, wait_for
from tests.hooked_agent import TestHooks

pytestmark = [pytest.mark.broker, pytest.mark.slow]

V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
BAD = REPO / "models" / "shapes" / "bad" / "model.onnx"

GATES = [
    {"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1},
    {"metric": "errors", "threshold": 0, "min_samples": 1},
    {"metric": "detection_rate_ratio", "threshold": 0.7, "min_samples": 20},
    {"metric": "mean_confidence_ratio", "threshold": 0.85, "min_samples": 20},
    {"metric": "confidence_rank", "threshold": 0.25, "min_samples": 20},
    {"metric": "psi", "threshold": 2.0, "min_samples": 20},
]


def _retagged(src: Path, dest: Path, note: str) -> Path:
    """The same weights as different bytes: a "good" new version that behaves like src."""
    import onnx

    model = onnx.load(str(src))
    model.metadata_props.add(key="edgefleet_note", value=note)
    onnx.save(model, str(dest))
    return dest


def _unloadable(src: Path, dest: Path) -> Path:
    """Valid ONNX whose head op ONNX Runtime does not know (the push check refuses it)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.name == "/model.23/Sigmoid":
            node.domain = "com.edgefleet.missing"
    model.opset_import.append(helper.make_opsetid("com.edgefleet.missing", 1))
    onnx.save(model, str(dest))
    return dest


class Canary:
    def __init__(self, system: System, tmp: Path) -> None:
        self.system, self.tmp = system, tmp
        self.fleet: SimFleet | None = None

    def __enter__(self) -> Canary:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        install_hooks(None)  # the next test's agents run without them

    def push(self, path: Path, version: str) -> dict[str, Any]:
        with path.open("rb") as f:
            r = self.system.http.post("/v1/models/shapes/versions", files={"file": (path.name, f)},
                                      data={"version": version}, timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def start_fleet(
        self, n: int, hooks: dict[str, Any] | None = None, **labels: list[str]
    ) -> SimFleet:
        """``hooks``: test hooks the agents run with (tests/hooked_agent.py keys); they are
        installed in this process until the fleet stops."""
        configs = fleet_configs(
            n, controller_url=self.system.url, mqtt_url=self.system.broker.url,
            data_dir=self.tmp / "sim", source=SAMPLES, labels=labels, prefix="cam",
            fps=5, window_s=1, poll_s=3,
        )  # fmt: skip
        install_hooks(TestHooks.parse(hooks) if hooks else None)
        self.fleet = SimFleet(configs)
        self.fleet.start()
        ids = list(self.fleet.devices)
        wait_for("simulated devices online", lambda: all(
            (d := self.system.device(i)) and d["online"] for i in ids), timeout=90)  # fmt: skip
        return self.fleet

    def create(self, body: dict[str, Any]) -> int:
        r = self.system.http.post("/v1/rollouts", json={"model": "shapes", **body},
                                  headers={"X-Edgefleet-Actor": "e2e"}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        return int(r.json()["id"])

    def rollout(self, rid: int) -> dict[str, Any]:
        return self.system.http.get(f"/v1/rollouts/{rid}").json()  # type: ignore[no-any-return]

    def _state(self, rid: int) -> str:
        """The rollout's state; one slow answer on a loaded machine is "not yet", and a
        controller that stays stuck still fails the wait by its deadline."""
        try:
            return str(self.rollout(rid)["state"])
        except httpx.TimeoutException:
            return "unknown"

    def wait_state(self, rid: int, *states: str, timeout: float = 150) -> dict[str, Any]:
        try:
            wait_for(f"rollout {rid} {states}",
                     lambda: self._state(rid) in states, timeout)  # fmt: skip
        except AssertionError:
            pytest.fail(f"rollout {rid} stuck: {json.dumps(self.rollout(rid))[:3000]}\n"
                        f"{self.system.procs.log('controller')[-3000:]}")  # fmt: skip
        return self.rollout(rid)

    def on(self, device_id: str, version: str) -> bool:
        d = self.system.device(device_id)
        return bool(d and d["version"] == version and d["phase"] == "COMMITTED")

    def baseline(self, version: str = "v2") -> None:
        """Every device on ``version`` first (the skeleton's all-at-once rollout)."""
        assert self.fleet is not None
        rid = self.create({"version": version})
        self.wait_state(rid, "succeeded", timeout=180)

    def restart_controller(self, sig: int = signal.SIGTERM) -> None:
        """Stop the controller (SIGKILL: no goodbye) and start it again on the same
        port, data and database."""
        s = self.system
        s.procs.stop("controller", sig)
        s.procs.start("controller", s.controller_argv())

        def healthy() -> bool:
            try:
                return s.http.get("/healthz").status_code == 200
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for("controller back", healthy, timeout=60)


@pytest.fixture
def canary(system: System, tmp_path: Path) -> Iterator[Canary]:
    with Canary(system, tmp_path) as c:
        yield c


def test_good_model_walks_every_stage_through_a_controller_restart(canary: Canary) -> None:
    canary.push(V2, "v2")
    canary.push(_retagged(V2, canary.tmp / "v3.onnx", "v3"), "v3")
    canary.start_fleet(10, site=["store-1", "store-2"])
    canary.baseline("v2")
    spec = {"version": "v3", "stages": "1,10%,50%,100%", "soak_s": 4, "gates": GATES,
            "stratify_by": "site", "on_failure": "rollback"}  # fmt: skip
    rid = canary.create(spec)
    wait_for("stage 3", lambda: canary.rollout(rid)["stage"] >= 2, timeout=120)
    canary.restart_controller()  # the scheduler picks up from the database
    body = canary.wait_state(rid, "succeeded", "failed", "rolled_back", "paused", timeout=180)
    assert body["state"] == "succeeded", body["reason"]
    assert [s["devices"] for s in body["stages"]] == [1, 1, 5, 10]
    assert [s["outcome"] for s in body["stages"]] == ["successful"] * 4
    verdicts = {g["metric"]: g["verdict"] for g in body["stages"][0]["gates"]}
    assert verdicts["detection_rate_ratio"] == "PASS"
    assert verdicts["mean_confidence_ratio"] == "PASS"
    assert all(canary.on(d, "v3") for d in canary.fleet.devices)  # type: ignore[union-attr]
    status = canary.system.run_cli("rollout", "status", str(rid))
    assert status.returncode == 0, status.stderr
    assert "PASS   mean_confidence_ratio" in status.stdout


def test_bad_model_is_stopped_at_its_first_stage_and_rolled_back(canary: Canary) -> None:
    v2 = canary.push(V2, "v2")
    canary.push(BAD, "bad")
    fleet = canary.start_fleet(4, site=["store-1", "store-2"])
    canary.baseline("v2")
    out = canary.system.run_cli(
        # The gates fail the stage when their test crosses, not at the soak's end, so a long
        # soak costs nothing here; it only gives a loaded machine's few frames time to add up.
        "rollout", "create", "shapes:bad", "--stages", "1,50%,100%", "--soak", "30s",
        "--on-failure", "rollback", *[f"--gate={g['metric']}:{g['threshold']}:{g['min_samples']}"
                                      for g in GATES],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rid = int(out.stdout.split()[1].rstrip(":"))
    body = canary.wait_state(rid, "rolled_back", "succeeded", "paused", timeout=150)
    assert body["state"] == "rolled_back", body
    assert body["reason"].startswith("stage 1 (1) failed:")
    failed = {g["metric"] for g in body["stages"][0]["gates"] if g["verdict"] == "FAIL"}
    assert failed & {"detection_rate_ratio", "mean_confidence_ratio"}, body["stages"][0]
    assert [s["outcome"] for s in body["stages"]] == ["failed", "pending", "pending"]
    assert body["total"] == 1  # never went past its canary
    canary_id = body["devices"][0]["device_id"]
    back = body["rollback_version"].split(":")[1]
    wait_for("canary back on v2's bytes", lambda: canary.on(canary_id, back), timeout=90)
    dev = canary.system.device(canary_id)
    assert dev is not None
    versions = {v["version"]: v for v in
                canary.system.http.get("/v1/models/shapes/versions").json()["data"]}  # fmt: skip
    assert versions[back]["sha256"] == v2["sha256"] == sha256_file(V2)
    assert versions[back]["release"] > versions["bad"]["release"]
    for other in fleet.devices:
        if other != canary_id:
            assert canary.on(other, "v2")
    status = canary.system.run_cli("rollout", "status", str(rid), "--json")
    assert json.loads(status.stdout)["state"] == "rolled_back"
    listed = canary.system.run_cli("rollout", "list")
    rows = [line.split()[:3] for line in listed.stdout.splitlines()]
    assert [str(rid), "shapes:bad", "rolled_back"] in rows, listed.stdout
    watched = canary.system.run_cli("rollout", "status", str(rid), "--watch")
    assert watched.returncode == 1, watched.stderr  # ended, but not succeeded
    assert "rolled_back" in watched.stdout and "FAIL" not in watched.stderr


def test_model_that_fails_to_load_is_refused_at_push(canary: Canary) -> None:
    """ONNX Runtime cannot load it, so the controller's detector check (the agent's own
    loader) refuses the push: no device ever downloads it, no rollout can name it."""
    path = _unloadable(V2, canary.tmp / "broken.onnx")
    with path.open("rb") as f:
        r = canary.system.http.post("/v1/models/shapes/versions", data={"version": "broken"},
                                    files={"file": (path.name, f)}, timeout=120)  # fmt: skip
    assert r.status_code == 422, r.text
    assert "not a detector the agent can run" in r.json()["detail"]
    versions = canary.system.http.get("/v1/models/shapes/versions")
    assert versions.status_code == 404 or not versions.json()["data"], versions.text


def test_operator_actions_through_the_cli(canary: Canary) -> None:
    canary.push(V2, "v2")
    canary.push(_retagged(V2, canary.tmp / "v3.onnx", "v3"), "v3")
    fleet = canary.start_fleet(4)
    canary.baseline("v2")
    run = canary.system.run_cli
    out = run("rollout", "create", "shapes:v3", "--stages", "1,50%,100%", "--soak", "1h")
    assert out.returncode == 0, out.stderr
    rid = out.stdout.split()[1].rstrip(":")
    first = canary.rollout(int(rid))["devices"][0]["device_id"]
    wait_for("canary on v3", lambda: canary.on(first, "v3"), timeout=90)
    for action, state in (("pause", "paused"), ("resume", "running"), ("promote", "running")):
        out = run("rollout", action, rid)
        assert out.returncode == 0 and out.stdout.strip().endswith(state), out.stderr
    wait_for("stage 2 assigned", lambda: canary.rollout(int(rid))["total"] == 2, timeout=30)
    refused = run("rollout", "resume", rid)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "cannot resume" in refused.stderr
    assert run("rollout", "abort", rid).returncode == 0
    assert run("rollout", "rollback", rid).returncode == 0
    moved = [d["device_id"] for d in canary.rollout(int(rid))["devices"]]
    back = canary.rollout(int(rid))["rollback_version"].split(":")[1]
    wait_for("rolled back", lambda: all(canary.on(d, back) for d in moved), timeout=90)
    untouched = [d for d in fleet.devices if d not in moved]
    assert all(canary.on(d, "v2") for d in untouched)
    audit = canary.system.http.get("/v1/audit", params={"target": f"rollout/{rid}"}).json()
    actions = [a["action"] for a in reversed(audit["data"])]
    assert actions == ["create", "pause", "resume", "promote", "abort", "rollback"]
    assert {a["actor"] for a in audit["data"]} != {"unknown"}


def test_maintenance_window_and_offline_device_catching_up(canary: Canary) -> None:
    canary.push(V2, "v2")
    canary.push(_retagged(V2, canary.tmp / "v3.onnx", "v3"), "v3")
    fleet = canary.start_fleet(4, site=["open", "closed"])
    canary.baseline("v2")
    offline = "cam-0002"  # site "open"
    fleet.stop(offline)
    wait_for("offline", lambda: not canary.system.device(offline)["online"])  # type: ignore[index]
    never = {"cron": "* * 30 2 *", "timezone": "Europe/Berlin", "selector": {"site": "closed"}}
    rid = canary.create({"version": "v3", "soak_s": 1, "maintenance_windows": [never]})
    wait_for("open site on v3", lambda: canary.on("cam-0000", "v3"), timeout=90)
    time.sleep(4)
    body = canary.rollout(rid)
    assert body["state"] == "running"  # waits for the offline device
    assigned = {d["device_id"] for d in body["devices"]}
    assert assigned == {"cam-0000", "cam-0002"}  # the closed site is held back
    assert canary.on("cam-0001", "v2") and canary.on("cam-0003", "v2")
    fleet.start(offline)
    wait_for("offline device caught up", lambda: canary.on(offline, "v3"), timeout=90)
    body = canary.rollout(rid)
    assert body["state"] == "running"  # the closed site is still waiting for its window
    assert {d["device_id"] for d in body["devices"]} == {"cam-0000", "cam-0002"}
    assert body["done"] == 2


def test_demo_bad_canary_scene(canary: Canary) -> None:
    from edgefleet.demo_canary import bad_canary_scene

    canary.push(V2, "v2")
    canary.start_fleet(3, fleet=["demo"])
    canary.baseline("v2")
    said: list[str] = []
    bad_canary_scene(canary.system.http, said.append, soak="20s")
    text = "\n".join(said)
    assert "stopped automatically: stage 1 (1) failed:" in text
    assert "re-signed" in text
