"""Rollouts to large fleets of protocol-level devices: time, controller CPU and memory.

For each fleet size N (``edgefleet bench rollout --sizes 100,1000,5000,10000``), from
nothing:

1. a private Mosquitto (``DevBroker``: the project's config, a free port), a controller
   process (``edgefleet controller serve``, SQLite unless ``--database-url``) with models
   ``shapes`` v1 and v2 pushed, and ``edgefleet sim --mode proto --procs P`` with N
   devices (``edgefleet.simproto``: real MQTT clients, ngclient per device on its own
   director, one verified download per artifact per process). The bench waits until the
   controller counts N devices online.
2. **cold**: ``POST /v1/rollouts`` of v1 to every device (stage ``100%``); the time from
   that request to each device's retained ``state`` saying v1 COMMITTED, read by the
   bench's own MQTT subscription (the same message the controller ingests; polling the
   controller's device list would itself load the controller). Then the time until the
   controller calls the rollout ``succeeded`` (``/metrics``, every 0.5 s).
3. **warm**: the same for v2 on the fleet that now runs v1.

Per rollout: create-request latency, per-device time to COMMITTED (median, p95, max), the
controller's CPU seconds (``/proc/PID/stat``, user + system, during the rollout), its peak
RSS (``VmHWM``, whole life so far) and the HTTP requests it served (uvicorn's access log
lines during the rollout).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from edgefleet.shared.errors import EdgefleetError
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.devbroker import DevBroker, free_port

REPO = Path(__file__).resolve().parents[1]
MODELS = {"v1": REPO / "models/shapes/v1/model.onnx", "v2": REPO / "models/shapes/v2/model.onnx"}
ACTOR = {"X-Edgefleet-Actor": "bench"}
_ACCESS = re.compile(rb'HTTP/1\.[01]" \d{3}')


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise EdgefleetError(f"timed out after {timeout:.0f} s waiting for {what}")


class Observer:
    """The fleet's retained ``state`` messages, as the controller receives them."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe("edgefleet/v1/devices/+/state", 1)
        self.client.on_message = self._on_message
        self.lock = threading.Lock()
        self.state: dict[str, tuple[str | None, str | None]] = {}  # device -> version, phase
        self.committed_at: dict[str, dict[str, float]] = {}  # version -> device -> monotonic
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        device, version, phase = doc.get("device_id"), doc.get("version"), doc.get("phase")
        now = time.monotonic()
        with self.lock:
            self.state[device] = (version, phase)
            if phase == "COMMITTED" and version:
                self.committed_at.setdefault(version, {}).setdefault(device, now)

    def committed(self, version: str) -> dict[str, float]:
        with self.lock:
            return dict(self.committed_at.get(version, {}))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _requests(log: Path) -> int:
    return len(_ACCESS.findall(log.read_bytes()))


def _metric(client: httpx.Client, name: str, label: str) -> float:
    text = client.get("/metrics").text
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(label)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@contextlib.contextmanager
def _controller(folder: Path, broker: DevBroker, db: str | None) -> Iterator[Any]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "edgefleet",
        "controller",
        "serve",
        "--data",
        str(folder / "controller"),
        "--mqtt",
        broker.url,
        "--listen",
        f"127.0.0.1:{port}",
        "--insecure-dev",  # loopback only, no API tokens: a private benchmark controller
    ]
    if db:
        argv += ["--database-url", db]
    log = folder / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return client.get("/healthz").status_code == 200
        return False

    try:
        _wait("the controller to answer", healthy, 60)
        yield proc, client, log
    except (EdgefleetError, httpx.HTTPError, ValueError):
        tail = log.read_text(errors="replace")[-4000:]
        print(f"[bench] controller log, last lines:\n{tail}", file=sys.stderr)
        raise
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rollout(
    proc: subprocess.Popen[bytes], client: httpx.Client, log: Path, obs: Observer,
    version: str, ids: set[str], timeout: float,
) -> dict[str, Any]:  # fmt: skip
    succeeded = _metric(client, "edgefleet_rollouts", 'state="succeeded"')
    cpu0, req0 = _cpu_s(proc.pid), _requests(log)
    t0 = time.monotonic()
    r = client.post("/v1/rollouts", json={"model": "shapes", "version": version,
                                          "stages": ["100%"]}, headers=ACTOR)  # fmt: skip
    create_s = time.monotonic() - t0
    if r.status_code != 200:
        raise EdgefleetError(f"rollout of {version} refused: {r.text[:300]}")

    def all_committed() -> bool:
        return ids <= set(obs.committed(version))

    timed_out = False
    try:
        _wait(f"{len(ids)} devices on {version}", all_committed, timeout)
        _wait("the rollout to succeed", lambda: _metric(
            client, "edgefleet_rollouts", 'state="succeeded"') > succeeded, timeout)  # fmt: skip
    except EdgefleetError as e:  # recorded, not hidden: the figures so far are the result
        print(f"[bench] {e}", file=sys.stderr)
        timed_out = True
    done_s = time.monotonic() - t0
    times = [t - t0 for d, t in obs.committed(version).items() if d in ids] or [float("nan")]
    return {
        "committed": len(times) if times[0] == times[0] else 0,
        "timed_out": timed_out,
        "create_request_s": round(create_s, 3),
        "committed_median_s": round(statistics.median(times), 2),
        "committed_p95_s": round(_p95(times), 2),
        "committed_max_s": round(max(times), 2),
        "rollout_succeeded_s": round(done_s, 2),
        "controller_cpu_s": round(_cpu_s(proc.pid) - cpu0, 1),
        "controller_peak_rss_mb": round(_peak_rss_mb(proc.pid), 1),
        "requests_served": _requests(log) - req0,
    }


