"""``edgefleet sim``: many real agents in one process, speaking the real protocol.

Each simulated device is the real agent stack, wired by ``agent.daemon.run`` (config,
MQTT link, TUF updater, reconcile, slots, pipeline, monitor) on its own thread with its
own device id, labels, data folder and stop flag, reading frames from a folder at a low
frame rate. Nothing is faked: devices download and verify signed models, swap them,
health-check them and send telemetry windows like the daemon does. A device can be
taken offline (its stack stopped; the broker publishes its Last Will) and brought back
(same data folder, same persistent MQTT session) to test catching up.

Only the standard library is imported at the top; the agent is imported when a fleet
starts.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from edgefleet.agent.config import AgentConfig

log = logging.getLogger("edgefleet.sim")
T = TypeVar("T")

STOP_TIMEOUT_S = 15.0  # seconds to wait for one device's threads at shutdown


@dataclass(frozen=True)
class SimOptions:
    """``edgefleet sim``'s flags (edgefleet/cli/sim.py)."""

    mode: str = "agent"  # agent: whole agent stacks; proto: edgefleet.simproto devices
    procs: int = 1  # processes to split --mode proto over
    first: int = 0  # index of the first device id
    workers: int = 8  # refresh/install threads per process (proto)
    phase_delay: float = 0.0  # seconds each install phase takes (proto)
    stats: str | None = None  # JSON summary written here at exit (proto; .N per process)
    devices: int = 10
    controller: str = "http://127.0.0.1:8600"
    mqtt: str = "mqtt://127.0.0.1:1883"
    data: str = "sim-data"
    source: str = "models/samples"
    label: tuple[str, ...] = ()  # KEY=V1,V2: values dealt round-robin
    prefix: str = "sim"
    fps: float = 2.0  # frames per second per device
    window: float = 5.0  # seconds per telemetry window
    poll: float = 10.0  # seconds between director polls
    token: str | None = None  # operator API token (default $EDGEFLEET_TOKEN)
    quiet: bool = False


def fleet_configs(
    count: int,
    *,
    controller_url: str,
    mqtt_url: str,
    data_dir: Path,
    source: Path,
    labels: dict[str, list[str]] | None = None,
    prefix: str = "sim",
    fps: float = 2.0,  # frames per second per device
    window_s: float = 5.0,  # seconds per telemetry window
    poll_s: float = 10.0,  # seconds between director polls
) -> list[AgentConfig]:
    """Configs for ``count`` devices; label values are dealt round-robin (site=a,b -> a b a).
    Over ``mqtts://`` each device presents the identity ``enroll_fleet`` wrote for it."""
    from edgefleet.agent.config import parse_config

    out = []
    for i in range(count):
        device_id = f"{prefix}-{i:04d}"
        mine = {k: values[i % len(values)] for k, values in (labels or {}).items()}
        raw = {
            "device_id": device_id,
            "labels": mine,
            "controller_url": controller_url,
            "mqtt_url": mqtt_url,
            "data_dir": str(data_dir / device_id),
            "source": {"kind": "folder", "path": str(source), "fps": fps},
            "poll_interval_s": poll_s,
            "telemetry_window_s": window_s,
        }
        if mqtt_url.startswith("mqtts://"):
            ident = data_dir / device_id / "identity"
            raw["tls"] = {"ca": str(ident / "ca.pem"), "cert": str(ident / "device.pem"),
                          "key": str(ident / "device.key")}  # fmt: skip
        out.append(parse_config(raw, base=data_dir, origin=device_id))
    return out


def enroll_fleet(controller_url: str, data_dir: Path, device_ids: list[str], token: str) -> int:
    """Enroll every device not enrolled yet, the real way: a one-time enrollment token
    from the controller (``token``: an operator API token), then the agent's own enrollment
    (its key made here, a CSR, the pinned TUF roots). Returns how many were enrolled.

    The controller rate-limits both routes per client (a burst, then one a second); a
    refusal for that (429) is waited out, so a larger fleet enrolls slowly but surely."""
    from edgefleet.agent.enroll import enroll, read_upload_token

    done = 0
    for device_id in device_ids:
        folder = data_dir / device_id
        if read_upload_token(folder) is not None:
            continue  # enrolled by an earlier run: same key, same credential
        one_time = _slowed(partial(_enroll_token, controller_url, device_id, token))
        _slowed(partial(enroll, controller_url, device_id, folder, one_time))
        done += 1
    return done


