"""A rollout's lifecycle through the real API, scheduler, signing and ingest: one table of
transitions, reads that never write, older versions re-signed for devices that installed
newer ones, refusals shown with their reason, silent devices making a stage Inconclusive,
and re-signed copies keeping their source's model card."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.cards import CardStore
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts import service
from edgefleet.controller.rollouts.lifecycle import (
    OPERATOR_EVENTS,
    TERMINAL,
    TRANSITIONS,
    RolloutEvent,
    RolloutState,
    TransitionRefusedError,
    transition,
)
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.shared.card import ModelCard
from edgefleet.shared.errors import TrustError
from edgefleet.shared.histogram import CONFIDENCE_EDGES, bin_counts
from edgefleet.shared.protocol import Phase, PhaseEvent, RejectedEvent
from edgefleet.shared.topics import Channel, device_topic
from rich.console import Console
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from edgefleet.cli.rollout_watch import render
from edgefleet.cli.rollouts import print_rollout
from tests.controller.test_scheduler import T0, Clock, Fleet, _create, _deps

Setup = tuple[Services, Clock, Fleet]
S, E = RolloutState, RolloutEvent


@pytest.fixture
def setup(
    services: Services, onnx_model: Path, tmp_path: Path, make_onnx: Callable[[Path, int], Path]
) -> Setup:
    """shapes v1 (release 1) and v2 (release 2); ten devices on v1 over sites s0 and s1."""
    clock = Clock()
    services.clock = clock  # the REST handlers start rollouts on the test's clock
    fleet = Fleet(services, clock)
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40))):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    for i in range(10):
        fleet.add(f"cam-{i}", "v1", site=f"s{i % 2}")
    return services, clock, fleet


# --- the table, pure ---------------------------------------------------------------------


def test_every_pair_outside_the_table_is_refused_in_one_line() -> None:
    for state in RolloutState:
        for ev in RolloutEvent:
            if (state, ev) in TRANSITIONS:
                assert transition(state, ev, 7) is TRANSITIONS[state, ev]
                continue
            with pytest.raises(TransitionRefusedError) as e:
                transition(state.value, ev, 7)
            assert "\n" not in e.value.reason
            assert e.value.reason.startswith(f"cannot {ev.value} rollout 7: it is {state.value}")


def test_terminal_states_only_leave_by_an_operators_rollback() -> None:
    for (state, ev), after in TRANSITIONS.items():
        if state in TERMINAL:
            assert (ev, after) == (E.ROLLBACK, S.ROLLED_BACK) and state is not S.ROLLED_BACK
    # Every scheduler decision that changes a state is an event of the table.
    assert set(service._EVENTS.values()) <= {ev for _, ev in TRANSITIONS}


# --- the table, through the API ----------------------------------------------------------


def _act(client: httpx.Client, rid: int, action: str) -> httpx.Response:
    return client.post(f"/v1/rollouts/{rid}/{action}", headers={"X-Edgefleet-Actor": "bob"})


def _into(state: RolloutState, client: httpx.Client, sched: Scheduler, fleet: Fleet) -> int:
    """A fresh rollout of v2 to one device of its own, brought to ``state`` the real way."""
    device = f"walk-{len(fleet.labels)}"
    fleet.add(device, "v1", slot=device)
    one_stage = state is S.SUCCEEDED
    spec: dict[str, Any] = {"selector": {"slot": device},
                            "stages": "100%" if one_stage else "1,100%",
                            "soak_s": 0 if one_stage else 3600}  # fmt: skip
    if state is S.NOTHING_TO_DO:  # its one device is pinned elsewhere
        pin = {"selector": {"device_id": device}, "model": "shapes", "version": "v1"}
        assert client.post("/v1/pins", json=pin).status_code == 200
    rid: int = _create(client, **spec)["id"]
    if state is S.SUCCEEDED:
        fleet.follow_director()
        sched.round()
    elif state is S.FAILED:
        _reverted(fleet, device, "v2")
        sched.round()
    elif state not in (S.RUNNING, S.NOTHING_TO_DO):
        event_for = {S.PAUSED: "pause", S.ABORTED: "abort", S.ROLLED_BACK: "rollback"}
        assert _act(client, rid, event_for[state]).status_code == 200
    assert client.get(f"/v1/rollouts/{rid}").json()["state"] == state.value
    return rid


def test_the_table_walks_through_the_api(setup: Setup, serve: Callable) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        for state in RolloutState:
            for ev in OPERATOR_EVENTS:
                rid = _into(state, client, sched, fleet)
                r = _act(client, rid, ev.value)
                after = TRANSITIONS.get((state, ev))
                if after is None:
                    assert r.status_code == 409, (state, ev, r.text)
                    detail = r.json()["detail"]
                    assert detail.startswith(
                        f"cannot {ev.value} rollout {rid}: it is {state.value}"
                    )
                    assert "\n" not in detail
                    assert client.get(f"/v1/rollouts/{rid}").json()["state"] == state.value
                else:
                    assert r.status_code == 200, (state, ev, r.text)
                    assert r.json()["state"] == after.value, (state, ev)


# --- reads never write -------------------------------------------------------------------


@contextmanager
def writes(engine: Engine) -> Iterator[list[str]]:
    """Every INSERT / UPDATE / DELETE and every COMMIT on ``engine`` while inside."""
    seen: list[str] = []

    def statement(_c: object, _cur: object, sql: str, *_a: object) -> None:
        if sql.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            seen.append(sql)

    def commit(_conn: object) -> None:
        seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


def test_a_succeeded_rollout_stays_succeeded_and_a_get_writes_nothing(
    setup: Setup, serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        rid = _create(client)["id"]  # one stage, no gates, no soak: the skeleton's rollout
        fleet.follow_director()
        sched.round()
        assert client.get(f"/v1/rollouts/{rid}").json()["state"] == "succeeded"
        fleet.report("cam-0", "v1")  # moved on to another version
        fleet.report("cam-1", "v2", Phase.REVERTED)
        for _ in range(3):
            sched.round()
            clock.tick(10)
        with writes(services.engine) as seen:
            body = client.get(f"/v1/rollouts/{rid}").json()
            listed = client.get("/v1/rollouts").json()["data"][0]
        assert seen == []
        assert (body["state"], listed["state"]) == ("succeeded", "succeeded")
        assert body["done"] == 8  # progress is shown as the devices report it now


# --- an older version is re-signed for devices that installed a newer release -------------


def test_an_older_version_is_resigned_where_a_newer_release_was_installed(
    setup: Setup, serve: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        first = _create(client, selector={"site": "s0"})  # v2 (release 2) to site s0
        fleet.follow_director()
        sched.round()
        assert client.get(f"/v1/rollouts/{first['id']}").json()["state"] == "succeeded"
        # Back to v1 (release 1) everywhere: s0 installed release 2 and would refuse it.
        back = _create(client, version="v1")
        versions = {
            v["version"]: v for v in client.get("/v1/models/shapes/versions").json()["data"]
        }
        assert versions["v1-rb3"]["release"] == 3
        assert versions["v1-rb3"]["sha256"] == versions["v1"]["sha256"]
        desired = {
            d["device_id"]: d["desired_version"] for d in client.get("/v1/devices").json()["data"]
        }
        assert {desired[f"cam-{i}"] for i in range(0, 10, 2)} == {"v1-rb3"}  # one copy for all
        assert {desired[f"cam-{i}"] for i in range(1, 10, 2)} == {"v1"}
        # The agent's own updater, with release 2 installed, takes what it is given now.
        url = str(client.base_url).rstrip("/")
        up = ModelUpdater(UpdaterConfig(url, "cam-0", tmp_path / "agent"))
        [target] = up.refresh({"shapes": 2}, None)
        assert (target.version, target.release) == ("v1-rb3", 3)
        assert target.sha256 == versions["v1"]["sha256"]
        # Without the re-signing it would have refused, as the issue saw.
        up1 = ModelUpdater(UpdaterConfig(url, "cam-1", tmp_path / "agent1"))
        with pytest.raises(TrustError, match="lower than installed release"):
            up1.refresh({"shapes": 2}, None)
        fleet.follow_director()
        sched.round()
        body = client.get(f"/v1/rollouts/{back['id']}").json()
        assert (body["state"], body["done"], body["failed"]) == ("succeeded", 10, 0), body
        running = {d["device_id"]: d["version"] for d in body["devices"]}
        assert running["cam-0"] == "v1-rb3" and running["cam-1"] == "v1"


# --- refusals and silent devices ---------------------------------------------------------


def _reverted(fleet: Fleet, device_id: str, version: str) -> None:
    """The agent's revert of ``version``: its event, then its state back on v1."""
    ev = PhaseEvent(device_id=device_id, phase=Phase.REVERTED, model="shapes", version=version,
                    reason="health check failed")  # fmt: skip
    fleet.ingest.handle(device_topic(device_id, Channel.EVENTS), ev.to_bytes())
    fleet.report(device_id, "v1", Phase.REVERTED)