def _sim(folder: Path, client: httpx.Client, broker: DevBroker, n: int, procs: int,
         workers: int, data: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    argv = [
        sys.executable,
        "-m",
        "edgefleet",
        "sim",
        "--mode",
        "proto",
        "--procs",
        str(procs),
        "--devices",
        str(n),
        "--controller",
        str(client.base_url),
        "--mqtt",
        broker.url,
        "--data",
        str(data),
        "--prefix",
        "bench",
        "--poll",
        "3600",
        "--window",
        "60",
        "--workers",
        str(workers),
        "--stats",
        str(folder / "sim-stats.json"),
        "--quiet",
    ]
    with (folder / "sim.log").open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def bench_size(
    n: int, *, procs: int, workers: int, timeout: float, db: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-fleet-") as tmp:
        folder = Path(tmp)
        broker = DevBroker(folder / "mosquitto").start()
        sim: subprocess.Popen[bytes] | None = None
        obs: Observer | None = None
        shm = Path("/dev/shm")  # the simulated devices' caches: in memory, not what is measured
        data = Path(tempfile.mkdtemp(prefix="edgefleet-sim-", dir=shm if shm.is_dir() else tmp))
        try:
            with _controller(folder, broker, db) as (proc, client, log):
                for version, path in MODELS.items():
                    with path.open("rb") as f:
                        r = client.post("/v1/models/shapes/versions", data={"version": version},
                                        files={"file": (path.name, f)})  # fmt: skip
                    if r.status_code != 200:
                        raise EdgefleetError(f"push {version}: {r.text[:300]}")
                obs = Observer(broker.url)
                t = time.monotonic()
                sim = _sim(folder, client, broker, n, procs, workers, data)
                ids = {f"bench-{i:05d}" for i in range(n)}
                _wait(f"{n} devices online at the controller", lambda: _metric(
                    client, "edgefleet_devices", 'online="true"') >= n, timeout, 1.0)  # fmt: skip
                online_s = time.monotonic() - t
                print(f"[bench] {n} devices online after {online_s:.1f} s", file=sys.stderr)
                cold = _rollout(proc, client, log, obs, "v1", ids, timeout)
                print(f"[bench] {n}: cold {cold}", file=sys.stderr)
                warm = (_rollout(proc, client, log, obs, "v2", ids, timeout)
                        if not cold["timed_out"] else None)  # fmt: skip
                print(f"[bench] {n}: warm {warm}", file=sys.stderr)
                sim.send_signal(signal.SIGTERM)
                sim.wait(120)
                stats = [json.loads(p.read_text()) for p in sorted(folder.glob("sim-stats.json*"))]
        finally:
            if sim is not None and sim.poll() is None:
                sim.terminate()  # the parent stops its simulator processes on SIGTERM
                try:
                    sim.wait(60)
                except subprocess.TimeoutExpired:
                    sim.kill()
            if obs is not None:
                obs.stop()
            broker.stop()
            shutil.rmtree(data, ignore_errors=True)
    return {
        "devices": n, "sim_processes": procs, "online_s": round(online_s, 1),
        "cold": cold, "warm": warm,
        "sim_http_requests": sum(s["http_requests"] for s in stats),
        "sim_refresh_errors": sum(s["refresh_errors"] for s in stats),
        "sim_artifact_downloads": sum(s["artifact_downloads"] for s in stats),
        "sim_last_errors": [s["last_error"] for s in stats if s["last_error"]],
    }  # fmt: skip


def bench(sizes: list[int], *, procs: int, workers: int, timeout: float,
          db: str | None = None) -> dict[str, Any]:  # fmt: skip
    results = []
    for n in sizes:
        results.append(bench_size(n, procs=procs, workers=workers, timeout=timeout, db=db))
    return {"database": "postgresql" if db else "sqlite", "cpus": os.cpu_count(),
            "results": results}  # fmt: skip


def print_table(doc: dict[str, Any]) -> None:
    print(f"rollout to protocol-level fleets ({doc['database']}, {doc['cpus']} CPUs)")
    print(f"{'N':>6} {'which':<5} {'create':>7} {'median':>7} {'p95':>7} {'max':>7} "
          f"{'done':>7} {'ctl cpu':>8} {'rss MB':>7} {'requests':>9}")  # fmt: skip
    for r in doc["results"]:
        for which in ("cold", "warm"):
            x = r[which]
            if x is None:
                continue
            print(f"{r['devices']:>6} {which:<5} {x['create_request_s']:>6.2f}s "
                  f"{x['committed_median_s']:>6.1f}s {x['committed_p95_s']:>6.1f}s "
                  f"{x['committed_max_s']:>6.1f}s {x['rollout_succeeded_s']:>6.1f}s "
                  f"{x['controller_cpu_s']:>7.1f}s {x['controller_peak_rss_mb']:>7.0f} "
                  f"{x['requests_served']:>9}"
                  + (f"  TIMED OUT ({x['committed']} committed)" if x["timed_out"] else "")
            )  # fmt: skip