SLOW_DOWN = "too many requests"  # the controller's 429 detail (controller/limits.py)
SLOW_DOWN_TRIES = 120  # one a second: two minutes of 429s in a row is not a rate limit


def _slowed(call: Callable[[], T]) -> T:
    """``call()``, again after a second while the controller answers 429."""
    from edgefleet.shared.errors import EdgefleetError

    for _ in range(SLOW_DOWN_TRIES - 1):
        try:
            return call()
        except EdgefleetError as e:
            if SLOW_DOWN not in e.reason:
                raise
            time.sleep(1.0)
    return call()


def _enroll_token(controller_url: str, device_id: str, token: str) -> str:
    import json

    import urllib3

    from edgefleet.shared.errors import ConfigError, TransportError

    url = f"{controller_url.rstrip('/')}/v1/enroll-tokens"
    try:
        r = urllib3.request(
            "POST", url, json={"device_id": device_id}, timeout=30.0, retries=False,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
    except urllib3.exceptions.HTTPError as e:
        raise TransportError(f"cannot reach the controller at {url}: {e}") from e
    try:
        body = json.loads(r.data)
    except ValueError:
        body = {}
    if r.status != 200 or not isinstance(body, dict) or "token" not in body:
        detail = body.get("detail") if isinstance(body, dict) else None
        raise ConfigError(f"enrollment token for {device_id} refused: {detail or r.status}")
    return str(body["token"])


@dataclass
class SimDevice:
    config: AgentConfig
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class SimFleet:
    """Start, stop and restart simulated devices; each one is ``agent.daemon.run``."""

    def __init__(self, configs: list[AgentConfig]) -> None:
        self.devices = {c.device_id: SimDevice(c) for c in configs}

    def start(self, *device_ids: str) -> None:
        for device_id in device_ids or tuple(self.devices):
            dev = self.devices[device_id]
            if dev.running:
                continue
            dev.stop = threading.Event()
            dev.thread = threading.Thread(
                target=self._run, args=(dev,), name=f"sim-{device_id}", daemon=True
            )
            dev.thread.start()

    def stop(self, *device_ids: str) -> None:
        """Stop devices (all by default) in parallel; each publishes its offline status."""
        chosen = [self.devices[d] for d in device_ids or tuple(self.devices)]
        for dev in chosen:
            dev.stop.set()
        for dev in chosen:
            if dev.thread is not None:
                dev.thread.join(STOP_TIMEOUT_S)

    def errors(self) -> dict[str, str]:
        return {d: dev.error for d, dev in self.devices.items() if dev.error}

    @staticmethod
    def _run(dev: SimDevice) -> None:
        from edgefleet.agent.daemon import run
        from edgefleet.shared.errors import EdgefleetError

        try:
            run(dev.config, dev.stop)
        except EdgefleetError as e:
            dev.error = e.reason
            log.error("%s stopped: %s", dev.config.device_id, e.reason)  # noqa: TRY400


# --- the command -------------------------------------------------------------------------


def _labels(items: Sequence[str]) -> dict[str, list[str]]:
    from edgefleet.shared.errors import ConfigError

    out = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"bad --label {item!r}: expected KEY=V1[,V2,...]")
        out[key] = [v for v in values.split(",") if v]
    return out


def _token(opts: SimOptions) -> str:
    return str(opts.token or os.environ.get("EDGEFLEET_TOKEN", "")).strip()


