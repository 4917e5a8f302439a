"""Pins and channels: the pure decision, then the whole path over real HTTP and the CLI
(devices report through the real ingest; signing is the real director repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from edgefleet.controller import pins as pinlib
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts.context import Deps
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import DeviceState, Phase
from edgefleet.shared.topics import Channel, device_topic
from sqlmodel import Session

V1, V2 = pinlib.Target("shapes", "v1"), pinlib.Target("shapes", "v2")


# --- pure --------------------------------------------------------------------------------


def test_most_specific_then_newest_pin_wins() -> None:
    pins = [
        pinlib.PinRule(1, {"site": "a"}, V1),
        pinlib.PinRule(2, {"site": "a", "cam": "door"}, V2),
        pinlib.PinRule(3, {"site": "a"}, None, "stable"),
    ]
    assert pinlib.pin_for("d1", {"site": "a"}, pins) == pins[2]
    assert pinlib.pin_for("d1", {"site": "a", "cam": "door"}, pins) == pins[1]
    assert pinlib.pin_for("d1", {"site": "b"}, pins) is None
    by_id = [pinlib.PinRule(4, {"device_id": "d9"}, V2)]
    assert pinlib.pin_for("d9", {}, by_id) == by_id[0] and pinlib.pin_for("d8", {}, by_id) is None


def test_desired_pin_channel_rollout_or_nothing() -> None:
    pins = [pinlib.PinRule(1, {"site": "a"}, None, "stable"), pinlib.PinRule(2, {"site": "c"}, V1)]
    rollouts = [pinlib.Claim(7, V2, frozenset({"d2", "d3"}))]
    channels: dict[str, pinlib.Target | None] = {"stable": V1}
    d = pinlib.desired("d1", {"site": "a"}, pins, channels, rollouts)
    assert (d.target, d.pinned, d.source) == (V1, True, "pin 1 (channel stable)")
    assert pinlib.desired("d3", {"site": "c"}, pins, channels, rollouts).target == V1  # pin wins
    assert pinlib.desired("d2", {"site": "b"}, pins, channels, rollouts).source == "rollout 7"
    assert pinlib.desired("d4", {"site": "b"}, pins, channels, rollouts).target is None
    held = pinlib.desired("d1", {"site": "a"}, pins, {"stable": None}, rollouts)
    assert (held.target, held.pinned) == (None, True)  # channel has no version: stays put


def test_a_rollout_skips_only_devices_pinned_elsewhere() -> None:
    pins = [pinlib.PinRule(1, {"site": "a"}, V1), pinlib.PinRule(2, {"site": "b"}, None, "stable")]
    channels: dict[str, pinlib.Target | None] = {"stable": V2}
    assert pinlib.excluded("d1", {"site": "a"}, pins, channels, V2)
    assert not pinlib.excluded("d1", {"site": "a"}, pins, channels, V1)
    assert not pinlib.excluded("d2", {"site": "b"}, pins, channels, V2)
    assert not pinlib.excluded("d3", {"site": "z"}, pins, channels, V2)
    assert pinlib.excluded("d2", {"site": "b"}, pins, {"stable": None}, V2)


# --- over HTTP and the CLI ---------------------------------------------------------------


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": url}
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)  # fmt: skip


def _report(ingest: Ingest, device_id: str, version: str, **labels: str) -> None:
    state = DeviceState(device_id=device_id, model="shapes", version=version,
                        phase=Phase.COMMITTED, labels=labels)  # fmt: skip
    ingest.handle(device_topic(device_id, Channel.STATE), state.to_bytes())


def _devices(client: httpx.Client) -> dict[str, dict[str, str]]:
    return {d["device_id"]: d for d in client.get("/v1/devices").json()["data"]}


def test_pins_and_channels_over_http(
    services: Services,
    serve: Callable[[Services], object],
    onnx_model: Path,
    tmp_path: Path,
    make_onnx: Callable[[Path, int], Path],
) -> None:
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40))):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    ingest = Ingest(services.engine, services.signing, services.link, services.stats)
    for device_id, site in (("cam-a1", "a"), ("cam-a2", "a"), ("cam-b1", "b")):
        _report(ingest, device_id, "v1", site=site)
    director = services.signing.repos.director  # type: ignore[attr-defined]

    with serve(services) as client:  # type: ignore[attr-defined]
        url = str(client.base_url)
        assert _cli(url, "channel", "set", "stable", "shapes:v1").returncode == 0
        made = _cli(url, "pin", "create", "--selector", "site=a", "--channel", "stable")
        assert made.returncode == 0, made.stderr
        assert "holds cam-a1, cam-a2" in made.stdout
        bad = _cli(url, "pin", "create", "--selector", "site=b", "shapes:v9")
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.startswith("edgefleet: error: ") and "v9" in bad.stderr

        # The fleet view: desired beside reported, in the table and the JSON.
        table = _cli(url, "device", "list").stdout.splitlines()
        assert table[0].split()[2:7] == ["MODEL", "VERSION", "DESIRED", "BY", "RELEASE"]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows["cam-a1"][2:7] == ["shapes", "v1", "shapes:v1", "pin/1:stable", "1"]
        assert rows["cam-b1"][4:6] == ["-", "-"]
        listed = json.loads(_cli(url, "device", "list", "--json").stdout)
        a1 = next(d for d in listed if d["device_id"] == "cam-a1")
        assert (a1["desired_model"], a1["desired_version"]) == ("shapes", "v1")
        assert (a1["desired_by"], a1["release"], a1["waiting"]) == ("pin/1:stable", 1, None)
        assert [t.version for t in director.assigned("cam-a1")] == ["v1"]

        # A rollout of v2 to everyone skips the devices pinned to stable (= v1).
        r = client.post("/v1/rollouts", json={"model": "shapes", "version": "v2"})
        assert r.status_code == 200, r.text
        assert [d["device_id"] for d in r.json()["devices"]] == ["cam-b1"]

        # Moving the channel moves its devices, through the signed director path.
        moved = client.put("/v1/channels/stable", json={"model": "shapes", "version": "v2"},
                           headers={"X-Edgefleet-Actor": "carol"})  # fmt: skip
        assert moved.json()["resolved"] == "shapes:v2"
        assert _devices(client)["cam-a2"]["desired_version"] == "v2"
        assert [t.version for t in director.assigned("cam-a2")] == ["v2"]

        latest = client.put("/v1/channels/latest", json={"model": "shapes"}).json()
        assert (latest["version"], latest["resolved"]) == (None, "shapes:v2")  # the newest
        channels = _cli(url, "channel", "list").stdout
        assert "latest" in channels and "(newest)" in channels

        pins = client.get("/v1/pins").json()["data"]
        assert pins[0]["devices"] == ["cam-a1", "cam-a2"] and pins[0]["channel"] == "stable"
        refused = client.delete("/v1/channels/stable")
        assert refused.status_code == 400 and "pin(s) 1" in refused.json()["detail"]
        assert _cli(url, "pin", "delete", "1").returncode == 0
        assert client.get("/v1/pins").json()["count"] == 0
        # Its devices keep what it set, and BY still names it (not an older rollout).
        assert _devices(client)["cam-a2"]["desired_by"] == "pin/1:stable (deleted)"
        assert _devices(client)["cam-b1"]["desired_by"] == f"rollout/{r.json()['id']}"
        actions = [a["action"] for a in client.get("/v1/audit").json()["data"]]
        assert {"pin_create", "pin_delete", "channel_set", "pin"} <= set(actions)


def test_a_device_that_first_appears_gets_its_pin(
    services: Services, client: httpx.Client, onnx_model: Path
) -> None:
    with Session(services.engine) as s, onnx_model.open("rb") as f:
        push_version(s, services.store, services.signing, "shapes", f, version="v1")
    r = client.post("/v1/pins", json={"selector": {"device_id": "late"},
                                      "model": "shapes", "version": "v1"})  # fmt: skip
    assert r.status_code == 200 and r.json()["devices"] == []
    ingest = Ingest(services.engine, services.signing, services.link, services.stats)
    _report(ingest, "late", "v0")
    deps = Deps(services.signing, services.link, services.store.path_for)
    Scheduler(services.engine, deps).round()
    assert _devices(client)["late"]["desired_version"] == "v1"


@pytest.mark.parametrize("body", [{"selector": {}}, {"model": "shapes", "channel": "x"}])
def test_a_pin_names_one_target(client: httpx.Client, body: dict[str, object]) -> None:
    r = client.post("/v1/pins", json=body)
    assert r.status_code == 400 and "either" in r.json()["detail"]


def test_pin_ids_are_never_reused_after_a_delete(tmp_path: Path) -> None:
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.models.pins import Pin
    from sqlmodel import Session

    engine = make_engine(f"sqlite:///{tmp_path / 'pins.db'}")
    with Session(engine) as s:
        first = Pin(selector={"site": "a"}, model="shapes", version="v1")
        s.add(first)
        s.commit()
        first_id = first.id
        s.delete(first)
        s.commit()
        second = Pin(selector={"site": "a"}, model="shapes", version="v2")
        s.add(second)
        s.commit()
        assert second.id != first_id
    engine.dispose()


def test_a_channel_moved_back_to_a_lower_release_is_re_signed_once(
    services: Services,
    client: httpx.Client,
    onnx_model: Path,
    tmp_path: Path,
    make_onnx: Callable[[Path, int], Path],
) -> None:
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40))):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    ingest = Ingest(services.engine, services.signing, services.link, services.stats)
    _report(ingest, "cam-a", "v2", site="a")  # committed release 2
    director = services.signing.repos.director  # type: ignore[attr-defined]
    assert client.put("/v1/channels/stable", json={"model": "shapes", "version": "v1"}).is_success
    assert client.post("/v1/pins", json={"selector": {"site": "a"}, "channel": "stable"}).is_success

    desired = _devices(client)["cam-a"]["desired_version"]
    assert desired.startswith("v1-rb"), desired  # release 1 < 2: the agent would refuse v1
    listed = director.assigned("cam-a")
    assert [t.version for t in listed] == [desired]
    versions = {v["version"]: v for v in client.get("/v1/models/shapes/versions").json()["data"]}
    assert versions[desired]["release"] > versions["v2"]["release"]
    assert versions[desired]["sha256"] == versions["v1"]["sha256"]  # the same bytes

    # The scheduler's rounds see the copy as the channel's version: nothing signed again.
    sched = Scheduler(services.engine, Deps(services.signing, services.link,
                                            services.store.path_for))  # fmt: skip
    assert sched.round() == 0 and sched.leading
    sched.round()
    assert _devices(client)["cam-a"]["desired_version"] == desired
    assert len(client.get("/v1/models/shapes/versions").json()["data"]) == 3

    # A device that never ran a higher release gets v1 itself.
    _report(ingest, "cam-b", "v1", site="a")
    sched.round()
    assert _devices(client)["cam-b"]["desired_version"] == "v1"


def test_why_a_device_is_not_on_its_desired_version() -> None:
    from edgefleet.controller.fleet_view import Facts, waiting

    base = Facts(online=True, runs_desired=False, has_desired=True, phase="COMMITTED", error=None)
    assert waiting(Facts(**{**base.__dict__, "runs_desired": True})) is None
    assert waiting(Facts(**{**base.__dict__, "has_desired": False})) is None
    assert waiting(Facts(**{**base.__dict__, "online": False})) == "offline"
    assert waiting(Facts(**{**base.__dict__, "refused": "bad sig"})) == "refused: bad sig"
    older = Facts(**{**base.__dict__, "desired_release": 1, "installed_release": 2})
    assert waiting(older) == "older release: 1 < installed 2"
    failed = Facts(**{**base.__dict__, "failed_desired": True, "error": "health"})
    assert waiting(failed) == "failed: health"
    assert waiting(Facts(**{**base.__dict__, "phase": "DOWNLOADING"})) == "installing (DOWNLOADING)"
    assert waiting(base) == "not started yet"


def test_device_list_shows_desired_beside_reported_and_why_they_differ(
    services: Services,
    serve: Callable[[Services], object],
    onnx_model: Path,
    tmp_path: Path,
    make_onnx: Callable[[Path, int], Path],
) -> None:
    from datetime import datetime, timezone

    from edgefleet.shared.protocol import RejectedEvent, Status

    services.clock = lambda: datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)  # type: ignore[method-assign]
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40))):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    ingest = Ingest(services.engine, services.signing, services.link, services.stats)
    for device_id, group in (("cam-off", "pin"), ("cam-ref", "pin"), ("cam-win", "win")):
        _report(ingest, device_id, "v1", group=group)
        online = device_id != "cam-off"
        ingest.handle(device_topic(device_id, Channel.STATUS),
                      Status(device_id=device_id, online=online).to_bytes())  # fmt: skip
    with serve(services) as client:  # type: ignore[attr-defined]
        pin = {"selector": {"group": "pin"}, "model": "shapes", "version": "v2"}
        assert client.post("/v1/pins", json=pin).status_code == 200
        refusal = RejectedEvent(device_id="cam-ref", what="models/shapes/v2", reason="bad hash")
        ingest.handle(device_topic("cam-ref", Channel.EVENTS), refusal.to_bytes())
        window = {"cron": "* 13 * * *", "timezone": "UTC", "selector": {}}
        body = {"model": "shapes", "version": "v2", "selector": {"group": "win"},
                "maintenance_windows": [window]}  # fmt: skip
        assert client.post("/v1/rollouts", json=body).status_code == 200

        shown = {d["device_id"]: d for d in client.get("/v1/devices").json()["data"]}
        assert shown["cam-off"]["waiting"] == "offline"
        assert shown["cam-off"]["desired_by"] == "pin/1"
        assert shown["cam-ref"]["waiting"] == "refused: models/shapes/v2: bad hash"
        assert shown["cam-win"]["waiting"] == "window closed (opens 13:00 UTC)"
        assert shown["cam-win"]["desired_version"] is None  # nothing assigned yet
        assert shown["cam-win"]["release"] == 1 and shown["cam-win"]["version"] == "v1"
        one = client.get("/v1/devices/cam-ref").json()
        assert one["waiting"] == shown["cam-ref"]["waiting"]

        table = _cli(str(client.base_url), "device", "list").stdout
        assert "window closed (opens 13:00 UTC)" in table and "offline" in table
        assert "refused: models/shapes/v2: bad" in table, table
