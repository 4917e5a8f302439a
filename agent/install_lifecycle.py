"""A device's install lifecycle: one enum of phases, one table of transitions.

The phases are :class:`~edgefleet.shared.protocol.Phase` (what a device reports on the
wire); the events are what the reconciler does (``agent/reconcile.py``). Every phase the
reconciler enters goes through :func:`transition`; a step the table does not list is an
:class:`IllegalPhaseError` (a bug in the agent, never a device fault), and a new step is
only added here. The table below is rendered into docs/ARCHITECTURE.md ("Lifecycles") by
:func:`render_table`, and a test checks the page says what the code does.

Shape: an install walks DOWNLOADING -> VERIFIED -> PREPARING -> WARMING -> [SHADOW] ->
SWAPPED -> HEALTH_CHECK -> COMMITTED | REVERTED, and may end FAILED before the swap (the
old model still serving) or REVERTED after it (never FAILED: the new model served and was
taken back). A download cut off by a fault of the network stays in DOWNLOADING
(``interrupt``, reported ``transient``) until it is tried again or nothing is left to
install. Only an end phase (IDLE, COMMITTED, FAILED, REVERTED, or an interrupted download)
starts a new install. Pure: no I/O, no clock.
"""

from __future__ import annotations

from enum import Enum

from edgefleet.shared.errors import EdgefleetError
from edgefleet.shared.protocol import Phase
from edgefleet.shared.transition_table import markdown, step


class InstallEvent(str, Enum):
    START = "start"  # a target differs from what runs: its download begins (again)
    INTERRUPT = "interrupt"  # the download was cut off (transport): retried with backoff
    VERIFY = "verify"  # downloaded, hashes and signatures checked, stored
    PREPARE = "prepare"  # engine build (none for ONNX)
    WARM = "warm"  # loaded and warmed up in the standby slot
    SHADOW = "shadow"  # the challenger runs beside the champion on sampled frames
    SHADOW_DONE = "shadow_done"  # the agreement is reported (a gate when one is set)
    SWAP = "swap"  # the standby slot serves
    CHECK = "check"  # the first frames after the swap are judged
    COMMIT = "commit"  # healthy and recorded durably
    REVERT = "revert"  # unhealthy after the swap: the previous model serves again
    FAIL = "fail"  # refused before the swap (artifact, load, warm-up, shadow gate, disk)
    RENAME = "rename"  # the bytes running, signed under another name: no reinstall
    SETTLE = "settle"  # an interrupted download is no longer wanted; a model serves
    SETTLE_IDLE = "settle_idle"  # ... and none is installed yet


P, E = Phase, InstallEvent

# Where an install may start (or start over): nothing in flight.
RESTING = (P.IDLE, P.COMMITTED, P.FAILED, P.REVERTED, P.DOWNLOADING)

TRANSITIONS: dict[tuple[Phase, InstallEvent], Phase] = {
    **{(p, E.START): P.DOWNLOADING for p in RESTING},
    (P.DOWNLOADING, E.INTERRUPT): P.DOWNLOADING,
    (P.DOWNLOADING, E.VERIFY): P.VERIFIED,
    (P.DOWNLOADING, E.FAIL): P.FAILED,
    (P.VERIFIED, E.PREPARE): P.PREPARING,
    (P.PREPARING, E.WARM): P.WARMING,
    (P.WARMING, E.FAIL): P.FAILED,
    (P.WARMING, E.SHADOW): P.SHADOW,
    (P.SHADOW, E.SHADOW_DONE): P.SHADOW,
    (P.SHADOW, E.FAIL): P.FAILED,
    (P.WARMING, E.SWAP): P.SWAPPED,
    (P.SHADOW, E.SWAP): P.SWAPPED,
    (P.SWAPPED, E.CHECK): P.HEALTH_CHECK,
    (P.HEALTH_CHECK, E.COMMIT): P.COMMITTED,
    (P.HEALTH_CHECK, E.REVERT): P.REVERTED,
    **{(p, E.RENAME): P.COMMITTED for p in (P.COMMITTED, P.FAILED, P.REVERTED, P.DOWNLOADING)},
    (P.DOWNLOADING, E.SETTLE): P.COMMITTED,
    (P.DOWNLOADING, E.SETTLE_IDLE): P.IDLE,
}

# Phases an install passes through on its way (a crash there leaves the store as it was).
IN_PROGRESS = frozenset(
    {P.DOWNLOADING, P.VERIFIED, P.PREPARING, P.WARMING, P.SHADOW, P.SWAPPED, P.HEALTH_CHECK}
)
# Where a finished install leaves a device.
ENDS = frozenset({P.COMMITTED, P.REVERTED, P.FAILED})


class IllegalPhaseError(EdgefleetError):
    """The event does not apply in this phase: the reconciler has a bug."""


def transition(phase: Phase | str, event: InstallEvent) -> Phase:
    """The phase after ``event``, or :class:`IllegalPhaseError` (one line)."""
    current = Phase(phase)
    return step(TRANSITIONS, Phase, current, event, lambda needs: IllegalPhaseError(
        f"install cannot {event.value} in phase {current.value} (needs {needs})"))  # fmt: skip


def render_table() -> str:
    """The table as Markdown (from | event | to): what docs/ARCHITECTURE.md shows."""
    return str(markdown(TRANSITIONS, Phase, InstallEvent))