def test_a_failed_phase_left_from_an_older_attempt_does_not_fail_a_new_rollout(
    setup: Setup, serve: Callable
) -> None:  # type: ignore[type-arg]
    """Issue 16: rollouts "showed failed right after create because a device still carried
    a FAILED phase from an older version"; now only a failure event after the assignment
    counts, and the state is a record, so it would have stayed failed."""
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    for i in range(10):
        fleet.report(f"cam-{i}", "v1", Phase.FAILED)  # v1 runs; some older attempt failed
    with serve(services) as client:
        r = _create(client)
        assert (r["state"], r["failed"]) == ("running", 0), r
        sched.round()
        assert client.get(f"/v1/rollouts/{r['id']}").json()["state"] == "running"
        _reverted(fleet, "cam-3", "v2")  # a real failure of this version still counts
        for i in (0, 1, 2, 4, 5, 6, 7, 8, 9):
            fleet.report(f"cam-{i}", "v2")
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
    assert (body["state"], body["done"], body["failed"]) == ("failed", 9, 1), body


def _refuse(fleet: Fleet, device_id: str, reason: str, at: Any = None) -> None:
    ev = RejectedEvent(device_id=device_id, what="director/image metadata", reason=reason,
                       **({"at": at} if at else {}))  # fmt: skip
    fleet.ingest.handle(device_topic(device_id, Channel.EVENTS), ev.to_bytes())


