"""A model version's registry stage: one enum of stages, one table of transitions.

A push makes a ``candidate``. Rollouts move versions on their own (``model_stages.py``
runs these events from ``rollouts/service.py`` and ``rollouts/actions.py``); an admin moves
them by hand (``edgefleet model stage NAME:VERSION STAGE``). A move the table does not
list cannot be made, only added here.

::

    candidate, staging, archived --rollout_start--> staging   (production stays production)
    staging --rollout_end--> candidate        (its last active rollout ended short of 100 %)
    any --reached_all--> production           (a rollout of it reached 100 %)
    production --replaced--> archived         (another version became production)
    production --rolled_back--> archived      (the rollout that made it production rolled back)
    archived --restored--> production         (... the version that rollout had replaced)
    by hand: set_candidate, set_staging, set_production, set_archived (see TRANSITIONS)

A model has at most one production version: whatever makes one production archives the
one before (``replaced``). Pure: no database, clock or I/O.
"""

from __future__ import annotations

from enum import Enum

from edgefleet.shared.errors import ConfigError, ConflictError
from edgefleet.shared.transition_table import step


class ModelStage(str, Enum):
    CANDIDATE = "candidate"  # pushed, not (or no longer) rolled out
    STAGING = "staging"  # in an active rollout
    PRODUCTION = "production"  # what the fleet runs: at most one per model
    ARCHIVED = "archived"  # replaced, or retired by hand


class StageEvent(str, Enum):
    # The rollouts' ...
    ROLLOUT_START = "rollout_start"
    ROLLOUT_END = "rollout_end"
    REACHED_ALL = "reached_all"
    REPLACED = "replaced"
    ROLLED_BACK = "rolled_back"
    RESTORED = "restored"
    # ... and an admin's (PUT /v1/models/{name}/versions/{version}/stage).
    SET_CANDIDATE = "set_candidate"
    SET_STAGING = "set_staging"
    SET_PRODUCTION = "set_production"
    SET_ARCHIVED = "set_archived"


S, E = ModelStage, StageEvent

TRANSITIONS: dict[tuple[ModelStage, StageEvent], ModelStage] = {
    (S.CANDIDATE, E.ROLLOUT_START): S.STAGING,
    (S.STAGING, E.ROLLOUT_START): S.STAGING,
    (S.ARCHIVED, E.ROLLOUT_START): S.STAGING,
    (S.PRODUCTION, E.ROLLOUT_START): S.PRODUCTION,
    (S.STAGING, E.ROLLOUT_END): S.CANDIDATE,
    (S.CANDIDATE, E.REACHED_ALL): S.PRODUCTION,
    (S.STAGING, E.REACHED_ALL): S.PRODUCTION,
    (S.ARCHIVED, E.REACHED_ALL): S.PRODUCTION,
    (S.PRODUCTION, E.REACHED_ALL): S.PRODUCTION,
    (S.PRODUCTION, E.REPLACED): S.ARCHIVED,
    (S.PRODUCTION, E.ROLLED_BACK): S.ARCHIVED,
    (S.ARCHIVED, E.RESTORED): S.PRODUCTION,
    (S.STAGING, E.SET_CANDIDATE): S.CANDIDATE,
    (S.ARCHIVED, E.SET_CANDIDATE): S.CANDIDATE,
    (S.CANDIDATE, E.SET_STAGING): S.STAGING,
    (S.ARCHIVED, E.SET_STAGING): S.STAGING,
    (S.CANDIDATE, E.SET_PRODUCTION): S.PRODUCTION,
    (S.STAGING, E.SET_PRODUCTION): S.PRODUCTION,
    (S.ARCHIVED, E.SET_PRODUCTION): S.PRODUCTION,
    (S.CANDIDATE, E.SET_ARCHIVED): S.ARCHIVED,
    (S.STAGING, E.SET_ARCHIVED): S.ARCHIVED,
    (S.PRODUCTION, E.SET_ARCHIVED): S.ARCHIVED,
}

BY_HAND = {
    S.CANDIDATE: E.SET_CANDIDATE,
    S.STAGING: E.SET_STAGING,
    S.PRODUCTION: E.SET_PRODUCTION,
    S.ARCHIVED: E.SET_ARCHIVED,
}


class StageRefusedError(ConflictError):
    """The event does not apply to the version's stage (HTTP 409)."""


def applies(stage: ModelStage | str, event: StageEvent) -> bool:
    return (ModelStage(stage), event) in TRANSITIONS


def parse_stage(text: str) -> ModelStage:
    """A stage by name, or a one-line error naming the four."""
    try:
        return ModelStage(text.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in ModelStage)
        raise ConfigError(f"unknown stage {text!r}: expected one of {names}") from None


def transition(stage: ModelStage | str, event: StageEvent, label: str = "version") -> ModelStage:
    """The stage after ``event``, or :class:`StageRefusedError` (one line)."""
    current = ModelStage(stage)
    return step(TRANSITIONS, ModelStage, current, event, lambda needs: StageRefusedError(
        f"cannot {event.value} {label}: it is {current.value} (needs {needs})"))  # fmt: skip
