"""A rollout's lifecycle: one enum of states, one table of transitions.

The scheduler (``service._record``), the operator actions (``actions``) and what the API
and the CLI show all go through :func:`transition`; a change the table does not list
cannot be made, only added here. Reads never change a state.

::

    running --next_stage / promote--> running
    running --succeed--> succeeded          (terminal)
    running --nothing_to_do--> nothing_to_do   (terminal: every matching device skipped)
    running --fail--> failed                (a person resumes, aborts or rolls back)
    running --inconclusive / pause--> paused
    paused, failed --resume--> running
    running, paused, failed --abort--> aborted   (terminal)
    any but rolled_back, nothing_to_do --rollback--> rolled_back (final)

Terminal states (succeeded, aborted, rolled_back, nothing_to_do) are never ticked by the
scheduler and never go back to running; the one way out of succeeded or aborted is an operator's
rollback. Pure: no database, clock or I/O.
"""

from __future__ import annotations

from enum import Enum

from edgefleet.shared.errors import ConflictError
from edgefleet.shared.transition_table import step


class RolloutState(str, Enum):
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    NOTHING_TO_DO = "nothing_to_do"  # every matching device pinned elsewhere: none assigned


class RolloutEvent(str, Enum):
    # The scheduler's (advance.Next) ...
    NEXT_STAGE = "next_stage"
    SUCCEED = "succeed"
    NOTHING_TO_DO = "nothing_to_do"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    # ... and an operator's (POST /v1/rollouts/{id}/{action}, `edgefleet rollout ACTION`).
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"
    PROMOTE = "promote"


S, E = RolloutState, RolloutEvent

TRANSITIONS: dict[tuple[RolloutState, RolloutEvent], RolloutState] = {
    (S.RUNNING, E.NEXT_STAGE): S.RUNNING,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.NOTHING_TO_DO): S.NOTHING_TO_DO,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.INCONCLUSIVE): S.PAUSED,
    (S.RUNNING, E.PAUSE): S.PAUSED,
    (S.RUNNING, E.PROMOTE): S.RUNNING,
    (S.PAUSED, E.PROMOTE): S.RUNNING,
    (S.PAUSED, E.RESUME): S.RUNNING,
    (S.FAILED, E.RESUME): S.RUNNING,
    (S.RUNNING, E.ABORT): S.ABORTED,
    (S.PAUSED, E.ABORT): S.ABORTED,
    (S.FAILED, E.ABORT): S.ABORTED,
    (S.RUNNING, E.ROLLBACK): S.ROLLED_BACK,
    (S.PAUSED, E.ROLLBACK): S.ROLLED_BACK,
    (S.FAILED, E.ROLLBACK): S.ROLLED_BACK,
    (S.SUCCEEDED, E.ROLLBACK): S.ROLLED_BACK,
    (S.ABORTED, E.ROLLBACK): S.ROLLED_BACK,
}

TERMINAL = frozenset({S.SUCCEEDED, S.ABORTED, S.ROLLED_BACK, S.NOTHING_TO_DO})
# Where the rollout will not move without a person (what `rollout status --watch` waits for).
SETTLED = TERMINAL | {S.FAILED}
OPERATOR_EVENTS = (E.PAUSE, E.RESUME, E.ABORT, E.ROLLBACK, E.PROMOTE)


class TransitionRefusedError(ConflictError):
    """The event does not apply to the rollout's state (HTTP 409)."""


def transition(
    state: RolloutState | str, event: RolloutEvent, rollout_id: int | None = None
) -> RolloutState:
    """The state after ``event``, or :class:`TransitionRefusedError` (one line)."""
    current = RolloutState(state)
    name = "rollout" if rollout_id is None else f"rollout {rollout_id}"
    return step(TRANSITIONS, RolloutState, current, event, lambda needs: TransitionRefusedError(
        f"cannot {event.value} {name}: it is {current.value} (needs {needs})"))  # fmt: skip
