"""Faults on purpose, and what the fleet did about each: a table of outcomes (issue 12).

Real parts only: a private Mosquitto (``DevBroker``), a controller process and agent
processes (``edgefleet agent run``), so a kill is a real SIGKILL. Each scenario has its
own devices (label ``scenario=<name>``, fresh data folders), its own version of the model
(v1's weights, different bytes) and a rollout to them alone, run one after another:

* ``controller-kill``: the controller is SIGKILLed once every device has part of the
  model on disk (downloads held to ``RATE`` by the test hook ``download_rate_bps``:
  agents run through ``tests/hooked_agent.py``, nothing in their config), then started
  again. Expected: the rollout succeeds and every device runs the version (transient
  faults are not install failures).
* ``broker-outage``: the broker is stopped at the same moment for ``outage_s`` seconds,
  then started again on its port. Expected: the same.
* ``agent-kill:PHASE``: the agent SIGKILLs itself in PHASE (hook ``sigkill_in_phase``)
  and is started again. Expected: the rollout succeeds, the device runs the version,
  and its store holds exactly the committed model (no partial file, no stray model).
* ``disk-full``: the agent runs under RLIMIT_FSIZE below the model's size (writes fail
  with EFBIG, as a full disk fails them with ENOSPC). Expected: the device reports
  FAILED "no room" and nothing partial stays; restarted with room, it runs the version.

``got`` is what the controller reported (``GET /v1/rollouts/ID``, ``/v1/devices/ID``)
and what is on the devices' disks; ``pass`` when it is what was expected.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from edgefleet.shared.errors import ConfigError, EdgefleetError

from edgefleet.devbroker import DevBroker, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rollout import _wait  # the sibling module: poll a check until it holds

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "shapes" / "v1" / "model.onnx"
HOOKED_AGENT = REPO / "tests" / "hooked_agent.py"  # installs test hooks, then runs edgefleet
SAMPLES = REPO / "models" / "samples"
RATE = 600_000  # bytes per second per download in the controller / broker scenarios
ACTOR = {"X-Edgefleet-Actor": "bench"}
PHASES = ("DOWNLOADING", "VERIFIED", "PREPARING", "WARMING", "SWAPPED", "HEALTH_CHECK")
SCENARIOS = ("controller-kill", "broker-outage", *(f"agent-kill:{p}" for p in PHASES),
             "disk-full")  # fmt: skip
GATES = [{"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1}]


@dataclass
class Lab:
    """The broker, the controller and the agents of one run."""

    folder: Path
    broker: DevBroker
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def _spawn(self, name: str, argv: list[str], limit: int | None = None,
               hooks: dict[str, Any] | None = None) -> None:  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # With hooks, edgefleet runs through the test launcher that installs them.
        head = [str(HOOKED_AGENT), json.dumps(hooks)] if hooks else ["-m", "edgefleet"]
        with (self.folder / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *head, *argv], stdout=log,
                stderr=subprocess.STDOUT, env=env,
                preexec_fn=(lambda: _fsize_limit(limit)) if limit else None,  # noqa: PLW1509
            )  # fmt: skip

    def start_controller(self) -> None:
        self._spawn("controller", [
            "controller", "serve", "--data", str(self.folder / "controller"),
            "--mqtt", self.broker.url, "--listen", f"127.0.0.1:{self.port}", "--insecure-dev",
        ])  # fmt: skip
        _wait("the controller to answer", self._healthy, 90)

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def start_agent(self, device: str, scenario: str, limit: int | None = None,
                    **hooks: Any) -> None:  # fmt: skip
        """``hooks``: tests/hooked_agent.py's (download_rate_bps, sigkill_in_phase)."""
        cfg = {
            "device_id": device, "labels": {"scenario": scenario},
            "controller_url": f"http://127.0.0.1:{self.port}", "mqtt_url": self.broker.url,
            "data_dir": str(self.folder / device),
            "source": {"kind": "folder", "path": str(SAMPLES), "fps": 5},
            "poll_interval_s": 3, "telemetry_window_s": 1, "health_check_frames": 3,
        }  # fmt: skip
        path = self.folder / f"{device}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self._spawn(device, ["agent", "run", "--config", str(path)], limit, hooks)

    def device(self, device_id: str) -> dict[str, Any]:
        try:
            r = self.http.get(f"/v1/devices/{device_id}", timeout=10)
        except httpx.HTTPError:
            return {}
        return r.json() if r.status_code == 200 else {}

    def rollout(self, rid: int) -> dict[str, Any]:
        try:
            return self.http.get(f"/v1/rollouts/{rid}", timeout=10).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return {}

    def push(self, version: str) -> str:
        """v1's weights as new bytes named ``version``; returns their sha256."""
        import onnx
        from edgefleet.shared.hashing import sha256_file

        model = onnx.load(str(MODEL))
        model.metadata_props.add(key="edgefleet_note", value=version)
        path = self.folder / f"{version}.onnx"
        onnx.save(model, str(path))
        with path.open("rb") as f:
            r = self.http.post("/v1/models/shapes/versions", files={"file": (path.name, f)},
                               data={"version": version}, timeout=300)  # fmt: skip
        if r.status_code != 200:
            raise EdgefleetError(f"push {version}: HTTP {r.status_code} {r.text[:200]}")
        return sha256_file(path)

    def create(self, version: str, scenario: str) -> int:
        body = {"model": "shapes", "version": version, "selector": {"scenario": scenario},
                "stages": "100%", "soak_s": 1, "gates": GATES,
                "install_timeout_s": 600}  # fmt: skip
        r = self.http.post("/v1/rollouts", json=body, headers=ACTOR, timeout=120)
        if r.status_code != 200:
            raise EdgefleetError(f"rollout of {version}: HTTP {r.status_code} {r.text[:200]}")
        return int(r.json()["id"])

    def settled(self, rid: int, timeout: float) -> dict[str, Any]:
        settled = ("succeeded", "failed", "rolled_back", "paused", "aborted")
        try:
            return _wait(f"rollout {rid}", lambda: (b := self.rollout(rid)).get("state")  # type: ignore[no-any-return]
                         in settled and b, timeout)  # fmt: skip
        except EdgefleetError:
            return self.rollout(rid)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        self.http.close()


