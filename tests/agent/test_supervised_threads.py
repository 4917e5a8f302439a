"""Supervised threads: a loop that raises is logged once per cause, counted, restarted with
backoff, and reported unhealthy when it keeps failing; stop ends it."""

from __future__ import annotations

import errno
import logging
import threading
from datetime import datetime, timezone

import pytest
from edgefleet.agent.daemon import telemetry_loop
from edgefleet.agent.monitor import WindowAccumulator
from edgefleet.agent.pipeline import FrameResult
from edgefleet.agent.store import ModelPointer
from edgefleet.shared.protocol import TelemetryWindow
from edgefleet.shared.supervise import Supervisor, SupervisorPolicy

FAST = SupervisorPolicy(backoff_min_s=0.001, backoff_max_s=0.01, healthy_run_s=60, give_up_after=3)


def test_a_failing_loop_is_restarted_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    counted: list[str] = []
    runs = []
    enough = threading.Event()

    def loop() -> None:
        runs.append(1)
        if len(runs) >= 6:
            enough.set()
            stop.wait()  # healthy from now on
            return
        raise OSError(errno.ENOSPC, "No space left on device")

    sup = Supervisor(stop, policy=FAST, on_restart=counted.append)
    t = sup.thread("telemetry", loop)
    with caplog.at_level(logging.DEBUG, logger="edgefleet.shared.supervise"):
        t.start()
        assert enough.wait(30)
        assert not sup.healthy()  # five failures in a row, give_up_after is 3
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert counted == ["telemetry"] * 5
    assert sup.restarts("telemetry") == 5
    tracebacks = [r for r in caplog.records if r.exc_info and "stopped" in r.getMessage()]
    assert len(tracebacks) == 1  # the same cause is logged with its traceback once
    assert "No space left" in tracebacks[0].getMessage()


def test_one_failure_keeps_the_supervisor_healthy() -> None:
    stop = threading.Event()
    second_run = threading.Event()
    calls = []

    def loop() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("once")
        second_run.set()
        stop.wait()

    sup = Supervisor(stop, policy=FAST)
    t = sup.thread("reconcile", loop)
    t.start()
    assert second_run.wait(30)
    assert sup.healthy()
    assert sup.restarts("reconcile") == 1
    stop.set()
    t.join(10)
    assert not t.is_alive()


def test_a_long_healthy_run_resets_the_failure_count() -> None:
    now = [0.0]
    stop = threading.Event()
    sup = Supervisor(stop, policy=SupervisorPolicy(healthy_run_s=60, give_up_after=2),
                     clock=lambda: now[0])  # fmt: skip
    sup.thread("x", lambda: None)
    assert sup._failed("x", ValueError("a"), ran_s=1) == 1.0
    assert sup._failed("x", ValueError("a"), ran_s=1) == 2.0  # backoff doubles
    assert not sup.healthy()
    assert sup._failed("x", ValueError("a"), ran_s=120) == 1.0  # it had run well: start over
    assert sup.healthy()


class _FullDisk:
    """A DataLoop whose spool is on a full disk until ``space`` is set."""

    def __init__(self) -> None:
        self.space = threading.Event()
        self.failures = 0
        self.sent: list[TelemetryWindow] = []
        self.got_one = threading.Event()

    def publish_telemetry(self, window: TelemetryWindow) -> None:
        if not self.space.is_set():
            self.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.sent.append(window)
        self.got_one.set()


def test_the_telemetry_thread_outlives_a_full_disk() -> None:
    stop = threading.Event()
    monitor = WindowAccumulator("dev-1", datetime.now(timezone.utc))
    meta = ModelPointer("m", "v1", 1, "0" * 64, "m.onnx")
    out = _FullDisk()
    restarted = threading.Event()

    def on_restart(name: str) -> None:
        restarted.set()

    def feed() -> None:
        monitor.on_frame(FrameResult(slot_id=0, meta=meta, latency_ms=5.0))

    sup = Supervisor(stop, policy=FAST, on_restart=on_restart)
    t = sup.thread("telemetry", lambda: telemetry_loop(monitor, out, stop, 0.01))  # type: ignore[arg-type]
    feed()
    t.start()
    assert restarted.wait(30)  # the window could not be spooled: the loop raised, restarted
    out.space.set()
    feed()
    assert out.got_one.wait(30)  # space is back: windows flow again on the same thread
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert out.failures >= 1
    assert sup.restarts("telemetry") >= 1
