"""The frame loop's claim on the CPU, and the background work that gives way to it.

A model prepared while another one serves frames (``onnx_backend``'s background load) has
its graph optimised in a child process at idle priority. Idle priority was not enough on
a small box: on the idle 2-core build machine a paced source at 70 % of capacity still lost
frames in every run, all of them while such a child ran and none in control windows of the
same length (bench/README.md, "(2)"). The serving model's threads preempt an idle-priority
child at once, yet frames ran slower while it ran (p99 7.6 against 4.8 ms steady at 205
fps), enough for the queue's few frames of slack to run out; most likely the caches and
wake-ups it costs the serving threads between two operators (not isolated).

So a child does not run while the frame loop has work. The loop calls :meth:`Foreground.busy`
when it takes a frame and :meth:`Foreground.idle` when it waits on an empty queue; the
children attached here are stopped (``SIGSTOP``) while the loop is busy and continued
(``SIGCONT``) while it waits. On a paced source they thus run only in the gaps between
frames, when the cores would be idle anyway. A loop that never waits (a source faster
than the model), or one stuck on a frame, would starve them: a child stopped for
``starve_s`` runs on, still at idle priority, until the loop next waits for a frame (the
waiter calls :meth:`Foreground.poll` while it waits). With no frame loop (a device's first
model, a CLI), nothing calls :meth:`busy` and a child runs at once.

:class:`GatePolicy` decides (pure, the clock passed in); :class:`Foreground` sends the
signals, through a pidfd where the kernel has them so that a child already reaped is never
confused with a new process that took its pid.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

STARVE_S = 1.0  # seconds a child may stay stopped while the loop never waits for a frame


@dataclass
class GatePolicy:
    """Whether the attached children should run, from the frame loop's busy and idle calls.

    ``stopped_at`` is when they were last stopped (None: running); ``free`` is set once they
    starved and lasts until the loop next waits. Each method returns the signal to send
    (``SIGSTOP``, ``SIGCONT``) or None.
    """

    starve_s: float = STARVE_S
    stopped_at: float | None = None
    free: bool = False

    def busy(self, now: float) -> signal.Signals | None:
        if self.stopped_at is not None:  # still busy since: starving if that is too long
            return self.poll(now)
        if self.free:
            return None
        self.stopped_at = now
        return signal.SIGSTOP

    def poll(self, now: float) -> signal.Signals | None:
        """Between the loop's calls: a loop stuck on one frame for ``starve_s`` (a model
        far slower than planned, a hung frame) starves the children as surely as one that
        never waits."""
        if self.stopped_at is not None and now - self.stopped_at >= self.starve_s:
            self.stopped_at, self.free = None, True
            return signal.SIGCONT
        return None

    def idle(self) -> signal.Signals | None:
        self.free = False
        if self.stopped_at is None:
            return None
        self.stopped_at = None
        return signal.SIGCONT


class _Handle:
    """One child process, signalled by pidfd where the kernel has them, else by pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None
        if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
            try:
                self._fd = os.pidfd_open(pid)
            except OSError:  # an old kernel (< 5.3) or the child already gone
                self._fd = None

    def send(self, sig: signal.Signals) -> None:
        try:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # exited meanwhile: nothing to stop or continue

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Foreground:
    """The frame loop's busy and idle calls, applied to the children attached meanwhile."""

    def __init__(
        self, starve_s: float = STARVE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._policy = GatePolicy(starve_s)
        self._children: list[_Handle] = []
        self._clock = clock
        self.stops = 0  # SIGSTOPs sent, for tests and benchmarks

    def busy(self) -> None:
        """The frame loop took a frame: attached children stop (unless starving). Kept
        with no child too, so that one attached in the middle of a frame starts stopped."""
        with self._lock:
            self._apply(self._policy.busy(self._clock()))

    def poll(self) -> None:
        """Called by whoever waits for a child: one stopped too long runs on (starving)."""
        with self._lock:
            self._apply(self._policy.poll(self._clock()))

    def idle(self) -> None:
        """The frame loop waits on an empty queue: attached children run."""
        with self._lock:
            self._apply(self._policy.idle())

    def _apply(self, sig: signal.Signals | None) -> None:
        if sig is None or not self._children:
            return
        self.stops += sig == signal.SIGSTOP
        for child in self._children:
            child.send(sig)

    @contextmanager
    def attached(self, pid: int) -> Iterator[None]:
        """Gate the process ``pid`` (a child of this one) while the block runs; on the way
        out it is continued, so that a child left behind is never left stopped."""
        child = _Handle(pid)
        with self._lock:
            if not self._children:  # the first child: starving counts from now
                busy = self._policy.stopped_at is not None
                self._policy = GatePolicy(self._policy.starve_s, self._clock() if busy else None)
            self._children.append(child)
            if self._policy.stopped_at is not None:  # the loop has a frame now
                self.stops += 1
                child.send(signal.SIGSTOP)
        try:
            yield
        finally:
            with self._lock:
                self._children.remove(child)
                child.send(signal.SIGCONT)
                child.close()
