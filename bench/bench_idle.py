"""What an idle fleet costs the controller: requests per second by kind, 404s, CPU.

Real parts only: a controller process (``edgefleet controller serve``, SQLite, no broker
reachable: idle devices need none) and ``--devices`` idle devices in this process, each
with the agent's real code and its own connections: :class:`ModelUpdater` (director +
image repository, TUF), :class:`ControllerSettings` (sampling settings) and
:class:`BaselineCache` (the model card of the version it runs, which has no card, the
common case). Every device runs v1, which its director assigns: a poll finds nothing to do.

Time is compressed by ``--speedup``: a device polls every ``30 / speedup`` wall seconds,
and the sampler's and telemetry's cadences (5 min, 1 min) run on the same device clock.
Each poll opens fresh connections, as at a real 30 s interval (longer than uvicorn's 5 s
keep-alive). The figures are per device per 30 s of device time, then projected to
``--devices`` (and 10,000) devices polling every 30 s, assuming the controller's CPU is
linear in requests: projected CPU = background CPU (measured for 3 s with no requests,
after the warm-up) + CPU-seconds per request (the measured CPU less that background) x
projected requests/s.
The client runs on the same cores as the controller, so CPU per request is measured under
contention: read the ratio before/after as the robust figure, the absolute as an upper
bound.

Two phases against the same controller, one run:

* ``before``: the agent as it was: a full ngclient refresh on every poll (timestamp +
  ``N+1.root.json`` 404 per repository), sampling settings fetched on every poll without
  ETag, a missing model card asked every 60 s;
* ``after``: conditional timestamp checks (304), sampling settings every 5 min with ETag,
  missing cards with doubling gaps.

Each phase starts with a warm-up that is not measured: the device's roots are pinned (as
enrollment provisions them), one poll (first full refresh, first settings), and, after,
a day of the card's doubling retry gaps (about 12 asks), so what is measured is the
steady state of a device idle for more than a day.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from edgefleet.agent.baseline import BaselineCache
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.sampler import ControllerSettings
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.signing import TufRepositories
from edgefleet.shared.errors import EdgefleetError
from edgefleet.shared.protocol import utcnow
from edgefleet.shared.sampling import SamplingConfig

from edgefleet.devbroker import free_port

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models/shapes/v1/model.onnx"
POLL_S = 30.0  # device seconds between polls, the agent's default while MQTT is away
CONNECTED_POLL_S = 300.0  # the agent's default while its MQTT session is up (hints arrive)
WINDOW_S = 60.0  # device seconds between telemetry windows (the card lookup)
FLEET = 10_000  # the fleet, for the second projection
BUDGET = 0.10  # the target: an idle fleet of 1,000 under 10 % of one core


@dataclass(frozen=True)
class Cadence:
    """How often one device asks for what, in device seconds."""

    full_refresh: bool  # ngclient's refresh on every poll (the old agent)
    settings_s: float
    settings_etag: bool
    card_retry_max_s: float
    settle_s: float  # device seconds of card lookups in the warm-up (the card's transient)


BEFORE = Cadence(
    full_refresh=True, settings_s=POLL_S, settings_etag=False, card_retry_max_s=60, settle_s=0
)
AFTER = Cadence(
    full_refresh=False,
    settings_s=SamplingConfig().settings_refresh_s,
    settings_etag=True,
    card_retry_max_s=6 * 3600,
    settle_s=86_400,  # a day: the doubling gaps reach their 6 h cap after about 8.5 h
)


@dataclass
class Counter:
    """Requests by kind and status, from the agent code's own observer hooks."""

    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, url: str, status: int) -> None:
        with self.lock:
            self.by_kind[_kind(url)] += 1
            self.by_status[status] += 1

    def reset(self) -> None:
        with self.lock:
            self.by_kind.clear()
            self.by_status.clear()


