"""Long-running threads that never die silently: restarted with backoff, counted, judged.

A thread's loop that raises (a full disk under the telemetry spool, a bug met once a
week) used to end the thread while the process kept serving and looked healthy. Here
each loop runs under a :class:`Supervisor`: an exception is logged with its traceback the
first time that cause is seen (once per cause, so a loop failing every second does not
fill the disk with the same lines), counted through ``on_restart(thread_name)``, and the
loop starts again after an exponential backoff. A thread that fails ``give_up_after``
times in a row without one healthy run makes :meth:`Supervisor.healthy` False: the
caller stops feeding its watchdog (systemd restarts the whole process) but the thread
keeps trying meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0  # seconds before the first restart
BACKOFF_MAX_S = 60.0  # seconds between restarts at most
HEALTHY_RUN_S = 60.0  # a run this long resets the backoff and the failure count
GIVE_UP_AFTER = 5  # failures in a row before the supervisor reports itself unhealthy


@dataclass
class SupervisorPolicy:
    backoff_min_s: float = BACKOFF_MIN_S  # seconds
    backoff_max_s: float = BACKOFF_MAX_S  # seconds
    healthy_run_s: float = HEALTHY_RUN_S  # seconds
    give_up_after: int = GIVE_UP_AFTER  # failures in a row


@dataclass
class _Record:
    failures_in_row: int = 0
    restarts: int = 0
    seen: set[str] = field(default_factory=set)  # causes already logged with a traceback


class Supervisor:
    """Runs loops on daemon threads until ``stop`` is set, restarting the ones that raise."""

    def __init__(
        self,
        stop: threading.Event,
        *,
        policy: SupervisorPolicy | None = None,
        on_restart: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = stop
        self.policy = policy or SupervisorPolicy()
        self.on_restart = on_restart
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    def thread(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        """A daemon thread (not started) that runs ``loop`` under supervision."""
        with self._lock:
            self._records[name] = _Record()
        return threading.Thread(target=self._supervise, args=(name, loop), name=name, daemon=True)

    def healthy(self) -> bool:
        """False while any thread has failed ``give_up_after`` times in a row."""
        with self._lock:
            return all(
                r.failures_in_row < self.policy.give_up_after for r in self._records.values()
            )

    def restarts(self, name: str) -> int:
        with self._lock:
            return self._records[name].restarts

    def _supervise(self, name: str, loop: Callable[[], None]) -> None:
        while not self.stop.is_set():
            started = self.clock()
            try:
                loop()
            except Exception as e:  # noqa: BLE001 - every failure is logged and restarted
                delay = self._failed(name, e, self.clock() - started)
            else:
                if self.stop.is_set():
                    return
                delay = self._failed(name, None, self.clock() - started)
            self.stop.wait(delay)

    def _failed(self, name: str, error: Exception | None, ran_s: float) -> float:
        """Record one failure; the seconds to wait before the restart."""
        cause = "returned" if error is None else f"{type(error).__name__}: {error}"
        with self._lock:
            rec = self._records[name]
            if ran_s >= self.policy.healthy_run_s:
                rec.failures_in_row = 0
            rec.failures_in_row += 1
            rec.restarts += 1
            first_time = cause not in rec.seen
            rec.seen.add(cause)
            in_row = rec.failures_in_row
        delay = min(self.policy.backoff_max_s, self.policy.backoff_min_s * 2.0 ** (in_row - 1))
        if first_time:
            log.error(
                "thread %s stopped (%s); restarting in %.0f s",
                name, cause, delay, exc_info=error,
            )  # fmt: skip
        else:
            log.debug("thread %s stopped again (%s)", name, cause)
        if in_row == self.policy.give_up_after:
            log.error("thread %s failed %d times in a row: reporting unhealthy", name, in_row)
        if self.on_restart is not None:
            self.on_restart(name)
        return delay
