"""The scheduler over a real database, real TUF signing and the real ingest: stages,
gates, the lease, a restart, operator actions and the audit log.

Devices speak through ``Ingest.handle`` with the real wire payloads (the broker itself is
exercised in tests/e2e/test_canary.py); the clock is passed in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.cards import CardStore
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.models.devices import Device
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts.context import Deps
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import NoLink, Services
from edgefleet.shared.card import ModelCard
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.protocol import DeviceState, Phase, PhaseEvent, Status, TelemetryWindow
from edgefleet.shared.topics import Channel, device_topic
from sqlmodel import Session, select

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Fleet:
    """Devices that report through the controller's real ingest."""

    def __init__(self, services: Services, clock: Clock) -> None:
        self.services, self.clock = services, clock
        self.ingest = Ingest(services.engine, services.signing, services.link,
                             services.stats, clock=clock)  # fmt: skip
        self.running: dict[str, str | None] = {}
        self.labels: dict[str, dict[str, str]] = {}

    def add(self, device_id: str, version: str | None, **labels: str) -> None:
        self.labels[device_id] = labels
        self.report(device_id, version)
        self.ingest.handle(device_topic(device_id, Channel.STATUS),
                           Status(device_id=device_id, online=True).to_bytes())  # fmt: skip

    def report(self, device_id: str, version: str | None, phase: Phase = Phase.COMMITTED) -> None:
        self.running[device_id] = version
        state = DeviceState(
            device_id=device_id,
            model="shapes" if version else None,
            version=version,
            phase=phase,
            labels=self.labels[device_id],
        )
        self.ingest.handle(device_topic(device_id, Channel.STATE), state.to_bytes())

    def follow_director(self) -> None:
        """Every device installs what its director metadata now lists (as agents do)."""
        with Session(self.services.engine) as s:
            for d in s.exec(select(Device)).all():
                if d.desired_version and d.desired_version != self.running.get(d.device_id):
                    self.report(d.device_id, d.desired_version)

    def telemetry(self, conf: dict[str, float], seconds: float = 10) -> None:
        """One window per device; confidence by the version each runs."""
        start = self.clock.now
        for device_id, version in self.running.items():
            c = conf.get(version or "", 0.8)
            values = [min(1.0, c + 0.01 * (i % 7)) for i in range(40)]
            w = TelemetryWindow(
                device_id=device_id, model="shapes", version=version, window_start=start,
                window_end=start + timedelta(seconds=seconds), frames=30,
                latency_edges_ms=list(LATENCY_EDGES_MS),
                latency_counts=bin_counts([8.0] * 30, LATENCY_EDGES_MS),
                confidence_edges=list(CONFIDENCE_EDGES),
                confidence_counts=bin_counts(values, CONFIDENCE_EDGES),
                detections=40, low_confidence=sum(v < 0.5 for v in values),
            )  # fmt: skip
            self.ingest.handle(device_topic(device_id, Channel.TELEMETRY), w.to_bytes())
        self.clock.tick(seconds)


@pytest.fixture
def setup(
    services: Services,
    serve: Callable[[Services], object],
    onnx_model: Path,
    tmp_path: Path,
    make_onnx: Callable[[Path, int], Path],
) -> tuple[Services, Clock, Fleet]:
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


def _deps(services: Services) -> Deps:
    return Deps(services.signing, services.link, services.store.path_for)


def _create(client: httpx.Client, actor: str = "alice", **spec: object) -> dict:  # type: ignore[type-arg]
    body = {"model": "shapes", "version": "v2", **spec}
    r = client.post("/v1/rollouts", json=body, headers={"X-Edgefleet-Actor": actor})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


GATES = [  # two 10 s windows per arm: short stages for a test
    {"metric": "mean_confidence_ratio", "threshold": 0.9, "min_samples": 40, "min_windows": 2},
    {"metric": "confidence_rank", "threshold": 0.35, "min_samples": 40},
]