def _kind(url: str) -> str:
    name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    if "/sampling" in url:
        return "sampling"
    if url.endswith("/card"):
        return "card"
    if name == "timestamp.json":
        return "timestamp"
    if name.endswith(".root.json"):
        return "root"
    return "other metadata" if name.endswith(".json") else "other"


class Device:
    """One idle device: the agent's updater, settings and card code on a device clock.

    A real fleet is out of step: each device starts its slower cadences (image timestamp,
    sampling settings, telemetry windows) at a random phase, so a short measurement sees
    each at its average rate.
    """

    def __init__(
        self, url: str, device_id: str, folder: Path, cadence: Cadence, count: Counter
    ) -> None:
        self.device_id, self.cadence, self.now = device_id, cadence, 0.0
        rng = random.Random(device_id)
        config = UpdaterConfig(url, device_id, folder, download_deadline_s=120, socket_timeout_s=60)
        if cadence.full_refresh:  # a margin beyond any expiry: never reuse a verification
            config = dataclasses.replace(config, expiry_margin_s=1e15)
        epoch = utcnow()
        # the warm-up's image check happened a random part of image_check_s ago
        self.shift = -rng.uniform(0, config.image_check_s)
        fetcher = DeadlineFetcher(FetcherConfig(deadline_s=120, timeout_s=60), observer=count)
        self.updater = ModelUpdater(
            config, fetcher, clock=lambda: epoch + timedelta(seconds=self.now + self.shift)
        )
        self.http = ControllerHttp(url, device_id, timeout_s=60, observer=count)
        local = SamplingConfig()
        self.settings = ControllerSettings(self.http, device_id, {"site": "bench"}, local)
        self.card_s = 0.0  # the card cache's clock: ahead of ``now`` by the settling time
        self.cards = BaselineCache(self.http, folder / "baselines", retry_s=60,
                                   retry_max_s=cadence.card_retry_max_s,
                                   clock=lambda: self.card_s + self.now)  # fmt: skip
        self.next_settings = rng.uniform(0, cadence.settings_s)
        self.next_window = rng.uniform(0, WINDOW_S)

    def warm_up(self, settle_s: float) -> None:
        """The first poll (TOFU, full refresh), then ``settle_s`` of card lookups."""
        self.updater.refresh({"shapes": 1}, None)
        self.shift = 0.0
        self.settings()
        while self.card_s <= settle_s:
            self.cards.get("shapes", "v1")
            self.card_s += WINDOW_S
        self._hang_up()

    def poll(self) -> None:
        """One poll at device time ``now``, then hang up as a 30 s interval would."""
        self.updater.refresh({"shapes": 1}, None)
        if self.now >= self.next_settings:
            if not self.cadence.settings_etag:
                self.settings.etag = None
            self.settings()
            self.next_settings += self.cadence.settings_s
        while self.now >= self.next_window:  # every telemetry window looks up the card
            self.cards.get("shapes", "v1")
            self.next_window += WINDOW_S
        self._hang_up()

    def _hang_up(self) -> None:
        self.updater.close()
        self.http.close()


def _setup(data: Path, devices: int) -> list[str]:
    """The controller's repositories: v1 signed, assigned to every device."""
    repos = TufRepositories(data)
    info = repos.image.add_model_target("shapes", "v1", 1, MODEL)
    ids = [f"idle-{i:05d}" for i in range(devices)]
    for device_id in ids:
        repos.assign(device_id, [info])
    return ids


def _pin_roots(data: Path, device_id: str, folder: Path) -> None:
    """Provision the device's pinned roots, as the enrollment would (no first-use fetch)."""
    trust = folder / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    repos = TufRepositories(data)
    shutil.copy(repos.image_metadata_dir / "1.root.json", trust / "image-root.json")
    director = repos.director_metadata_dir(device_id) / "1.root.json"
    shutil.copy(director, trust / "director-root.json")


