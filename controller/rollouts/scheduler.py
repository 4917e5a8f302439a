"""The scheduler: a thread that advances every running rollout, from database state only.

Each round it takes (or renews) the database lease; only the holder ticks, so two
controllers on one database advance each rollout once. The round's fencing token guards
every commit it makes (``lease.fence_commits``): a holder that paused past its lease
has its writes refused, not applied beside the new holder's. Rollouts go in priority order
(higher first), then by age. Every decision is made by the pure ``advance.plan``; this
loop only decides *when* to ask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from edgefleet.controller.db import first_line, is_transient
from edgefleet.controller.models.rollouts import Rollout
from edgefleet.controller.rollouts import lease, pinning
from edgefleet.controller.rollouts.context import WAKE, Deps
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.controller.rollouts.service import SCHEDULER, advance
from edgefleet.shared.protocol import utcnow
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

log = logging.getLogger(__name__)

INTERVAL_S = 1.0  # seconds between rounds
LEASE_TTL_S = lease.LEASE_TTL_S


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        deps: Deps,
        *,
        holder: str | None = None,
        interval_s: float = INTERVAL_S,
        lease_ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine, self.deps = engine, deps
        self.holder = holder or lease.default_holder()
        self.interval_s, self.lease_ttl_s = interval_s, lease_ttl_s
        self.clock = clock
        self.leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        WAKE.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.leading:
            lease.release(self.engine, self.holder)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.round()
            except Exception:  # the loop outlives any bug or a database hiccup; next round
                log.exception("rollout scheduler round failed")
            # A new rollout, or devices left to sign, wake the loop before the interval ends.
            # Otherwise a round that read a large fleet waits twice its own time, so the
            # scheduler takes at most a third of a core away from the ingest and the API.
            spent = time.monotonic() - started
            WAKE.wait(max(self.interval_s, 2 * spent))
            WAKE.clear()

    def round(self) -> int:
        """One round; returns how many rollouts were ticked (0 when not the lease holder)."""
        now = self.clock()
        token = lease.acquire(self.engine, self.holder, now, self.lease_ttl_s)
        leading = token is not None
        if leading != self.leading:
            epoch = f" (epoch {token})" if leading else ""
            log.info("scheduler %s: %s the rollout lease%s", self.holder,
                     "holds" if leading else "lost", epoch)  # fmt: skip
        self.leading = leading
        if token is None:
            return 0
        try:
            return self._tick_all(token)
        except lease.LeaseLostError as e:  # paused past the lease: another holder acts now
            log.warning("scheduler %s: %s; its uncommitted writes are dropped", self.holder, e)
            self.leading = False
            return 0

    def _tick_all(self, token: int) -> int:
        ticked = 0
        with Session(self.engine) as session:
            # Every commit below first checks, in its own transaction, that this process
            # still holds the lease under ``token`` (lease.fence).
            lease.fence_commits(session, self.holder, token)
            try:  # new devices, channels that follow a model's newest version
                pinning.apply_pins(session, self.deps, SCHEDULER)
            except lease.LeaseLostError:
                raise
            except Exception as e:  # rollouts still advance
                session.rollback()
                if is_transient(e):  # another replica
                    log.warning("applying pins: %s; next round", first_line(e))
                else:
                    log.exception("applying pins failed")
            running = session.exec(
                select(Rollout)
                .where(Rollout.state == RolloutState.RUNNING.value)
                .order_by(col(Rollout.priority).desc(), col(Rollout.id))
            ).all()
            for rollout in running:
                try:
                    advance(session, self.deps, rollout, self.clock())
                    ticked += 1
                except lease.LeaseLostError:
                    raise
                except Exception as e:  # one broken rollout must not stop the others
                    session.rollback()
                    if is_transient(e):  # another replica
                        log.warning("advancing rollout %s: %s; next round", rollout.id,
                                    first_line(e))  # fmt: skip
                    else:
                        log.exception("advancing rollout %s failed", rollout.id)
        return ticked
