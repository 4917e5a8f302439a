"""Telemetry ingest under a burst: a plain subscriber vs the controller, one run.

The same burst of telemetry windows (built by the project's own ``TelemetryWindow``) is
published with QoS 1 through a private Mosquitto running the shipped queue settings
(``edgefleet/mosquitto-queues.conf``, which deploy/mosquitto/mosquitto.conf repeats):
first to a plain paho subscriber (the broker's raw rate), then to ``edgefleet controller
serve`` (windows stored per second, read from its database). The burst's devices are
known to the controller before it starts (they publish their retained state first, as a
fleet does when it comes online), so the burst is what a reconnect after an outage sends:
spooled windows of registered devices. Then N new devices publish their retained state at
once and the bench times until every one has a row, and until every
one has its director chain and retained hint.

The publisher runs in its own process (``python bench_ingest.py publish ...``) and so
does the controller, whose CPU seconds are read from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from edgefleet.shared.errors import TransportError
from edgefleet.shared.protocol import DeviceState, Phase, TelemetryWindow
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgefleet.devbroker import DevBroker, free_port

IDLE_S = 10.0  # seconds without progress after the burst: what is missing is lost
READY_S = 60.0  # seconds for a subscriber / the controller to be ready
DROPPED = "$SYS/broker/publish/messages/dropped"


_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "arrow")


def window(device_id: str, i: int) -> bytes:
    # recent: retention would fold windows older than its age into hours at once
    end = datetime.now(timezone.utc) - timedelta(seconds=i)
    edges = [round(0.05 * k, 2) for k in range(21)]
    return TelemetryWindow(
        device_id=device_id, model="shapes", version="v1",
        window_start=end - timedelta(seconds=60), window_end=end, frames=600, drops=1,
        latency_edges_ms=[0, 5, 10, 20, 40, 80, 160], latency_counts=[0, 300, 200, 80, 15, 5],
        confidence_edges=edges, confidence_counts=[i % 7 + k for k in range(20)],
        per_class_confidence={c: [k * 3 for k in range(20)] for c in _CLASSES},
        detections=900, low_confidence=40,
    ).to_bytes()  # fmt: skip


def device_id(k: int, prefix: str = "cam") -> str:
    return f"{prefix}-{k:05d}"


# --- the publisher (its own process) ----------------------------------------------------


def publish(port: int, windows: int, devices: int, register: int, prefix: str = "reg") -> None:
    """Publish the burst (or ``register`` retained states) as fast as QoS 1 allows."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{os.getpid()}",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    if register:
        ids = [device_id(k, prefix) for k in range(register)]
        messages = [(str(device_topic(d, Channel.STATE)), DeviceState(
            device_id=d, model="shapes", version="v1", phase=Phase.COMMITTED).to_bytes(), True)
            for d in ids]  # fmt: skip
    else:
        ids = [device_id(k % devices) for k in range(windows)]
        messages = [(str(device_topic(d, Channel.TELEMETRY)), window(d, i), False)
                    for i, d in enumerate(ids)]  # fmt: skip
    print("start", flush=True)  # the clock starts when the burst does, not at process start
    infos = [c.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
    for info in infos:
        info.wait_for_publish(timeout=300)
    c.disconnect()
    c.loop_stop()


def _publisher(
    port: int, windows: int = 0, devices: int = 1, register: int = 0, prefix: str = "reg"
) -> Any:
    argv = [sys.executable, __file__, "publish", str(port), str(windows), str(devices),
            str(register), prefix]  # fmt: skip
    pub = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if pub.stdout is None or pub.stdout.readline().strip() != "start":
        raise TransportError("the burst publisher did not start")
    return pub


# --- the plain subscriber -----------------------------------------------------------------


class PlainSubscriber:
    """paho, MQTT 5, persistent session, QoS 1, auto-ack: the broker's raw rate."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.ready = threading.Event()
        self.dropped: int | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-plain",
                             protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *_a: self.ready.set()
        self.c.on_connect = lambda c, *_a: c.subscribe(
            [("edgefleet/v1/devices/+/telemetry", 1), (DROPPED, 0)]
        )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        if m.topic == DROPPED:
            self.dropped = int(m.payload)
            return
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.count += 1

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait_progress(count: Any, target: int) -> None:
    """Until ``count()`` reaches ``target`` or stops growing for IDLE_S."""
    seen, since = -1, time.monotonic()
    while True:
        n = count()
        if n >= target:
            return
        if n != seen:
            seen, since = n, time.monotonic()
        elif time.monotonic() - since > IDLE_S:
            return
        time.sleep(0.05)


def run_plain(port: int, windows: int, devices: int) -> dict[str, Any]:
    sub = PlainSubscriber(port)
    if not sub.ready.wait(READY_S):
        raise TransportError("the plain subscriber did not subscribe")
    pub = _publisher(port, windows, devices)
    cpu0, start = time.process_time(), time.monotonic()  # this process: the subscriber
    _wait_progress(lambda: sub.count, windows)
    cpu = time.process_time() - cpu0
    pub.wait(timeout=300)
    sub.close()
    span = (sub.last - start) or 1e-9
    return {"received": sub.count, "lost": windows - sub.count, "per_s": sub.count / span,
            "cpu_s": cpu}  # fmt: skip


# --- the controller -------------------------------------------------------------------------


class Controller:
    """``edgefleet controller serve`` in its own process, read through its database."""

    def __init__(self, folder: Path, broker_url: str) -> None:
        self.db = folder / "edgefleet.db"
        argv = [sys.executable, "-m", "edgefleet", "controller", "serve", "--data", str(folder),
                "--mqtt", broker_url, "--listen", f"127.0.0.1:{free_port()}"]  # fmt: skip
        self.log = (folder.parent / "controller.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def count(self, sql: str) -> int:
        if not self.db.exists():
            return 0
        try:
            with sqlite3.connect(self.db, timeout=30) as conn:
                return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # tables not created yet
            return 0

    def windows(self) -> int:
        return self.count("select count(*) from telemetry_window")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def _wait_ready(ctl: Controller, port: int) -> None:
    """Publish a probe status until the controller stores it (it has subscribed)."""
    deadline = time.monotonic() + READY_S
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.connect("127.0.0.1", port)
    c.loop_start()
    payload = b'{"schema": 1, "device_id": "probe", "online": true}'
    try:
        while time.monotonic() < deadline:
            c.publish(str(device_topic("probe", Channel.STATUS)), payload, qos=1)
            if ctl.count("select count(*) from device where device_id = 'probe'"):
                return
            time.sleep(0.5)
        raise TransportError("the controller did not store a probe message in time")
    finally:
        c.disconnect()
        c.loop_stop()


def run_controller(ctl: Controller, port: int, windows: int, devices: int) -> dict[str, Any]:
    pub = _publisher(port, windows, devices)
    cpu0, start = ctl.cpu_s(), time.monotonic()
    last = [0, start]

    def stored() -> int:
        n = ctl.windows()
        if n > last[0]:
            last[:] = [n, time.monotonic()]
        return n

    _wait_progress(stored, windows)
    pub.wait(timeout=300)
    n, end = last[0], last[1]
    return {"stored": n, "lost": windows - n, "per_s": n / ((end - start) or 1e-9),
            "seconds": end - start, "cpu_s": ctl.cpu_s() - cpu0}  # fmt: skip


def run_register(
    ctl: Controller, port: int, n: int, timeout: float, prefix: str = "reg"
) -> dict[str, Any]:
    pub = _publisher(port, register=n, prefix=prefix)
    cpu0, start = ctl.cpu_s(), time.monotonic()
    rows_s = signed_s = None
    rows_sql = f"select count(*) from device where device_id like '{prefix}-%'"
    signed_sql = rows_sql + " and director_version is not null"
    while time.monotonic() - start < timeout:
        if rows_s is None and ctl.count(rows_sql) >= n:
            rows_s = time.monotonic() - start
        if ctl.count(signed_sql) >= n:
            signed_s = time.monotonic() - start
            break
        time.sleep(0.2)
    pub.wait(timeout=300)
    return {"devices": n, "rows_s": rows_s, "signed_s": signed_s,
            "signed": ctl.count(signed_sql), "cpu_s": ctl.cpu_s() - cpu0}  # fmt: skip


# --- one run ----------------------------------------------------------------------------------


def bench(
    windows: int, devices: int, register: int, *, sign_timeout: float = 300.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        broker = DevBroker(folder / "mosquitto").start()
        try:
            plain = run_plain(broker.port, windows, devices)
            ctl = Controller(folder / "ctl", broker.url)
            try:
                _wait_ready(ctl, broker.port)
                fleet = run_register(ctl, broker.port, devices, sign_timeout, prefix="cam")
                if fleet["signed_s"] is None:
                    raise TransportError(f"the burst's {devices} devices were not registered")
                stored = run_controller(ctl, broker.port, windows, devices)
                reg = run_register(ctl, broker.port, register, sign_timeout) if register else None
            finally:
                ctl.stop()
        finally:
            broker.stop()
    return {
        "windows": windows, "devices": devices, "window_bytes": len(window(device_id(0), 0)),
        "plain": plain, "controller": stored,
        "ratio_stored_vs_plain": stored["per_s"] / plain["per_s"] if plain["per_s"] else None,
        # CPU per window, controller over plain subscriber: what the rate ratio would be on
        # a machine where both are CPU-bound, and less moved by other load
        "cpu_per_window_ratio": (stored["cpu_s"] / max(stored["stored"], 1))
        / (plain["cpu_s"] / max(plain["received"], 1) or 1e-9),
        "register": reg,
    }  # fmt: skip


def print_table(r: dict[str, Any]) -> None:
    p, c = r["plain"], r["controller"]
    print(f"ingest burst: {r['windows']} windows of {r['window_bytes']} B from "
          f"{r['devices']} devices, QoS 1, shipped broker queue settings")  # fmt: skip
    print(f"  plain subscriber     {p['received']:7d} received  {p['lost']:6d} lost  "
          f"{p['per_s']:8.0f}/s  {p['cpu_s']:.1f} CPU-s")  # fmt: skip
    print(f"  controller           {c['stored']:7d} stored    {c['lost']:6d} lost  "
          f"{c['per_s']:8.0f}/s  in {c['seconds']:.1f} s, {c['cpu_s']:.1f} CPU-s")  # fmt: skip
    print(f"  stored / plain rate  {r['ratio_stored_vs_plain']:8.2f}")
    print(f"  CPU per window, controller / plain  {r['cpu_per_window_ratio']:8.2f}")
    g = r["register"]
    if g:
        rows = f"{g['rows_s']:.1f} s" if g["rows_s"] is not None else "not all"
        signed = f"{g['signed_s']:.1f} s" if g["signed_s"] is not None else f"{g['signed']} only"
        print(f"  register {g['devices']} devices: rows in {rows}, chains + hints in "
              f"{signed}, {g['cpu_s']:.1f} CPU-s")  # fmt: skip


def main(argv: list[str]) -> int:
    if argv and argv[0] == "publish":
        port, windows, devices, register = (int(a) for a in argv[1:5])
        publish(port, windows, devices, register, argv[5])
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--register", type=int, default=0)
    a = ap.parse_args(argv)
    print(json.dumps(bench(a.windows, a.devices, a.register), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

__all__ = ["bench", "print_table"]
