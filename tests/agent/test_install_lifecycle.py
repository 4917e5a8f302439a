"""The install lifecycle: one table (agent/install_lifecycle.py) that the reconciler runs
through and docs/ARCHITECTURE.md shows. Every kind of illegal step is refused with one line
(the real reconciler refusing one: tests/agent/test_reconcile.py), and the page matches the
code."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from edgefleet.agent.install_lifecycle import (
    ENDS,
    IN_PROGRESS,
    TRANSITIONS,
    IllegalPhaseError,
    InstallEvent,
    render_table,
    transition,
)
from edgefleet.controller.rollouts import lifecycle as rollout
from edgefleet.shared.errors import EdgefleetError
from edgefleet.shared.protocol import Phase
from edgefleet.shared.transition_table import markdown

P, E = Phase, InstallEvent
DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
# The order an install walks (SHADOW optional); a step's event leads one further.
WALK = [P.DOWNLOADING, P.VERIFIED, P.PREPARING, P.WARMING, P.SHADOW, P.SWAPPED, P.HEALTH_CHECK]
STEP = {
    E.VERIFY: P.VERIFIED,
    E.PREPARE: P.PREPARING,
    E.WARM: P.WARMING,
    E.SHADOW: P.SHADOW,
    E.SWAP: P.SWAPPED,
    E.CHECK: P.HEALTH_CHECK,
    E.COMMIT: P.COMMITTED,
}
ALL = list(itertools.product(Phase, InstallEvent))


def _refused(pairs: list[tuple[Phase, InstallEvent]]) -> None:
    assert pairs, "the class names no pair: the test would prove nothing"
    for phase, event in pairs:
        with pytest.raises(IllegalPhaseError) as e:
            transition(phase, event)
        assert "\n" not in e.value.reason and phase.value in e.value.reason, e.value.reason


def test_an_install_walks_the_table_to_each_end() -> None:
    warm = [E.START, E.VERIFY, E.PREPARE, E.WARM]
    for walk, end in (
        ([*warm, E.SWAP, E.CHECK, E.COMMIT], P.COMMITTED),
        ([*warm, E.SHADOW, E.SHADOW_DONE, E.SWAP, E.CHECK, E.REVERT], P.REVERTED),
        ([*warm, E.FAIL], P.FAILED),
        ([*warm, E.SHADOW, E.FAIL], P.FAILED),
        ([E.START, E.INTERRUPT, E.INTERRUPT, E.SETTLE], P.COMMITTED),
        ([E.START, E.INTERRUPT, E.START, E.FAIL], P.FAILED),
    ):
        phase = P.COMMITTED
        for event in walk:
            phase = transition(phase, event)
        assert phase is end, walk
    assert transition(P.IDLE, E.START) is P.DOWNLOADING
    assert transition(P.DOWNLOADING, E.SETTLE_IDLE) is P.IDLE


def _skips(src: Phase, ev: InstallEvent) -> bool:
    """A step that leads past the next phase (the shadow phase may be left out)."""
    if src not in WALK or ev not in STEP or (src, ev) == (P.WARMING, E.SWAP):
        return False
    return [*WALK, P.COMMITTED].index(STEP[ev]) > WALK.index(src) + 1


def _goes_back(src: Phase, ev: InstallEvent) -> bool:
    if src not in WALK or ev not in STEP or STEP[ev] not in WALK:
        return False
    return WALK.index(STEP[ev]) <= WALK.index(src)


def test_skipping_a_step_is_refused() -> None:
    """DOWNLOADING straight to SWAPPED, VERIFIED to COMMITTED: each phase is passed."""
    _refused([(src, ev) for src, ev in ALL if _skips(src, ev)])


def test_going_back_a_step_is_refused() -> None:
    _refused([(src, ev) for src, ev in ALL if _goes_back(src, ev)])


def test_an_end_phase_is_left_only_by_starting_over_or_a_new_name() -> None:
    rest = (*ENDS, P.IDLE)
    _refused([(p, e) for p, e in ALL if p in rest and e not in (E.START, E.RENAME)])
    assert (P.IDLE, E.RENAME) not in TRANSITIONS  # no model: nothing to rename


def test_starting_over_in_the_middle_of_an_install_is_refused() -> None:
    _refused([(p, E.START) for p in IN_PROGRESS if p is not P.DOWNLOADING])
    _refused([(p, E.RENAME) for p in IN_PROGRESS if p is not P.DOWNLOADING])


def test_a_transient_fault_is_a_download_fault_only() -> None:
    _refused([(p, E.INTERRUPT) for p in Phase if p is not P.DOWNLOADING])
    _refused([(p, ev) for p in Phase for ev in (E.SETTLE, E.SETTLE_IDLE) if p is not P.DOWNLOADING])


def test_after_the_swap_an_install_reverts_and_before_it_fails() -> None:
    """Once the new model served, FAILED would hide that it was taken back; before the
    swap there is nothing to revert."""
    _refused([(P.SWAPPED, E.FAIL), (P.HEALTH_CHECK, E.FAIL), (P.SWAPPED, E.COMMIT)])
    _refused([(p, E.REVERT) for p in Phase if p is not P.HEALTH_CHECK])


def test_every_pair_outside_the_table_is_refused_naming_what_it_needs() -> None:
    outside = [(p, e) for p, e in ALL if (p, e) not in TRANSITIONS]
    _refused(outside)
    with pytest.raises(IllegalPhaseError, match=r"cannot commit in phase FAILED \(needs HEALTH"):
        transition("FAILED", E.COMMIT)
    assert issubclass(IllegalPhaseError, EdgefleetError)


def _block(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert found, f"docs/ARCHITECTURE.md has no {name} block"
    return found.group(1)


def test_the_architecture_page_shows_the_tables_the_code_runs() -> None:
    want = render_table()
    assert _block("install-lifecycle") == want, f"paste into docs/ARCHITECTURE.md:\n{want}"
    want = markdown(rollout.TRANSITIONS, rollout.RolloutState, rollout.RolloutEvent)
    assert _block("rollout-lifecycle") == want, f"paste into docs/ARCHITECTURE.md:\n{want}"
    assert len(want.splitlines()) == 2 + len({(e, t) for (_, e), t in rollout.TRANSITIONS.items()})
