"""``edgefleet demo``: the whole system on one machine, as separate processes.

A private Mosquitto on a free port, the controller, N agents looping over the shipped sample
images; then push v1, roll it out, push v2, roll it out, and print the fleet table. Every
process it starts, it stops (unless ``--keep``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from edgefleet.controller.pki import DevicePki
from edgefleet.demo_canary import bad_canary_scene
from edgefleet.demo_drift import drift_scene, prepare_frames, retrain_scene
from edgefleet.devbroker import DevBroker, free_port
from edgefleet.shared.errors import EdgefleetError, TransportError

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
START_TIMEOUT = 60.0  # seconds for a process to come up
ROLLOUT_TIMEOUT = 180.0  # seconds for every agent to report the new version
SITES = ("store-north", "store-south", "line-1", "line-2")
DRIFT_SITE = "store-south"  # its camera's light goes down in the drift scene


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Fleet:
    """Everything the demo started, so it can stop all of it."""

    work: Path
    broker: DevBroker
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.work / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = self.work / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise EdgefleetError(f"{name} exited ({proc.returncode}): {' | '.join(tail)}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.broker.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgefleet", *args]


def _wait(what: str, check: Callable[[], bool], fleet: Fleet, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.check_alive()
        if check():
            return
        time.sleep(0.5)
    raise TransportError(f"timed out after {timeout:.0f}s waiting for {what}")


def _get(client: httpx.Client, path: str) -> Any:
    try:
        r = client.get(path)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _agent_config(work: Path, i: int, url: str, mqtt: str, samples: Path) -> Path:
    device_id = f"demo-cam-{i + 1}"
    cfg = {
        "device_id": device_id,
        "labels": {"site": SITES[i % len(SITES)], "fleet": "demo"},
        "controller_url": url,
        "mqtt_url": mqtt,
        "data_dir": str(work / "agents" / device_id),
        "source": {"kind": "folder", "path": str(samples), "fps": 5},
        "poll_interval_s": 10,
        "telemetry_window_s": 5,
    }
    if mqtt.startswith("mqtts://"):  # files that `edgefleet agent enroll` writes
        ident = work / "agents" / device_id / "identity"
        cfg["tls"] = {"ca": str(ident / "ca.pem"), "cert": str(ident / "device.pem"),
                      "key": str(ident / "device.key")}  # fmt: skip
    path = work / "agents" / f"{device_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_cli(*args: str, env: dict[str, str], show: bool = True) -> str:
    say(f"$ edgefleet {' '.join(args)}")
    out = subprocess.run(_cli(*args), capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise EdgefleetError(f"edgefleet {args[0]} {args[1]} failed: {out.stderr.strip()}")
    if show and out.stdout.strip():
        say(out.stdout.rstrip())
    return out.stdout


def _roll_out(client: httpx.Client, fleet: Fleet, env: dict[str, str], version: str) -> None:
    model_file = MODELS / "shapes" / version / "model.onnx"
    _run_cli("model", "push", "shapes", str(model_file), "--version", version, env=env)
    say(f"$ edgefleet rollout create shapes:{version} --selector fleet=demo")
    r = client.post(
        "/v1/rollouts", json={"model": "shapes", "version": version, "selector": {"fleet": "demo"}}
    )
    if r.status_code != 200:
        raise EdgefleetError(f"rollout create failed: {r.json().get('detail', r.text)}")
    rollout = r.json()
    rid = rollout["id"]
    say(f"rollout {rid}: shapes:{version} -> {rollout['total']} device(s)")
    last = ""

    def done() -> bool:
        nonlocal last
        status = _get(client, f"/v1/rollouts/{rid}")
        if status is None:
            return False
        if status["state"] == "failed":
            raise EdgefleetError(f"rollout {rid} failed: {status}")
        phases = ", ".join(f"{d['device_id']}={d['phase']}" for d in status["devices"])
        line = f"  [{status['done']}/{status['total']}] {phases}"
        if line != last:
            say(line)
            last = line
        return bool(status["state"] == "succeeded")

    _wait(f"rollout of shapes:{version}", done, fleet, ROLLOUT_TIMEOUT)
    say(f"rollout {rid} succeeded: every agent runs shapes:{version}, verified through TUF")


def _wait_settled(client: httpx.Client, fleet: Fleet, n_agents: int) -> None:
    """Wait until every agent has committed a good version again (the canary's rollback)."""

    def settled() -> bool:
        devices = (_get(client, "/v1/devices") or {"data": []})["data"]
        good = [d for d in devices if d["phase"] == "COMMITTED" and d["version"] != "bad"]
        return len(good) >= n_agents

    _wait("the canary back on the good version", settled, fleet, ROLLOUT_TIMEOUT)


def _start(fleet: Fleet, n_agents: int) -> tuple[str, dict[str, str]]:
    """The controller as shipped (API tokens on every read and write) and the agents,
    each enrolled the real way: a one-time token, its own key, its credential."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = fleet.work / "controller"
    if not DevicePki(data / "pki").exists():  # the mTLS demo made it for its broker
        DevicePki(data / "pki").init(("localhost",))  # the device CA agents enroll against
    fleet.spawn("controller", _cli(
        "controller", "serve", "--data", str(data), "--mqtt", fleet.broker.url,
        "--listen", f"127.0.0.1:{port}",
    ))  # fmt: skip
    with httpx.Client(base_url=url, timeout=5) as client:
        _wait("the controller", lambda: _get(client, "/healthz") is not None, fleet, START_TIMEOUT)
    say(f"controller  {url}  (data in {data})")
    say("  NOTE: demo mode keeps every TUF signing key in the controller's data folder.")
    token = _admin_token(fleet.work, data)
    env = {**os.environ, "EDGEFLEET_URL": url, "EDGEFLEET_TOKEN": token}
    # One store's camera reads a copy of the frames that the drift scene darkens later.
    dark_store = prepare_frames(fleet.work, DRIFT_SITE)
    for i in range(n_agents):
        frames = dark_store if SITES[i % len(SITES)] == DRIFT_SITE else MODELS / "samples"
        cfg = _agent_config(fleet.work, i, url, fleet.broker.url, frames)
        _enroll(cfg, f"demo-cam-{i + 1}", env)
        fleet.spawn(f"agent-{i + 1}", _cli("agent", "run", "--config", str(cfg)))
    return url, env


def _admin_token(work: Path, data: Path) -> str:
    """The demo operator's token (admin), made on the controller's data folder as an
    operator bootstraps the first one; kept in WORK/admin-token (0600) for --keep."""
    token = _run_cli("token", "create", "--role", "admin", "--name", "demo", "--data",
                     str(data), "--quiet", env=dict(os.environ), show=False).strip()  # fmt: skip
    path = work / "admin-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    say(f"  API token (admin) in {path}: every read and write needs one")
    return token


def _enroll(cfg: Path, device_id: str, env: dict[str, str]) -> None:
    """The device makes its key, enrolls with a one-time token, gets its cert (mTLS) and
    its credential (what the controller asks of it before serving /tuf)."""
    out = _run_cli("device", "token", device_id, env=env)
    token = next(line for line in out.splitlines() if line.startswith("efe_"))
    _run_cli("agent", "enroll", "--config", str(cfg), "--token", token, env=env)


def _demo(fleet: Fleet, n_agents: int, *, retrain: bool) -> str:
    say(f"broker      {fleet.broker.url}  (private Mosquitto, config in {fleet.broker.folder})")
    url, env = _start(fleet, n_agents)
    auth = {"Authorization": f"Bearer {env['EDGEFLEET_TOKEN']}"}
    with httpx.Client(base_url=url, timeout=10, headers=auth) as client:

        def all_online() -> bool:
            devices = _get(client, "/v1/devices") or {"data": []}
            return sum(1 for d in devices["data"] if d["online"]) >= n_agents

        _wait(f"{n_agents} agents online", all_online, fleet, START_TIMEOUT)
        say(f"{n_agents} agents online")
        for version in ("v1", "v2"):
            _roll_out(client, fleet, env, version)
        _run_cli("device", "list", env=env)
        say("\n== a bad canary: installs fine, sees worse; ML gates stop it ==")
        bad_canary_scene(client, say)
        _wait_settled(client, fleet, n_agents)
        _run_cli("device", "list", env=env)
        say(f"\n== drift: the light in {DRIFT_SITE} goes down ==")
        frames = fleet.work / "frames" / DRIFT_SITE
        # The store may run v2 under a re-signed name (v2-rbN) if it was the bad canary.
        devices = (_get(client, "/v1/devices") or {"data": []})["data"]
        running = next(d["version"] for d in devices if d["labels"].get("site") == DRIFT_SITE)
        data_yaml = drift_scene(
            client, say, env=env, frames=frames, model_path=MODELS / "shapes/v2/model.onnx",
            export_dir=fleet.work / "dataset", version=running,
        )  # fmt: skip
        if retrain:
            say("\n== retrain on the returned frames, canary the new version ==")
            retrain_scene(
                client, say, env=env, data_yaml=data_yaml,
                base_pt=MODELS / "shapes/v2/model.pt", frames=frames, work=fleet.work,
            )  # fmt: skip
    return url


def run_demo(*, agents: int, keep: bool, work_dir: Path | None, plain: bool, retrain: bool) -> int:
    """Start a broker, a controller and ``agents`` agents; roll out v1, v2 (and more)."""
    if not (MODELS / "shapes" / "v2" / "model.onnx").is_file():
        raise EdgefleetError(f"shipped models not found under {MODELS}: run from a clone")
    work = work_dir or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if not plain:  # mTLS broker; PKI in the controller's data folder
        from edgefleet.demo_tls import start_tls_broker

        broker = start_tls_broker(work / "controller").broker
    else:
        broker = DevBroker(work / "mosquitto").start()
    fleet = Fleet(work, broker)
    ok = False
    try:
        url = _demo(fleet, agents, retrain=retrain)
        ok = True
        if keep:
            say(f"\nleft running (Ctrl-C stops it all):\n  controller {url}  (/docs, /v1/devices)")
            say(f"  broker     {fleet.broker.url}\n  logs       {work / 'logs'}")
            say(
                f"  try: EDGEFLEET_URL={url} EDGEFLEET_TOKEN=$(cat {work / 'admin-token'}) "
                "edgefleet device list"
            )
            while True:
                fleet.check_alive()
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    except EdgefleetError as e:
        say(f"demo failed: {e.reason} (logs in {work / 'logs'})")
        raise
    finally:
        fleet.stop()
        if ok and not keep and work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    say("demo finished: everything it started is stopped")
    return 0
