"""Real processes for end-to-end tests: a controller and agents on a private Mosquitto."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from edgefleet.shared.protocol import TelemetryWindow, decode
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgefleet.devbroker import DevBroker, free_port
from tests import waiting
from tests.hooked_agent import argv as hooked_argv

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "models" / "samples"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgefleet", *args]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    return waiting.wait_for(what, check, timeout)


@dataclass
class Procs:
    folder: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.folder / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.running[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@dataclass
class System:
    broker: DevBroker
    url: str
    data: Path
    procs: Procs
    http: httpx.Client
    database_url: str | None = None  # None: SQLite in the data dir

    def controller_argv(self) -> list[str]:
        port = self.url.rsplit(":", 1)[1]
        db = ["--database-url", self.database_url] if self.database_url else []
        return cli(
            "controller", "serve", "--data", str(self.data), "--mqtt", self.broker.url,
            "--listen", f"127.0.0.1:{port}", "--insecure-dev", *db,
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, "EDGEFLEET_URL": self.url}

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli(*args), capture_output=True, text=True, env=self.env(), timeout=120
        )

    def start_agent(
        self,
        device_id: str,
        labels: dict[str, str],
        hooks: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Path:
        """``hooks``: test hooks the agent process runs with (tests/hooked_agent.py)."""
        cfg = {
            "device_id": device_id,
            "labels": labels,
            "controller_url": self.url,
            "mqtt_url": self.broker.url,
            "data_dir": str(self.procs.folder / device_id),
            "source": {"kind": "folder", "path": str(SAMPLES), "fps": 10},
            "poll_interval_s": 5,
            "telemetry_window_s": 2,
            **extra,
        }
        path = self.procs.folder / f"{device_id}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        args = ("agent", "run", "--config", str(path))
        self.procs.start(device_id, hooked_argv(hooks, *args) if hooks else cli(*args))
        return path

    def device(self, device_id: str) -> dict[str, Any] | None:
        r = self.http.get(f"/v1/devices/{device_id}")
        return r.json() if r.status_code == 200 else None


@contextlib.contextmanager
def running_system(
    tmp_path: Path, data: Path | None = None, database_url: str | None = None
) -> Iterator[System]:
    """A private broker and a real controller process; everything stopped afterwards.

    ``data`` may be prepared beforehand (e.g. an alerts.yaml in it) and defaults to
    ``tmp_path / "controller"``; ``database_url`` None keeps SQLite in it.
    """
    broker = DevBroker(tmp_path / "mosquitto").start()
    procs = Procs(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    data = data or tmp_path / "controller"
    http = httpx.Client(base_url=url, timeout=10)
    system = System(broker, url, data, procs, http, database_url)
    procs.start("controller", system.controller_argv())

    def healthy() -> bool:
        try:
            return http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("controller /healthz", healthy, timeout=60)
        yield system
    finally:
        http.close()
        procs.stop_all()
        broker.stop()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with running_system(tmp_path) as s:
        yield s


def set_light(frames: Path, factor: float) -> None:
    """The shipped samples at ``factor`` of their light, replaced atomically in ``frames``
    (a folder source rereads them each loop)."""
    for src in sorted(SAMPLES.glob("*.jpg")):
        img = np.clip(cv2.imread(str(src)).astype(np.float32) * factor, 0, 255).astype(np.uint8)
        tmp = frames / f".{src.name}.tmp.jpg"
        cv2.imwrite(str(tmp), img)
        tmp.replace(frames / src.name)


@contextlib.contextmanager
def telemetry_of(port: int, device_id: str) -> Iterator[queue.Queue[TelemetryWindow]]:
    """A device's telemetry windows as the broker carries them (drift scores are on the wire)."""
    got: queue.Queue[TelemetryWindow] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{device_id}",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    topic = str(device_topic(device_id, Channel.TELEMETRY))
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_message = lambda _c, _u, m: got.put(decode(TelemetryWindow, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        yield got
    finally:
        c.disconnect()
        c.loop_stop()


def scored_windows(windows: queue.Queue[TelemetryWindow], n: int) -> list[TelemetryWindow]:
    """The next ``n`` windows on v2 that carry a drift score."""
    out: list[TelemetryWindow] = []
    while len(out) < n:
        w = windows.get(timeout=60)
        if w.version == "v2" and w.drift_psi is not None:
            out.append(w)
    return out
