"""Rollout convergence: how long a fleet takes to run a new version, in one run.

Real parts only: a private Mosquitto (``DevBroker``, the project's config, a free port), a
controller process (``edgefleet controller serve``), and ``--devices`` simulated devices,
each the real agent stack (``edgefleet.sim.SimFleet``: MQTT link, TUF updater, download,
verification, double-buffered swap, health check) in one process, reading frames from a
folder. Every device polls its director every ``--poll-s`` seconds and also refreshes at
once on the controller's MQTT hint.

1. Everyone is brought onto v1 (not timed: a fresh device's first install).
2. A rollout of v2 with stages ``1, 100%`` and an hour's soak: the time from ``create`` to
   the one canary reporting COMMITTED is **one device**.
3. ``promote``: the time from it to each other device reporting COMMITTED is the **fleet**'s
   (median, p95, max).

Ratios: fleet p95 / one device (how much the whole fleet slows each install: downloads of
the same artifact in parallel, swaps on shared cores), and fleet max / poll interval (below
1: devices moved on the hint, not on their next poll). Times are what the controller saw
(``GET /v1/devices`` every 0.2 s), so they include the state's trip over MQTT.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from edgefleet.shared.errors import EdgefleetError

from edgefleet.devbroker import DevBroker, free_port
from edgefleet.sim import SimFleet, fleet_configs

REPO = Path(__file__).resolve().parents[1]
MODELS = {"v1": REPO / "models/shapes/v1/model.onnx", "v2": REPO / "models/shapes/v2/model.onnx"}
SAMPLES = REPO / "models" / "samples"
WATCH_S = 0.2  # seconds between looks at the fleet
ACTOR = {"X-Edgefleet-Actor": "bench"}


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(WATCH_S)
    raise EdgefleetError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def _controller(folder: Path, broker: DevBroker) -> Iterator[httpx.Client]:
    port = free_port()
    argv = [sys.executable, "-m", "edgefleet", "controller", "serve",
            "--data", str(folder / "controller"), "--mqtt", broker.url,
            "--listen", f"127.0.0.1:{port}", "--insecure-dev"]  # fmt: skip
    with (folder / "controller.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def healthy() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("the controller to answer", healthy, 60)
        yield client
    except (EdgefleetError, httpx.HTTPError, ValueError):
        tail = (folder / "controller.log").read_text(errors="replace")[-4000:]
        print(f"[bench] controller log, last lines:\n{tail}", file=sys.stderr)
        raise
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


CONTROLLER_ERRORS: list[str] = []  # answers of /v1/devices that were not a fleet list


def _committed(client: httpx.Client, version: str) -> set[str]:
    try:
        r = client.get("/v1/devices")
        devices = r.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        CONTROLLER_ERRORS.append(f"{type(e).__name__}: {str(e)[:120]}")
        return set()
    return {d["device_id"] for d in devices if d["version"] == version
            and d["phase"] == "COMMITTED"}  # fmt: skip


def _arrivals(
    client: httpx.Client, version: str, ids: set[str], start: float, timeout: float
) -> dict[str, float]:
    """Seconds from ``start`` until each of ``ids`` reported ``version`` COMMITTED."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while set(seen) != ids:
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(ids - set(seen))[:5])
            raise EdgefleetError(f"{len(ids - set(seen))} devices not on {version} after "
                                 f"{timeout:.0f} s (e.g. {missing})")  # fmt: skip
        now = time.monotonic() - start
        for device_id in _committed(client, version) & ids:
            seen.setdefault(device_id, now)
        time.sleep(WATCH_S)
    return seen