@contextlib.contextmanager
def _controller(folder: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [sys.executable, "-m", "edgefleet", "controller", "serve",
            "--data", str(folder / "controller"), "--mqtt", f"mqtt://127.0.0.1:{free_port()}",
            "--listen", f"127.0.0.1:{port}", "--insecure-dev"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with (folder / "controller.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc)
        yield url, proc.pid
    except (EdgefleetError, httpx.HTTPError):
        tail = (folder / "controller.log").read_text(errors="replace")[-4000:]
        print(f"[bench] controller log, last lines:\n{tail}", file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EdgefleetError(f"the controller exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise EdgefleetError("timed out after 120 s waiting for the controller")


def _idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """The controller's own background CPU (scheduler, broker retries) per wall second."""
    cpu0 = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _drive(fleet: list[Device], speedup: float, duration_s: float, threads: int) -> float:
    """Poll every device on its device clock for ``duration_s`` wall seconds.

    Returns the wall seconds the polls were late on average: above a poll interval the
    client, not the controller, set the pace (the figures are then per poll made).
    """
    start = time.monotonic()
    due = [(start + i * POLL_S / speedup / len(fleet), i) for i in range(len(fleet))]
    heapq.heapify(due)
    lock, lateness, errors = threading.Lock(), [], []

    def worker() -> None:
        while True:
            with lock:
                when, i = heapq.heappop(due)
                if when > start + duration_s:
                    heapq.heappush(due, (when, i))
                    return
            time.sleep(max(0.0, when - time.monotonic()))
            dev = fleet[i]
            dev.now += POLL_S
            try:
                dev.poll()
            except Exception as e:  # noqa: BLE001 - reported below, with the device
                errors.append(f"{dev.device_id}: {type(e).__name__}: {e}")
            with lock:
                lateness.append(time.monotonic() - when)
                heapq.heappush(due, (when + POLL_S / speedup, i))

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise EdgefleetError(f"{len(errors)} poll(s) failed, first: {errors[0]}")
    return sum(lateness) / max(1, len(lateness))


def _phase(
    url: str, pid: int, ids: list[str], folder: Path, cadence: Cadence, opts: dict[str, Any]
) -> dict[str, Any]:
    count = Counter()
    for d in ids:
        _pin_roots(opts["data"], d, folder / d)
    fleet = [Device(url, d, folder / d, cadence, count) for d in ids]
    with ThreadPoolExecutor(opts["threads"]) as pool:  # not measured
        list(pool.map(lambda dev: dev.warm_up(cadence.settle_s), fleet))
    count.reset()
    idle = _idle_cpu(pid)  # after the warm-up, right before the measured window
    polls_before = sum(d.now for d in fleet) / POLL_S
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    late = _drive(fleet, opts["speedup"], opts["duration_s"], opts["threads"])
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    polls = sum(d.now for d in fleet) / POLL_S - polls_before
    return _figures(count, polls, cpu, wall, late, idle, len(ids))


def _figures(
    count: Counter, polls: float, cpu: float, wall: float, late: float, idle: float, devices: int
) -> dict[str, Any]:
    requests = sum(count.by_kind.values())
    per_poll = requests / polls  # requests per device per 30 s of device time
    rps_30 = per_poll * devices / POLL_S
    # the controller's background (measured without requests) is not the requests' cost
    cpu_per_request = max(0.0, cpu - idle * wall) / requests
    return {
        "polls": int(polls),
        "wall_s": round(wall, 2),
        "mean_lateness_s": round(late, 3),
        "requests": requests,
        "requests_per_s_measured": round(requests / wall, 1),
        "controller_cpu_s_per_wall_s_measured": round(cpu / wall, 3),
        "controller_cpu_s_per_s_without_requests": round(idle, 4),
        "by_kind_per_device_poll": {
            k: round(v / polls, 4) for k, v in sorted(count.by_kind.items())
        },
        "status_counts": dict(sorted(count.by_status.items())),
        "not_found_per_device_poll": round(count.by_status[404] / polls, 4),
        "requests_per_device_poll": round(per_poll, 4),
        "controller_cpu_ms_per_request": round(1000 * cpu_per_request, 3),
        "projected_requests_per_s_at_30s": round(rps_30, 1),
        "projected_core_share_at_30s": round(idle + cpu_per_request * rps_30, 4),
        "projected_requests_per_s_10k": round(per_poll * FLEET / POLL_S, 1),
        # The same measured cost per request, at the interval a connected agent polls.
        "projected_core_share_connected": round(
            idle + cpu_per_request * per_poll * devices / CONNECTED_POLL_S, 4
        ),
    }


def bench(devices: int, *, speedup: float, duration_s: float, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-idle-") as tmp:
        folder = Path(tmp)
        ids = _setup(folder / "controller", devices)
        opts: dict[str, Any] = {"speedup": speedup, "duration_s": duration_s, "threads": threads,
                "data": folder / "controller"}  # fmt: skip
        with _controller(folder) as (url, pid):
            before = _phase(url, pid, ids, folder / "before", BEFORE, opts)
            after = _phase(url, pid, ids, folder / "after", AFTER, opts)
    b, a = before, after
    return {
        "devices": devices,
        "speedup": speedup,
        "poll_s_device": POLL_S,
        "before": before,
        "after": after,
        "ratio_requests_before_vs_after": round(
            b["requests_per_device_poll"] / a["requests_per_device_poll"], 2
        ),
        "ratio_cpu_before_vs_after": round(
            b["projected_core_share_at_30s"] / a["projected_core_share_at_30s"], 2
        ),
        "after_within_budget": a["projected_core_share_at_30s"] < BUDGET * devices / 1000,
        "after_connected_within_budget": (
            a["projected_core_share_connected"] < BUDGET * devices / 1000
        ),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['devices']} idle devices, poll every {r['poll_s_device']:g} s of device time, "
          f"time x{r['speedup']:g}")  # fmt: skip
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("requests / device / poll", lambda p: f"{p['requests_per_device_poll']:.3f}"),
        ("404s / device / poll", lambda p: f"{p['not_found_per_device_poll']:.3f}"),
        ("controller CPU ms / request", lambda p: f"{p['controller_cpu_ms_per_request']:.3f}"),
        ("measured requests/s", lambda p: f"{p['requests_per_s_measured']:.0f}"),
        ("measured controller CPU s / s", lambda p: str(p["controller_cpu_s_per_wall_s_measured"])),
        (
            "  of which without requests",
            lambda p: str(p["controller_cpu_s_per_s_without_requests"]),
        ),
        ("projected requests/s (30 s poll)", lambda p: str(p["projected_requests_per_s_at_30s"])),
        (
            "projected share of one core",
            lambda p: f"{100 * p['projected_core_share_at_30s']:.2f} %",
        ),
        ("projected requests/s, 10,000", lambda p: str(p["projected_requests_per_s_10k"])),
        (
            "share of a core, MQTT up (300 s)",
            lambda p: f"{100 * p['projected_core_share_connected']:.2f} %",
        ),
    ]
    print(f"{'':34} {'before':>12} {'after':>12}")
    for name, cell in rows:
        print(f"{name:34} {cell(r['before']):>12} {cell(r['after']):>12}")
    for phase in ("before", "after"):
        kinds = ", ".join(f"{k} {v:g}" for k, v in r[phase]["by_kind_per_device_poll"].items())
        print(f"{phase} by kind per device per poll: {kinds}")
    print(f"ratio requests before/after: {r['ratio_requests_before_vs_after']}x, "
          f"CPU before/after: {r['ratio_cpu_before_vs_after']}x; "
          f"after within 10 % of a core per 1,000: {r['after_within_budget']} at a 30 s poll, "
          f"{r['after_connected_within_budget']} at the connected 300 s poll")  # fmt: skip