def _drive(sched: Scheduler, fleet: Fleet, conf: dict[str, float], rounds: int) -> None:
    for _ in range(rounds):
        sched.round()
        fleet.follow_director()
        fleet.telemetry(conf)


def test_good_version_walks_every_stage(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,20%,50%,100%", soak_s=15, gates=GATES, stratify_by="site")
        assert r["total"] == 1 and r["stages"][0]["devices"] == 1
        seen = []
        for _ in range(30):
            _drive(sched, fleet, {"v1": 0.8, "v2": 0.8}, 1)
            body = client.get(f"/v1/rollouts/{r['id']}").json()
            seen.append(body["total"])
            if body["state"] != "running":
                break
        assert body["state"] == "succeeded", (body["reason"], body["stages"])
        assert sorted(set(seen)) == [1, 2, 5, 10]
        assert [s["outcome"] for s in body["stages"]] == ["successful"] * 4
        gates = body["stages"][0]["gates"]
        assert {g["metric"]: g["verdict"] for g in gates} == {
            "mean_confidence_ratio": "PASS", "confidence_rank": "PASS"}  # fmt: skip
        assert all(g["samples"] >= 40 for g in gates)
        # 20 % of 10 is two devices: one per site once stratified.
        second = [d for d in body["devices"] if d["stage"] <= 1]
        assert {fleet.labels[d["device_id"]]["site"] for d in second} == {"s0", "s1"}


def test_a_less_confident_canary_is_rolled_back_through_a_new_signed_release(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=30, gates=GATES, on_failure="rollback")
        _drive(sched, fleet, {"v1": 0.8, "v2": 0.45}, 6)
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "rolled_back", body
        assert body["reason"].startswith("stage 1 (1) failed: mean_confidence_ratio")
        assert body["rollback_version"] == "shapes:v1-rb3"
        canary = body["devices"][0]["device_id"]
        versions = {
            v["version"]: v for v in client.get("/v1/models/shapes/versions").json()["data"]
        }
        assert versions["v1-rb3"]["release"] == 3
        assert versions["v1-rb3"]["sha256"] == versions["v1"]["sha256"]  # the old bytes
        dev = client.get(f"/v1/devices/{canary}").json()
        assert dev["desired_version"] == "v1-rb3"
        # Only the canary moved; the control group was never touched.
        others = [d for d in client.get("/v1/devices").json()["data"] if d["device_id"] != canary]
        assert {d["desired_version"] for d in others} == {None}
        audit = client.get("/v1/audit").json()["data"]
        assert [(a["actor"], a["action"]) for a in reversed(audit)] == [
            ("alice", "create"), ("alice", "stage"), ("scheduler", "fail"),
            ("scheduler", "stage"), ("scheduler", "rollback")]  # fmt: skip
        # The rejected canary's registry stage: staging while it ran, a candidate again.
        assert [a["detail"]["to"] for a in reversed(audit) if a["action"] == "stage"] == [
            "staging", "candidate"]  # fmt: skip


def test_missing_telemetry_pauses_as_inconclusive(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=10, gates=GATES)
        for _ in range(4):
            sched.round()
            fleet.follow_director()
            clock.tick(10)
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "paused"
        assert "inconclusive" in body["reason"] and "mean_confidence_ratio" in body["reason"]
        assert {g["verdict"] for g in body["stages"][0]["gates"]} == {"NODATA"}


def _interrupted(fleet: Fleet, device_id: str, version: str, *, transient: bool) -> None:
    """What an agent sends when a download of ``version`` breaks off (transient: the agent
    retries it) or fails for good."""
    phase = Phase.DOWNLOADING if transient else Phase.FAILED
    reason = "download interrupted: connection reset"
    event = PhaseEvent(device_id=device_id, phase=phase, model="shapes", version=version,
                       reason=reason, transient=transient)  # fmt: skip
    fleet.ingest.handle(device_topic(device_id, Channel.EVENTS), event.to_bytes())
    state = DeviceState(device_id=device_id, model="shapes", version=fleet.running[device_id],
                        phase=phase, error=event.reason, transient=transient,
                        labels=fleet.labels[device_id])  # fmt: skip
    fleet.ingest.handle(device_topic(device_id, Channel.STATE), state.to_bytes())


@pytest.mark.parametrize("transient", [True, False])
def test_a_transient_download_fault_is_no_install_failure(
    setup: tuple[Services, Clock, Fleet], serve: Callable, transient: bool
) -> None:  # type: ignore[type-arg]
    """The controller died while its canaries downloaded: they report transient faults and
    retry; the stage waits for them and succeeds. The same fault reported as final fails."""
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    gates = [{"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1}]
    with serve(services) as client:
        r = _create(client, stages="2,100%", soak_s=5, gates=gates, install_timeout_s=600)
        sched.round()
        with Session(services.engine) as s:
            canaries = [d.device_id for d in s.exec(select(Device)).all() if d.desired_version]
        assert len(canaries) == 2
        for device_id in canaries:
            _interrupted(fleet, device_id, "v2", transient=transient)
        for _ in range(3):  # rounds while the devices retry with backoff
            sched.round()
            clock.tick(5)
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        if not transient:
            assert body["state"] == "failed", body["reason"]
            assert "install_success_rate" in body["reason"]
            return
        assert body["state"] == "running" and body["stage"] == 0, body["reason"]
        _drive(sched, fleet, {}, 8)  # the retries go through
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "succeeded", body["reason"]
        assert set(fleet.running.values()) == {"v2"}


def test_lease_one_scheduler_at_a_time_and_restart_continues(
    setup: tuple[Services, Clock, Fleet], serve: Callable, make_services: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    a = Scheduler(services.engine, _deps(services), clock=clock, holder="a", lease_ttl_s=30)
    with serve(services) as client:
        r = _create(client, stages="1,50%,100%", soak_s=10)
        assert a.round() == 1
        # A second controller process on the same database (its own engine and signing).
        other = make_services()
        b = Scheduler(other.engine, _deps(other), clock=clock, holder="b", lease_ttl_s=30)
        assert b.round() == 0 and not b.leading
        _drive(a, fleet, {}, 4)
        stage = client.get(f"/v1/rollouts/{r['id']}").json()["stage"]
        assert stage >= 1
        a.leading = True
        a.stop()  # releases the lease ("a" never started its thread: stop only releases)
        # "b" picks up from the database: same stage, then onwards to the end.
        assert b.round() == 1
        assert client.get(f"/v1/rollouts/{r['id']}").json()["stage"] >= stage
        _drive(b, fleet, {}, 8)
        assert client.get(f"/v1/rollouts/{r['id']}").json()["state"] == "succeeded"


def test_expired_lease_is_taken_over(setup: tuple[Services, Clock, Fleet]) -> None:
    services, clock, _ = setup
    a = Scheduler(services.engine, _deps(services), clock=clock, holder="a", lease_ttl_s=5)
    b = Scheduler(services.engine, _deps(services), clock=clock, holder="b", lease_ttl_s=5)
    a.round()
    assert a.leading and (b.round(), b.leading) == (0, False)
    clock.tick(6)  # "a" died without releasing
    b.round()
    assert b.leading
    a.round()
    assert not a.leading


def test_operator_actions_are_checked_and_audited(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        rid = _create(client, stages="1,50%,100%", soak_s=3600)["id"]

        def act(action: str, actor: str = "bob") -> httpx.Response:
            return client.post(f"/v1/rollouts/{rid}/{action}",
                               headers={"X-Edgefleet-Actor": actor})  # fmt: skip

        _drive(sched, fleet, {}, 2)
        assert act("pause").json()["state"] == "paused"
        r = act("pause")
        assert r.status_code == 409 and "it is paused" in r.json()["detail"]
        _drive(sched, fleet, {}, 2)  # paused: nothing moves
        assert client.get(f"/v1/rollouts/{rid}").json()["total"] == 1
        assert act("resume").json()["state"] == "running"
        body = act("promote").json()  # skip the hour of soak
        assert body["stage"] == 1
        sched.round()  # stage 2 assigned; its devices have not switched yet
        assert client.get(f"/v1/rollouts/{rid}").json()["total"] == 5
        body = act("abort").json()
        assert body["state"] == "aborted"
        fleet.follow_director()
        _drive(sched, fleet, {}, 2)
        # Devices keep what they run: the pending ones were held on v1.
        assert sorted(fleet.running.values()).count("v2") == 1
        held = client.get("/v1/audit", params={"target": f"rollout/{rid}"}).json()["data"][0]
        assert held["action"] == "abort" and len(held["detail"]["held"]) == 4
        by = {d["device_id"]: d["desired_by"] for d in client.get("/v1/devices").json()["data"]}
        assert {by[d] for d in held["detail"]["held"]} == {f"rollout/{rid}:abort"}
        body = act("rollback", "carol").json()
        assert body["state"] == "rolled_back"
        fleet.follow_director()
        assert set(fleet.running.values()) == {"v1", "v1-rb3"}
        by = {d["device_id"]: d["desired_by"] for d in client.get("/v1/devices").json()["data"]}
        assert {by[d] for d, v in fleet.running.items() if v == "v1-rb3"} == {
            f"rollout/{rid}:rollback"
        }
        assert act("resume").status_code == 409
        audit = client.get("/v1/audit", params={"target": f"rollout/{rid}"}).json()["data"]
        actions = [(a["actor"], a["action"]) for a in reversed(audit)]
        assert actions[0] == ("alice", "create")
        assert ("bob", "pause") in actions and ("bob", "promote") in actions
        assert ("bob", "abort") in actions and ("carol", "rollback") in actions


def test_maintenance_window_holds_devices_until_it_opens(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    window = {"cron": "* 13 * * *", "timezone": "UTC", "selector": {"site": "s0"}}
    with serve(services) as client:
        rid = _create(client, maintenance_windows=[window])["id"]  # 12:00 now
        _drive(sched, fleet, {}, 2)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert {fleet.labels[d["device_id"]]["site"] for d in body["devices"]} == {"s1"}
        assert body["state"] == "running"
        assert body["waiting_for_window"] == "2026-11-23T13:00:00Z"
        clock.now = T0.replace(hour=13)
        _drive(sched, fleet, {}, 3)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert body["state"] == "succeeded" and body["waiting_for_window"] is None


def test_only_devices_the_current_stage_wants_wait_for_their_window(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    """Stage 1 takes cam-7 (site s1, window open): the s0 devices a closed window covers
    are not waiting for it yet, only once stage 2 wants them."""
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    window = {"cron": "* 13 * * *", "selector": {"site": "s0"}}

    def waiting() -> tuple[str | None, str | None]:
        body = client.get(f"/v1/rollouts/{rid}").json()
        cam0 = next(
            d for d in client.get("/v1/devices").json()["data"] if d["device_id"] == "cam-0"
        )
        return body["waiting_for_window"], cam0["waiting"]

    with serve(services) as client:
        rid = _create(client, stages="1,100%", soak_s=3600, maintenance_windows=[window])["id"]
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert [d["device_id"] for d in body["devices"]] == ["cam-7"]
        assert waiting() == (None, None)
        client.post(f"/v1/rollouts/{rid}/promote")
        _drive(sched, fleet, {}, 2)
        assert client.get(f"/v1/rollouts/{rid}").json()["total"] == 5  # the s1 devices
        assert waiting() == ("2026-11-23T13:00:00Z", "window closed (opens 13:00 UTC)")


@pytest.mark.parametrize("stages", ["100%", "1,100%"])
def test_one_stage_or_many_wait_for_a_closed_window_and_say_when_it_opens(
    setup: tuple[Services, Clock, Fleet], serve: Callable, stages: str
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    window = {"cron": "30 13 * * *", "timezone": "UTC", "selector": {}}
    with serve(services) as client:
        rid = _create(client, stages=stages, maintenance_windows=[window])["id"]
        _drive(sched, fleet, {}, 3)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert (body["state"], body["total"]) == ("running", 0)
        assert body["waiting_for_window"] == "2026-11-23T13:30:00Z"
        shown = _cli(client, "rollout", "status", str(rid))
        assert "waiting for window (opens 11-23 13:30 UTC)" in shown, shown
        assert "signed 0/" not in shown, shown  # the window holds them, not the signing
        # Stages: the JSON's stage_number / number are what the text calls "stage N".
        assert body["stage_number"] == 1 and body["stages"][0]["number"] == 1
        assert "> stage 1 (" in shown
        clock.now = T0.replace(hour=13, minute=30)
        _drive(sched, fleet, {}, 6)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert (body["state"], body["done"], body["total"]) == ("succeeded", 10, 10)


def test_an_operator_changes_or_clears_the_window_and_held_devices_install_now(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        rid = _create(client, maintenance_windows=[{"cron": "* 2 * * *"}])["id"]  # 12:00 now
        _drive(sched, fleet, {}, 2)
        assert client.get(f"/v1/rollouts/{rid}").json()["total"] == 0
        row = next(d for d in _cli(client, "device", "list").splitlines() if d.startswith("cam-0"))
        assert "window closed (opens 11-24 02:00 UTC)" in row, row  # tomorrow
        # A later window: still held, and rollout status says when it opens now.
        shown = _cli(client, "rollout", "window", str(rid), "* 20 * * *")
        assert "window '* 20 * * *' UTC, now running" in shown, shown
        assert "waiting for window (opens " in shown and "20:00 UTC)" in shown, shown
        _drive(sched, fleet, {}, 2)
        assert client.get(f"/v1/rollouts/{rid}").json()["total"] == 0
        shown = _cli(client, "rollout", "window", str(rid), "--clear")
        assert "window none, now running" in shown and "waiting" not in shown, shown
        _drive(sched, fleet, {}, 4)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert (body["state"], body["done"], body["waiting_for_window"]) == ("succeeded", 10, None)
        assert body["spec"]["maintenance_windows"] == []
        audit = client.get("/v1/audit", params={"target": f"rollout/{rid}"}).json()["data"]
        changes = [a["detail"] for a in audit if a["action"] == "window"]
        assert [c["after"] for c in reversed(changes)] == [
            [{"cron": "* 20 * * *", "timezone": "UTC", "selector": {}}],
            [],
        ]
        windows = {"maintenance_windows": []}
        done = client.put(f"/v1/rollouts/{rid}/windows", json=windows)
        assert done.status_code == 409 and "it is succeeded" in done.json()["detail"]
        bad = client.put(f"/v1/rollouts/{rid}/windows",
                         json={"maintenance_windows": [{"cron": "x"}]})  # fmt: skip
        assert bad.status_code == 400 and "cron" in bad.json()["detail"]


def test_pinned_devices_are_skipped_with_the_pin_and_nothing_left_is_its_own_outcome(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        pin = {"selector": {"site": "s0"}, "model": "shapes", "version": "v1"}
        assert client.post("/v1/pins", json=pin).status_code == 200
        partly = _create(client, selector={})
        assert partly["state"] == "running"
        assert [d["device_id"] for d in partly["skipped"]] == [f"cam-{i}" for i in (0, 2, 4, 6, 8)]
        same = _create(client, version="v1", selector={})  # the pin's own version: no skip
        assert same["skipped"] == []
        held = client.post("/v1/pins", json={**pin, "selector": {"site": "s1"}})
        assert held.status_code == 200
        none = _create(client, selector={"site": "s1"})
        assert none["state"] == "nothing_to_do", none
        assert "nothing to do" in none["reason"] and none["total"] == 0
        assert sorted(d["device_id"] for d in none["skipped"]) == [
            f"cam-{i}" for i in (1, 3, 5, 7, 9)
        ]
        assert all(d["reason"].startswith("pin ") and "shapes:v1" in d["reason"]
                   for d in none["skipped"])  # fmt: skip
        shown = _cli(client, "rollout", "status", str(none["id"]))
        assert "state nothing_to_do (nothing to do" in shown and "cam-1 skipped: pin" in shown
        _drive(sched, fleet, {}, 2)  # terminal: the scheduler never ticks it again
        assert client.get(f"/v1/rollouts/{none['id']}").json()["state"] == "nothing_to_do"


def _cli(client: httpx.Client, *args: str) -> str:
    env = {**os.environ, "EDGEFLEET_URL": str(client.base_url)}
    done = subprocess.run([sys.executable, "-m", "edgefleet", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_devices_that_come_to_match_join(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        rid = _create(client, selector={"site": "s0"}, stages="1,100%", soak_s=5)["id"]
        _drive(sched, fleet, {}, 2)
        fleet.add("cam-late", "v1", site="s0")
        _drive(sched, fleet, {}, 4)
        body = client.get(f"/v1/rollouts/{rid}").json()
        assert "cam-late" in [d["device_id"] for d in body["devices"]]
        assert body["total"] == 6


def test_bad_specs_and_nolink(services: Services, client: httpx.Client) -> None:
    r = client.post("/v1/rollouts", json={"model": "shapes", "version": "v1", "stages": "x"})
    assert r.status_code == 400 and "stage" in r.json()["detail"]
    assert client.post("/v1/rollouts/99/pause").status_code == 404
    assert client.post("/v1/rollouts/1/explode").status_code in (400, 404, 422)
    assert isinstance(services.link, NoLink)


def test_drift_gates_compare_canaries_with_the_model_card_baseline(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    """Canary and control agree (0.8), but v2's card says it sees at 0.95 on validation
    images: PSI against the card is past its threshold and shown as a warning, but the
    card is a second reference, not the trigger: canary against control decides."""
    services, clock, fleet = setup
    cards = CardStore(services.settings.data_dir / "cards")
    baseline = bin_counts([0.95 + 0.005 * (i % 7) for i in range(200)], CONFIDENCE_EDGES)
    cards.put(ModelCard(model="shapes", version="v2", images=50, conf=0.25,
                        confidence_counts=baseline))  # fmt: skip
    deps = Deps(services.signing, services.link, services.store.path_for, cards)
    sched = Scheduler(services.engine, deps, clock=clock, holder="a")
    psi_gate = {"metric": "psi", "threshold": 0.5, "min_samples": 40}
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=15, gates=[psi_gate])
        for _ in range(10):
            _drive(sched, fleet, {"v1": 0.8, "v2": 0.8}, 1)
            body = client.get(f"/v1/rollouts/{r['id']}").json()
            if body["state"] != "running":
                break
    assert body["state"] == "succeeded", body
    gate = body["stages"][0]["gates"][0]
    assert gate["verdict"] == "WARN" and gate["detail"].startswith("vs model card baseline")


def test_a_worse_card_stops_the_rollout_before_any_device_is_touched(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    """v2's own card shows mAP50 falling from 0.584 (v1, what the fleet runs) to 0.451
    on the same 50 labelled images: the first tick fails the stage and assigns nobody."""
    services, _clock, _fleet = setup
    cards = CardStore(services.settings.data_dir / "cards")
    counts = bin_counts([0.8] * 100, CONFIDENCE_EDGES)
    for version, m in (("v1", 0.584), ("v2", 0.451)):
        cards.put(ModelCard(model="shapes", version=version, images=50, conf=0.25,
                            confidence_counts=counts, labelled_images=50, map50=m))  # fmt: skip
    with serve(services) as client:
        r = _create(client, stages="1,100%", gates="ml", on_failure="pause")
        assert r["state"] == "failed" and r["total"] == 0, r
        assert "card_map50_drop" in r["reason"] and "0.451 vs 0.584" in r["reason"]
        assert r["stages"][0]["outcome"] == "failed"
    with Session(services.engine) as s:
        assert all(d.desired_version != "v2" for d in s.exec(select(Device)).all())


def test_a_large_stage_is_signed_in_batches_off_the_request(
    setup: tuple[Services, Clock, Fleet], serve: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[type-arg]
    from edgefleet.controller.rollouts import service

    services, clock, fleet = setup
    monkeypatch.setattr(service, "FIRST_BATCH", 2)
    monkeypatch.setattr(service, "SIGN_BATCH", 3)
    monkeypatch.setattr(service, "TICK_BUDGET_S", 0.0)  # one batch per tick
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    service.WAKE.clear()
    with serve(services) as client:
        r = _create(client, stages="100%")
        assert (r["total"], r["stages"][0]["devices"]) == (2, 10)  # the rest in the background
        assert service.WAKE.is_set()  # the scheduler is woken, not left to its interval
        totals = []
        for _ in range(5):
            sched.round()
            totals.append(client.get(f"/v1/rollouts/{r['id']}").json()["total"])
        assert totals[:3] == [5, 8, 10]  # progress shows batch by batch
        fleet.follow_director()
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "succeeded" and body["done"] == 10
    with Session(services.engine) as s:
        versions = {d.device_id: d.director_version for d in s.exec(select(Device)).all()}
    assert all(v == 2 for v in versions.values()), versions  # one signed version per device


def test_shadow_in_the_spec_is_signed_for_the_devices_of_its_stages(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    director = services.signing.repos.director  # type: ignore[attr-defined]
    with serve(services) as client:
        bad = {"model": "shapes", "version": "v2", "stages": "1,100%", "shadow": {"stages": [3]}}
        r = client.post("/v1/rollouts", json=bad)
        assert r.status_code in (400, 422) and "numbered 1 to 2" in r.text
        shadow = {"frames": 7, "min_match_rate": 0.9, "stages": [1]}
        rid = _create(client, stages="1,100%", shadow=shadow)["id"]
        _drive(sched, fleet, {}, 6)
        body = client.get(f"/v1/rollouts/{rid}").json()
        by_stage = {d["device_id"]: d["stage_number"] for d in body["devices"]}
        assert sorted(by_stage.values()).count(1) == 1 and len(by_stage) == 10
        for device_id, number in by_stage.items():
            (signed,) = director.assigned(device_id)
            if number == 1:
                assert signed.shadow == {"frames": 7, "timeout_s": 60, "min_match_permille": 900}
            else:
                assert signed.shadow is None


def test_a_canary_device_that_falls_back_fails_the_stage(
    setup: tuple[Services, Clock, Fleet], serve: Callable
) -> None:  # type: ignore[type-arg]
    """The canary committed v2, then fell back to v1 (v2 would not load at a restart); its
    window says so and is attributed to v1, yet it counts against the v2 canary at once,
    long before the soak ends."""
    services, clock, fleet = setup
    sched = Scheduler(services.engine, _deps(services), clock=clock, holder="a")
    with serve(services) as client:
        r = _create(client, stages="1,100%", soak_s=600, gates=GATES)
        _drive(sched, fleet, {"v1": 0.8, "v2": 0.8}, 3)
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "running", body["reason"]
        canary = body["devices"][0]["device_id"]
        fleet.report(canary, "v1")  # serving the previous model again
        start = clock.now
        w = TelemetryWindow(
            device_id=canary, model="shapes", version="v1", window_start=start,
            window_end=start + timedelta(seconds=10), frames=30,
            latency_edges_ms=list(LATENCY_EDGES_MS),
            latency_counts=bin_counts([8.0] * 30, LATENCY_EDGES_MS),
            confidence_edges=list(CONFIDENCE_EDGES),
            confidence_counts=bin_counts([0.8] * 40, CONFIDENCE_EDGES),
            detections=40, fallbacks=1,
        )  # fmt: skip
        fleet.ingest.handle(device_topic(canary, Channel.TELEMETRY), w.to_bytes())
        clock.tick(10)
        sched.round()
        body = client.get(f"/v1/rollouts/{r['id']}").json()
        assert body["state"] == "failed", body
        assert body["reason"].startswith("stage 1 (1) failed: errors"), body["reason"]