def run(opts: SimOptions) -> int:
    from edgefleet.shared.errors import ConfigError

    logging.basicConfig(level=logging.WARNING if opts.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if opts.procs < 1:
        raise ConfigError("--procs must be at least 1")
    if opts.mode == "proto":
        return run_proto(opts)
    if opts.procs != 1:
        raise ConfigError("--procs is for --mode proto; agent stacks run in one process")
    source = Path(opts.source)
    if not source.is_dir():
        raise ConfigError(f"frame folder {source} does not exist")
    if opts.devices < 1:
        raise ConfigError("--devices must be at least 1")
    data = Path(opts.data).resolve()
    token = _token(opts)
    if token:
        ids = [f"{opts.prefix}-{i:04d}" for i in range(opts.devices)]
        enrolled = enroll_fleet(opts.controller, data, ids, token)
        log.warning("enrolled %d device(s) with %s", enrolled, opts.controller)
    configs = fleet_configs(
        opts.devices, controller_url=opts.controller, mqtt_url=opts.mqtt,
        data_dir=data, source=source.resolve(),
        labels=_labels(opts.label), prefix=opts.prefix, fps=opts.fps,
        window_s=opts.window, poll_s=opts.poll,
    )  # fmt: skip
    fleet = SimFleet(configs)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet.start()
    log.warning("simulating %d device(s) %s-0000.. against %s", len(configs), opts.prefix,
                opts.mqtt)  # fmt: skip
    while not done.wait(1.0):
        if all(not d.running for d in fleet.devices.values()):
            break
    fleet.stop()
    errors = fleet.errors()
    if errors:
        first = next(iter(errors.items()))
        raise ConfigError(f"{len(errors)} simulated device(s) failed, e.g. {first[0]}: {first[1]}")
    return 0


def _wait_for_signal() -> threading.Event:
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done


def run_proto(opts: SimOptions) -> int:
    """Protocol-level devices (``edgefleet.simproto``): in this process, or split over
    ``--procs`` child processes of this same command."""
    import json

    from edgefleet.shared.errors import ConfigError
    from edgefleet.simproto import (
        ProtoConfig,
        ProtoFleet,
        deal_labels,
        device_ids,
        parse_mqtt_url,
    )

    if opts.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if opts.workers < 1:
        raise ConfigError("--workers must be at least 1")
    host, port = parse_mqtt_url(opts.mqtt)
    if opts.procs > 1:
        return _spawn_procs(opts)
    data = Path(opts.data).resolve()
    config = ProtoConfig(
        controller_url=opts.controller.rstrip("/"), mqtt_host=host, mqtt_port=port,
        data_dir=data, poll_s=opts.poll, window_s=opts.window,
        phase_delay_s=opts.phase_delay, workers=opts.workers, fps=opts.fps,
        token=_token(opts) or None,
    )  # fmt: skip
    ids = device_ids(opts.prefix, opts.first, opts.devices)
    fleet = ProtoFleet(config, ids, deal_labels(_labels(opts.label), opts.first, opts.devices))
    done = _wait_for_signal()
    fleet.start()
    log.warning("simulating %d protocol-level device(s) %s..%s against %s", len(ids), ids[0],
                ids[-1], opts.mqtt)  # fmt: skip
    done.wait()
    fleet.stop()
    summary = fleet.summary()
    if opts.stats:
        Path(opts.stats).write_text(json.dumps(summary, indent=2))
    log.warning("stopped: %s", summary)
    return 0


def _spawn_procs(opts: SimOptions) -> int:
    import subprocess
    import sys

    from edgefleet.shared.errors import ConfigError

    per, extra = divmod(opts.devices, opts.procs)
    children = []
    first = opts.first
    for i in range(opts.procs):
        count = per + (1 if i < extra else 0)
        if count == 0:
            continue
        argv = [sys.executable, "-m", "edgefleet", "sim", "--mode", "proto", "--procs", "1",
                "--devices", str(count), "--first", str(first),
                "--controller", opts.controller, "--mqtt", opts.mqtt,
                "--data", str(Path(opts.data) / f"proc{i}"), "--prefix", opts.prefix,
                "--fps", str(opts.fps), "--window", str(opts.window), "--poll", str(opts.poll),
                "--phase-delay", str(opts.phase_delay), "--workers", str(opts.workers)]  # fmt: skip
        for item in opts.label:
            argv += ["--label", item]
        if opts.stats:
            argv += ["--stats", f"{opts.stats}.{i}"]
        if opts.quiet:
            argv.append("--quiet")
        env = {**os.environ, "EDGEFLEET_TOKEN": _token(opts)}  # not in argv: ps shows argv
        children.append(subprocess.Popen(argv, env=env))
        first += count
    done = _wait_for_signal()
    while not done.wait(1.0):
        if any(c.poll() is not None for c in children):
            break  # one ended by itself: stop the others too
    for c in children:
        if c.poll() is None:
            c.terminate()
    codes = [c.wait() for c in children]
    failed = [i for i, code in enumerate(codes) if code not in (0, -signal.SIGTERM)]
    if failed:
        raise ConfigError(f"simulator process(es) {failed} ended with {[codes[i] for i in failed]}")
    return 0