def test_a_refusal_is_shown_with_its_reason_and_stops_the_stage(
    setup: Setup, serve: Callable, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="2,100%", soak_s=60)
        a, b = (d["device_id"] for d in r["devices"])
        _refuse(fleet, b, "an older refusal", at=T0 - timedelta(hours=1))  # before: not shown
        sched.round()
        assert client.get(f"/v1/rollouts/{r['id']}").json()["state"] == "running"
        _refuse(
            fleet, a, "release 2 is lower than installed release 5", at=T0 + timedelta(seconds=5)
        )
        clock.tick(10)
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
    assert body["state"] == "failed" and body["failed"] == 1, body
    shown = {d["device_id"]: d["refused"] for d in body["devices"]}
    why = "director/image metadata: release 2 is lower than installed release 5"
    assert shown == {a: why, b: None}
    print_rollout(body)
    out = capsys.readouterr().out
    assert f"{a} refused its assignment: {why}" in out
    table = [line.split() for line in out.splitlines() if line.startswith((a, b))]
    result = {cells[0]: cells[-1] for cells in table if "assignment:" not in cells}
    assert result == {a: "refused", b: "pending"}
    console = Console(record=True, width=200)
    console.print(render(body))  # `rollout status --watch`
    assert f"{a} refused its assignment: {why}" in console.export_text()


def test_devices_that_neither_commit_nor_refuse_make_the_stage_inconclusive(
    setup: Setup, serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,100%", install_timeout_s="1m")
        canary = r["devices"][0]["device_id"]
        clock.tick(59)
        sched.round()
        assert client.get(f"/v1/rollouts/{r['id']}").json()["state"] == "running"
        clock.tick(1)
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "paused", body
        assert body["reason"] == (f"stage 1 (1) inconclusive: 1 device(s) neither committed "
                                  f"nor refused within 60 s: {canary}")  # fmt: skip
        assert body["stages"][0]["outcome"] == "inconclusive"
        # The reason's "stage 1" is the JSON's 1-based number of the stage and of its device.
        assert (body["stage_number"], body["stages"][0]["number"]) == (1, 1), body
        assert [d["stage_number"] for d in body["devices"]] == [1]
        # A person resumes: the device gets a fresh minute, and it commits this time.
        assert _act(client, r["id"], "resume").json()["state"] == "running"
        clock.tick(30)
        sched.round()
        assert client.get(f"/v1/rollouts/{r['id']}").json()["state"] == "running"
        fleet.follow_director()
        for _ in range(3):
            sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["stage"] == 1 and body["stages"][0]["outcome"] == "successful", body
        assert body["stage_number"] == 2 and [s["number"] for s in body["stages"]] == [1, 2]


# --- a re-signed copy keeps its source's model card --------------------------------------


def test_rolled_back_devices_keep_the_card_of_the_version_they_run(
    setup: Setup, serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    cards = CardStore(services.settings.data_dir / "cards")
    counts = bin_counts([0.8] * 100, CONFIDENCE_EDGES)
    cards.put(ModelCard(model="shapes", version="v1", images=50, conf=0.25,
                        confidence_counts=counts))  # fmt: skip
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        rid = _create(client, stages="1,100%", soak_s=3600)["id"]
        fleet.follow_director()
        assert _act(client, rid, "rollback").json()["rollback_version"] == "shapes:v1-rb3"
        fleet.follow_director()
        sched.round()
        # The agent's drift baseline comes from this answer (agent/baseline.py).
        r = client.get("/v1/models/shapes/versions/v1-rb3/card")
        assert r.status_code == 200, r.text
        assert r.json()["confidence_counts"] == counts
        assert client.get("/v1/models/shapes/versions/v2/card").status_code == 404
    # ... and the controller's drift report and alerts look it up the same way.
    card = cards.find("shapes", "v1-rb3")
    assert card is not None and card.version == "v1"
    assert cards.find("shapes", "v2-rb3") is None  # a copy of a version without a card
