"""``edgefleet sim``: many real agents in one process, speaking the real protocol.

Each simulated device is the real agent stack, wired by ``agent.daemon.run`` (config,
MQTT link, TUF updater, reconcile, slots, pipeline, monitor) on its own thread with its
own device id, labels, data folder and stop flag, reading frames from a folder at a low
frame rate. Nothing is faked: devices download and verify signed models, swap them,
health-check them and send telemetry windows like the daemon does. A device can be
taken offline (its stack stopped; the broker publishes its Last Will) and brought back
(same data folder, same persistent MQTT session) to test catching up.

Only the standard library is imported at the top (the CLI imports this module to
register the command); the agent is imported when a fleet starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from edgefleet.agent.config import AgentConfig

log = logging.getLogger("edgefleet.sim")
T = TypeVar("T")

STOP_TIMEOUT_S = 15.0  # seconds to wait for one device's threads at shutdown


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


def _labels(items: list[str]) -> dict[str, list[str]]:
    from edgefleet.shared.errors import ConfigError

    out = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"bad --label {item!r}: expected KEY=V1[,V2,...]")
        out[key] = [v for v in values.split(",") if v]
    return out


def _token(args: argparse.Namespace) -> str:
    return str(args.token or os.environ.get("EDGEFLEET_TOKEN", "")).strip()


def run_from_args(args: argparse.Namespace) -> int:
    from edgefleet.shared.errors import ConfigError

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.procs < 1:
        raise ConfigError("--procs must be at least 1")
    if args.mode == "proto":
        return run_proto(args)
    if args.procs != 1:
        raise ConfigError("--procs is for --mode proto; agent stacks run in one process")
    source = Path(args.source)
    if not source.is_dir():
        raise ConfigError(f"frame folder {source} does not exist")
    if args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    data = Path(args.data).resolve()
    token = _token(args)
    if token:
        ids = [f"{args.prefix}-{i:04d}" for i in range(args.devices)]
        enrolled = enroll_fleet(args.controller, data, ids, token)
        log.warning("enrolled %d device(s) with %s", enrolled, args.controller)
    configs = fleet_configs(
        args.devices, controller_url=args.controller, mqtt_url=args.mqtt,
        data_dir=data, source=source.resolve(),
        labels=_labels(args.label), prefix=args.prefix, fps=args.fps,
        window_s=args.window, poll_s=args.poll,
    )  # fmt: skip
    fleet = SimFleet(configs)
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet.start()
    log.warning("simulating %d device(s) %s-0000.. against %s", len(configs), args.prefix,
                args.mqtt)  # fmt: skip
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


def run_proto(args: argparse.Namespace) -> int:
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

    if args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    host, port = parse_mqtt_url(args.mqtt)
    if args.procs > 1:
        return _spawn_procs(args)
    data = Path(args.data).resolve()
    config = ProtoConfig(
        controller_url=args.controller.rstrip("/"), mqtt_host=host, mqtt_port=port,
        data_dir=data, poll_s=args.poll, window_s=args.window,
        phase_delay_s=args.phase_delay, workers=args.workers, fps=args.fps,
        token=_token(args) or None,
    )  # fmt: skip
    ids = device_ids(args.prefix, args.first, args.devices)
    fleet = ProtoFleet(config, ids, deal_labels(_labels(args.label), args.first, args.devices))
    done = _wait_for_signal()
    fleet.start()
    log.warning("simulating %d protocol-level device(s) %s..%s against %s", len(ids), ids[0],
                ids[-1], args.mqtt)  # fmt: skip
    done.wait()
    fleet.stop()
    summary = fleet.summary()
    if args.stats:
        Path(args.stats).write_text(json.dumps(summary, indent=2))
    log.warning("stopped: %s", summary)
    return 0


def _spawn_procs(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    from edgefleet.shared.errors import ConfigError

    per, extra = divmod(args.devices, args.procs)
    children = []
    first = args.first
    for i in range(args.procs):
        count = per + (1 if i < extra else 0)
        if count == 0:
            continue
        argv = [sys.executable, "-m", "edgefleet", "sim", "--mode", "proto", "--procs", "1",
                "--devices", str(count), "--first", str(first),
                "--controller", args.controller, "--mqtt", args.mqtt,
                "--data", str(Path(args.data) / f"proc{i}"), "--prefix", args.prefix,
                "--fps", str(args.fps), "--window", str(args.window), "--poll", str(args.poll),
                "--phase-delay", str(args.phase_delay), "--workers", str(args.workers)]  # fmt: skip
        for item in args.label:
            argv += ["--label", item]
        if args.stats:
            argv += ["--stats", f"{args.stats}.{i}"]
        if args.quiet:
            argv.append("--quiet")
        env = {**os.environ, "EDGEFLEET_TOKEN": _token(args)}  # not in argv: ps shows argv
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


def register(sub: Any) -> None:
    sim = sub.add_parser(
        "sim", help="simulated devices: N real agent stacks (--mode agent) or thousands of "
        "protocol-level devices over several processes (--mode proto)",
    )  # fmt: skip
    sim.add_argument("--mode", choices=("agent", "proto"), default="agent",
                     help="agent: the whole agent stack per device (small fleets); proto: "
                     "MQTT + TUF + downloads only (edgefleet/simproto.py)")  # fmt: skip
    sim.add_argument("--procs", type=int, default=1, help="processes to split --mode proto over")
    sim.add_argument("--first", type=int, default=0, help="index of the first device id")
    sim.add_argument("--workers", type=int, default=8,
                     help="refresh/install threads per process (--mode proto)")  # fmt: skip
    sim.add_argument("--phase-delay", type=float, default=0.0,
                     help="seconds each install phase takes (--mode proto)")  # fmt: skip
    sim.add_argument(
        "--stats",
        default=None,
        help="write a JSON summary here at exit (--mode proto; .N per process)",
    )
    sim.add_argument("--devices", type=int, default=10)
    sim.add_argument("--controller", default="http://127.0.0.1:8600", help="controller URL")
    sim.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL")
    sim.add_argument("--data", default="sim-data", help="folder for the devices' data")
    sim.add_argument("--source", default="models/samples", help="folder of frames")
    sim.add_argument("--label", action="append", default=[], metavar="KEY=V1,V2",
                     help="label values dealt round-robin; repeat for several labels")  # fmt: skip
    sim.add_argument("--prefix", default="sim", help="device ids are PREFIX-0000, ...")
    sim.add_argument("--fps", type=float, default=2.0, help="frames per second per device")
    sim.add_argument("--window", type=float, default=5.0, help="seconds per telemetry window")
    sim.add_argument("--poll", type=float, default=10.0, help="seconds between director polls")
    sim.add_argument("--token", default=None,
                     help="operator API token (default $EDGEFLEET_TOKEN) for a controller with "
                     "auth on: --mode agent enrolls each device not enrolled yet, as `agent "
                     "enroll` does; --mode proto fetches /tuf with it")  # fmt: skip
    sim.add_argument("--quiet", action="store_true", help="warnings only")
    sim.set_defaults(handler="edgefleet.sim:run_from_args")