def _fsize_limit(limit: int) -> None:
    # Ignored, SIGXFSZ turns into EFBIG on write, as a full disk turns into ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@dataclass(frozen=True)
class Outcome:
    scenario: str
    expected: str
    got: str
    ok: bool
    seconds: float


def _models(lab: Lab, device: str) -> set[str]:
    folder = lab.folder / device / "models"
    return {f.name for f in folder.iterdir()} if folder.is_dir() else set()


def _partial(lab: Lab, device: str, sha: str, length: int) -> bool:
    try:
        return 0 < (lab.folder / device / "models" / f".{sha}.onnx.part").stat().st_size < length
    except FileNotFoundError:
        return False


def _on(lab: Lab, devices: list[str], version: str) -> int:
    return sum(
        (d := lab.device(i)).get("version") == version and d.get("phase") == "COMMITTED"
        for i in devices
    )


def _fleet_outcome(lab: Lab, rid: int, devices: list[str], version: str) -> tuple[str, bool]:
    body = lab.settled(rid, 300)
    with contextlib.suppress(EdgefleetError):
        _wait("devices on the version", lambda: _on(lab, devices, version) == len(devices), 60)
    on = _on(lab, devices, version)
    got = f"rollout {body.get('state', '?')}, {on}/{len(devices)} on {version}"
    return got, body.get("state") == "succeeded" and on == len(devices)


def _cut_downloads(lab: Lab, name: str, version: str, devices: list[str],
                   cut: Callable[[], None]) -> tuple[str, bool]:  # fmt: skip
    """Start ``devices`` slow, roll ``version`` out, ``cut`` once all are mid-download."""
    sha = lab.push(version)
    for d in devices:
        lab.start_agent(d, name, download_rate_bps=RATE)
    _wait("devices online", lambda: all(lab.device(d).get("online") for d in devices), 90)
    rid = lab.create(version, name)
    length = (lab.folder / f"{version}.onnx").stat().st_size
    _wait("every device mid-download",
          lambda: all(_partial(lab, d, sha, length) for d in devices), 120)  # fmt: skip
    cut()
    return _fleet_outcome(lab, rid, devices, version)


def controller_kill(lab: Lab, name: str, version: str) -> tuple[str, bool]:
    def cut() -> None:
        lab.kill("controller")
        lab.start_controller()

    return _cut_downloads(lab, name, version, [f"{name}-{i}" for i in range(2)], cut)


def broker_outage(lab: Lab, name: str, version: str, outage_s: float) -> tuple[str, bool]:
    def cut() -> None:
        lab.broker.stop()
        time.sleep(outage_s)  # the outage itself: its length is the scenario
        lab.broker.start()

    return _cut_downloads(lab, name, version, [f"{name}-{i}" for i in range(2)], cut)


