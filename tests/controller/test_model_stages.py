"""Registry stages (candidate, staging, production, archived): the table, rollouts that
move versions through it, an admin's moves, ``model list`` and a channel that follows
production. Real database, real TUF signing, the real ingest (``Fleet`` from the scheduler
tests) and real HTTP; the CLI runs as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.model_stages import production_version
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts.context import Deps
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.controller.stage_lifecycle import (
    TRANSITIONS,
    ModelStage,
    StageEvent,
    StageRefusedError,
    transition,
)
from edgefleet.shared.errors import ConflictError
from edgefleet.shared.transition_table import markdown
from sqlmodel import Session

from tests.controller.test_scheduler import Clock, Fleet

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"
S, E = ModelStage, StageEvent


# --- the table ---------------------------------------------------------------------------


def test_a_move_outside_the_table_is_refused_naming_what_it_needs() -> None:
    outside = [(s, e) for s in ModelStage for e in StageEvent if (s, e) not in TRANSITIONS]
    for stage, event in outside:
        with pytest.raises(StageRefusedError):
            transition(stage, event)
    with pytest.raises(ConflictError, match=r"cannot set_candidate shapes:v1: it is production "
                                            r"\(needs staging, archived\)"):  # fmt: skip
        transition("production", E.SET_CANDIDATE, "shapes:v1")
    assert transition("staging", E.REACHED_ALL) is S.PRODUCTION
    assert transition("production", E.REPLACED) is S.ARCHIVED


def test_the_architecture_page_shows_the_stage_table() -> None:
    found = re.search(r"<!-- stage-lifecycle:begin -->\n(.*?)\n<!-- stage-lifecycle:end -->",
                      DOC.read_text(encoding="utf-8"), re.S)  # fmt: skip
    want = markdown(TRANSITIONS, ModelStage, StageEvent)
    assert found is not None and found.group(1) == want, f"paste into {DOC.name}:\n{want}"


# --- rollouts, channels, the CLI ---------------------------------------------------------


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": url}
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)  # fmt: skip


def _stages(client: httpx.Client) -> dict[str, str]:
    rows = client.get("/v1/models/shapes/versions").json()["data"]
    return {v["version"]: v["stage"] for v in rows}


def _finish(client: httpx.Client, sched: Scheduler, fleet: Fleet, rid: int) -> dict:  # type: ignore[type-arg]
    """Rounds until the rollout settles: devices install what their director lists."""
    for _ in range(20):
        sched.round()
        fleet.follow_director()
        body = client.get(f"/v1/rollouts/{rid}").json()
        if body["state"] != "running":
            return body  # type: ignore[no-any-return]
    raise AssertionError(f"rollout {rid} still running: {body['reason']}")


def _desired(client: httpx.Client, device_id: str) -> str:
    d = client.get(f"/v1/devices/{device_id}").json()
    return f"{d['desired_model']}:{d['desired_version']}"


@pytest.fixture
def fleet_of_four(
    services: Services, onnx_model: Path, tmp_path: Path, make_onnx: Callable[[Path, int], Path]
) -> tuple[Services, Fleet, Scheduler]:
    """shapes v1, v2, v3 pushed; cam-0..2 (site a) and cam-p (site p) run v1."""
    clock = Clock()
    services.clock = clock
    fleet = Fleet(services, clock)
    with Session(services.engine) as s:
        for version, path in (("v1", onnx_model), ("v2", make_onnx(tmp_path / "b.onnx", 40)),
                              ("v3", make_onnx(tmp_path / "c.onnx", 48))):  # fmt: skip
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    for device_id, site in (("cam-0", "a"), ("cam-1", "a"), ("cam-2", "a"), ("cam-p", "p")):
        fleet.add(device_id, "v1", site=site)
    deps = Deps(services.signing, services.link, services.store.path_for)
    return services, fleet, Scheduler(services.engine, deps, clock=clock, holder="t")


def test_rollouts_move_versions_to_production_and_a_channel_follows(
    fleet_of_four: tuple[Services, Fleet, Scheduler], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, fleet, sched = fleet_of_four
    with serve(services) as client:
        url = str(client.base_url)
        assert set(_stages(client).values()) == {"candidate"}  # a push is a candidate
        made = _cli(url, "channel", "set", "prod", "shapes", "--stage", "production")
        assert made.returncode == 0 and "no version in production" in made.stdout, made
        pin = {"selector": {"site": "p"}, "channel": "prod"}
        assert client.post("/v1/pins", json=pin).is_success
        assert _desired(client, "cam-p") == "None:None"  # nothing in production: held

        # A rollout of v1 to site a at 100 %: v1 is production, the channel's devices follow.
        first = client.post("/v1/rollouts", json={"model": "shapes", "version": "v1",
                                                  "selector": {"site": "a"}}).json()  # fmt: skip
        assert _finish(client, sched, fleet, first["id"])["state"] == "succeeded"
        sched.round()
        assert _stages(client)["v1"] == "production"
        assert _desired(client, "cam-p") == "shapes:v1"

        # v2 to everyone, in two stages: staging while it runs; the pinned device is skipped.
        second = client.post("/v1/rollouts", json={"model": "shapes", "version": "v2",
                                                   "stages": "1,100%"}).json()  # fmt: skip
        assert [s["device_id"] for s in second["skipped"]] == ["cam-p"]
        assert _stages(client)["v2"] == "staging"
        assert _finish(client, sched, fleet, second["id"])["state"] == "succeeded"
        assert _stages(client) == {"v1": "archived", "v2": "production", "v3": "candidate"}
        with Session(services.engine) as s:
            row = production_version(s, "shapes")
            assert row is not None and row.version == "v2"
            assert production_version(s, "other") is None
        sched.round()  # the channel now stands for v2: its device moves, signed as usual
        assert _desired(client, "cam-p") == "shapes:v2"
        assert [t.version for t in services.signing.repos.director.assigned("cam-p")] == ["v2"]  # type: ignore[attr-defined]

        table = _cli(url, "model", "list").stdout.splitlines()
        assert table[0].split()[:4] == ["MODEL", "VERSION", "STAGE", "RELEASE"]
        assert {r.split()[1]: r.split()[2] for r in table[1:]} == {
            "v1": "archived", "v2": "production", "v3": "candidate"}  # fmt: skip
        listed = json.loads(_cli(url, "model", "list", "--json").stdout)[0]
        assert listed["production"] == "v2"
        assert [v["stage"] for v in listed["versions"]] == ["archived", "production", "candidate"]
        assert "(production)" in _cli(url, "channel", "list").stdout
        assert "stage production" in _cli(url, "model", "show", "shapes:v2").stdout.splitlines()[0]

        # Another rollout of the production version leaves it there, also when rolled back.
        again = client.post("/v1/rollouts", json={"model": "shapes", "version": "v2",
                                                  "selector": {"site": "a"}}).json()  # fmt: skip
        assert _finish(client, sched, fleet, again["id"])["state"] == "succeeded"
        assert client.post(f"/v1/rollouts/{again['id']}/rollback").is_success
        assert _stages(client)["v2"] == "production"

        # Rolling back the rollout that made v2 production brings v1 back, and the channel.
        fleet.follow_director()
        back = client.post(f"/v1/rollouts/{second['id']}/rollback").json()
        assert back["state"] == "rolled_back"
        stages = _stages(client)
        assert (stages["v1"], stages["v2"]) == ("production", "archived")
        assert stages[back["rollback_version"].split(":")[1]] == "production"  # the copy is v1
        sched.round()
        assert _desired(client, "cam-p").startswith("shapes:v1-rb")  # release above v2's

        audit = client.get("/v1/audit", params={"target": "shapes:v2"}).json()["data"]
        moves = [(a["detail"]["from"], a["detail"]["to"]) for a in audit if a["action"] == "stage"]
        assert ("staging", "production") in moves and ("production", "archived") in moves


def test_an_admin_sets_a_stage_by_hand_and_illegal_moves_are_refused(
    fleet_of_four: tuple[Services, Fleet, Scheduler], serve: Callable
) -> None:  # type: ignore[type-arg]
    services, _, _ = fleet_of_four
    with serve(services) as client:
        url = str(client.base_url)
        done = _cli(url, "model", "stage", "shapes:v3", "production")
        assert done.returncode == 0 and done.stdout.strip() == "shapes:v3 is production", done
        assert _cli(url, "model", "stage", "shapes:v2", "production").returncode == 0
        assert _stages(client) == {"v1": "candidate", "v2": "production", "v3": "archived"}

        bad = _cli(url, "model", "stage", "shapes:v2", "staging")
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.strip() == ("edgefleet: error: cannot set_staging shapes:v2: it is "
                                      "production (needs candidate, archived)")  # fmt: skip
        again = client.put("/v1/models/shapes/versions/v3/stage", json={"stage": "archived"})
        assert again.status_code == 409
        unknown = client.put("/v1/models/shapes/versions/v3/stage", json={"stage": "prod"})
        assert unknown.status_code == 400 and "candidate, staging" in unknown.json()["detail"]
        audit = client.get("/v1/audit", params={"target": "shapes:v3"}).json()["data"]
        moves = [a for a in audit if a["action"] == "stage"]
        assert len(moves) == 2 and all(a["detail"]["by"] == f"admin:{a['actor']}" for a in moves)


def test_only_an_admin_moves_a_stage(secured: Services, serve: Callable, onnx_model: Path) -> None:  # type: ignore[type-arg]
    from tests.controller.conftest import bearer

    with Session(secured.engine) as s, onnx_model.open("rb") as f:
        push_version(s, secured.store, secured.signing, "shapes", f, version="v1")
    url = "/v1/models/shapes/versions/v1/stage"
    with serve(secured) as client:
        refused = client.put(url, json={"stage": "production"},
                             headers=bearer(secured, "operator"))  # fmt: skip
        assert refused.status_code == 403 and "needs admin" in refused.json()["detail"]
        done = client.put(url, json={"stage": "production"}, headers=bearer(secured, "admin"))
        assert done.status_code == 200 and done.json()["stage"] == "production"