def _rollout(client: httpx.Client, version: str, stages: list[str]) -> int:
    body = {"model": "shapes", "version": version, "stages": stages, "soak_s": 3600}
    r = client.post("/v1/rollouts", json=body, headers=ACTOR)
    if r.status_code != 200:
        raise EdgefleetError(f"rollout refused: {r.json().get('detail')}")
    return int(r.json()["id"])


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench(devices: int, *, poll_s: float, fps: float, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        folder = Path(tmp)
        broker = DevBroker(folder / "mosquitto").start()
        fleet: SimFleet | None = None
        try:
            with _controller(folder, broker) as client:
                for version, path in MODELS.items():
                    with path.open("rb") as f:
                        r = client.post("/v1/models/shapes/versions", data={"version": version},
                                        files={"file": (path.name, f)})  # fmt: skip
                    if r.status_code != 200:
                        raise EdgefleetError(f"push {version}: {r.json().get('detail')}")
                configs = fleet_configs(
                    devices, controller_url=str(client.base_url), mqtt_url=broker.url,
                    data_dir=folder / "fleet", source=SAMPLES, prefix="bench", fps=fps,
                    window_s=5, poll_s=poll_s,
                )  # fmt: skip
                fleet = SimFleet(configs)
                fleet.start()
                ids = set(fleet.devices)
                print(f"[bench] {devices} devices starting", file=sys.stderr)
                _wait("every device online", lambda: ids <= {
                    d["device_id"] for d in client.get("/v1/devices").json()["data"]
                    if d["online"]}, timeout)  # fmt: skip
                t0 = time.monotonic()
                _rollout(client, "v1", ["100%"])
                cold = _arrivals(client, "v1", ids, t0, timeout)
                print(f"[bench] all on v1 after {max(cold.values()):.1f} s", file=sys.stderr)

                t0 = time.monotonic()
                rid = _rollout(client, "v2", ["1", "100%"])
                canary = _wait("the canary on v2", lambda: _committed(client, "v2") & ids, timeout)
                one = time.monotonic() - t0
                rest = ids - canary
                t1 = time.monotonic()
                r = client.post(f"/v1/rollouts/{rid}/promote", headers=ACTOR)
                if r.status_code != 200:
                    raise EdgefleetError(f"promote refused: {r.json().get('detail')}")
                times = list(_arrivals(client, "v2", rest, t1, timeout).values())
                print(f"[bench] all on v2 after {max(times):.1f} s", file=sys.stderr)
                errors = fleet.errors()
                fleet.stop()  # before the controller goes, so no device logs it missing
        finally:
            if fleet is not None:
                fleet.stop()
            broker.stop()
    p95 = _p95(times)
    return {
        "devices": devices,
        "poll_interval_s": poll_s,
        "fps_per_device": fps,
        "cold_install_max_s": round(max(cold.values()), 2),
        "one_device_s": round(one, 2),
        "fleet_median_s": round(statistics.median(times), 2),
        "fleet_p95_s": round(p95, 2),
        "fleet_max_s": round(max(times), 2),
        "fleet_p95_over_one_device": round(p95 / one, 2),
        "fleet_max_over_poll_interval": round(max(times) / poll_s, 3),
        "device_errors": errors,
        "controller_errors": CONTROLLER_ERRORS[:10],
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"rollout convergence: {r['devices']} devices, poll every {r['poll_interval_s']:g} s, "
          f"{r['fps_per_device']:g} fps each")  # fmt: skip
    print(f"  first install, whole fleet (max)   {r['cold_install_max_s']:8.2f} s")
    print(f"  v2 on one device (canary stage)    {r['one_device_s']:8.2f} s")
    print(f"  v2 on the rest after promote       median {r['fleet_median_s']:.2f} s, "
          f"p95 {r['fleet_p95_s']:.2f} s, max {r['fleet_max_s']:.2f} s")  # fmt: skip
    print(f"  fleet p95 / one device             {r['fleet_p95_over_one_device']:8.2f}")
    print(f"  fleet max / poll interval          {r['fleet_max_over_poll_interval']:8.3f}")
    if r["device_errors"]:
        print(f"  device errors: {r['device_errors']}")
    if r["controller_errors"]:
        print(f"  controller answered badly: {r['controller_errors']}")


__all__ = ["bench", "print_table"]