def agent_kill(lab: Lab, name: str, version: str, phase: str) -> tuple[str, bool]:
    device = name.replace(":", "-").lower()
    sha = lab.push(version)
    lab.start_agent(device, name, sigkill_in_phase=phase)
    _wait("device online", lambda: lab.device(device).get("online"), 90)
    rid = lab.create(version, name)
    rc = lab.procs[device].wait(timeout=300)
    lab.procs.pop(device)
    lab.start_agent(device, name)
    got, ok = _fleet_outcome(lab, rid, [device], version)
    stored = _models(lab, device)
    clean = stored == {f"{sha}.onnx"}
    got += f", killed rc {rc}, store {'clean' if clean else sorted(stored)}"
    return got, ok and rc == -signal.SIGKILL and clean


def disk_full(lab: Lab, name: str, version: str) -> tuple[str, bool]:
    device = name
    sha = lab.push(version)
    limit = (lab.folder / f"{version}.onnx").stat().st_size // 2
    lab.start_agent(device, name, limit=limit)
    _wait("device online", lambda: lab.device(device).get("online"), 90)
    rid = lab.create(version, name)
    full = _wait("a no-room report", lambda: (d := lab.device(device)).get("phase") == "FAILED"
                 and "no room" in (d.get("error") or "") and d, 120)  # fmt: skip
    _wait("nothing partial left", lambda: not _models(lab, device), 30)
    lab.kill(device, signal.SIGTERM)
    lab.start_agent(device, name)  # room again
    with contextlib.suppress(EdgefleetError):
        _wait("the version after room returns", lambda: _on(lab, [device], version), 120)
    on = _on(lab, [device], version) == 1
    lab.http.post(f"/v1/rollouts/{rid}/abort", headers=ACTOR)  # it failed; end it
    got = f"FAILED {full['error'][:40]!r}, then {'on ' + version if on else 'not installed'}"
    return got, on and _models(lab, device) == {f"{sha}.onnx"}


EXPECTED = {
    "controller-kill": "rollout succeeded, all on version",
    "broker-outage": "rollout succeeded, all on version",
    "agent-kill": "rollout succeeded, on version, store clean",
    "disk-full": "FAILED no room, nothing partial; installs once room returns",
}


def _run_one(lab: Lab, scenario: str, version: str, outage_s: float) -> tuple[str, bool]:
    kind, _, phase = scenario.partition(":")
    if kind == "controller-kill":
        return controller_kill(lab, scenario, version)
    if kind == "broker-outage":
        return broker_outage(lab, scenario, version, outage_s)
    if kind == "agent-kill":
        return agent_kill(lab, scenario, version, phase)
    return disk_full(lab, scenario, version)


def check_scenarios(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ConfigError(
            f"unknown scenario {unknown[0]!r}: expected one of {', '.join(SCENARIOS)}"
        )
    return names


@contextlib.contextmanager
def _lab(folder: Path) -> Iterator[Lab]:
    broker = DevBroker(folder / "mosquitto").start()
    lab = Lab(folder, broker)
    try:
        lab.start_controller()
        yield lab
    finally:
        lab.close()
        broker.stop()


def bench(scenarios: list[str] | None = None, outage_s: float = 5.0) -> dict[str, Any]:
    chosen = check_scenarios(scenarios or list(SCENARIOS))
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-bench-faults-") as tmp,
        _lab(Path(tmp)) as lab,
    ):
        for i, scenario in enumerate(chosen):
            t0 = time.monotonic()
            try:
                got, ok = _run_one(lab, scenario, f"f{i + 1}", outage_s)
            except (EdgefleetError, httpx.HTTPError, subprocess.TimeoutExpired) as e:
                got, ok = f"error: {getattr(e, 'reason', e)}", False
            rows.append(Outcome(scenario, EXPECTED[scenario.partition(":")[0]], got, ok,
                                round(time.monotonic() - t0, 1)).__dict__)  # fmt: skip
    return {"scenarios": rows, "passed": sum(r["ok"] for r in rows), "total": len(rows)}


def print_table(result: dict[str, Any]) -> None:
    rows = result["scenarios"]
    w = max(len(r["scenario"]) for r in rows)
    e = max(len(r["expected"]) for r in rows)
    g = max(len(r["got"]) for r in rows)
    print(f"{'scenario':<{w}}  {'expected':<{e}}  {'got':<{g}}  pass  {'s':>4}")
    for r in rows:
        mark = "yes" if r["ok"] else "NO"
        cells = f"{r['scenario']:<{w}}  {r['expected']:<{e}}  {r['got']:<{g}}"
        print(f"{cells}  {mark:<4}  {r['seconds']:>4.0f}")
    print(f"{result['passed']}/{result['total']} scenarios as expected")
