"""Drift alerts that mean something (issue 10, item 5): noisy telemetry windows of simulated
scenes go through the real ingest into SQLite and are judged by the real watcher.

Each window is 40 frames; a frame's detections are Poisson (2.29 a frame in the normal
scene, as the issue's noisy site had before its change, 0.22 after), their confidences
drawn from the card's histogram (BASE) or a darker one (DARK). A site's windows are summed
per minute; the clock is the test's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from edgefleet.controller.alerts.config import AlertConfig, load_alert_config
from edgefleet.controller.alerts.notify import WebhookNotifier
from edgefleet.controller.alerts.rules import Look, Rule, enough, measure, rate_change, scope_of
from edgefleet.controller.alerts.watch import AlertWatcher
from edgefleet.controller.cards import CardStore
from edgefleet.controller.models.alerts import AlertRow
from edgefleet.controller.services import Services
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.histogram import CONFIDENCE_EDGES
from sqlmodel import Session, select

from tests.controller.conftest import serving
from tests.controller.dataloop import BASE, DARK, Feeder, version_with_card

FRAMES = 40
NORMAL, FALLEN = 2.29, 0.22  # detections per frame
SITES = {"cam-n1": "north", "cam-n2": "north", "cam-s1": "south", "cam-s2": "south"}


class Scene:
    """Windows of simulated frames for each device, through the real ingest."""

    def __init__(self, services: Services, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.feed = Feeder(services)

    def window(self, device: str, at: datetime, rate: float, profile: list[int],
               version: str = "v1") -> None:  # fmt: skip
        per_frame = self.rng.poisson(rate, FRAMES)
        counts = self.rng.multinomial(int(per_frame.sum()), np.array(profile) / sum(profile))
        self.feed.window(device, counts.tolist(), at=at, version=version, frames=FRAMES,
                         empty_frames=int((per_frame == 0).sum()))  # fmt: skip


def watcher_for(services: Services, rules: tuple[Rule, ...], now: list[datetime]) -> AlertWatcher:
    cards = CardStore(services.settings.data_dir / "cards")
    w = AlertWatcher(services.engine, cards, AlertConfig(rules=rules), WebhookNotifier([]),
                     clock=lambda: now[0])  # fmt: skip
    w.resume()
    return w


def alerts(services: Services) -> list[AlertRow]:
    with Session(services.engine) as s:
        return list(s.exec(select(AlertRow).order_by(AlertRow.id)).all())


def start() -> datetime:
    """A minute boundary an hour ago: buckets and windows line up."""
    return datetime.fromtimestamp((int(datetime.now(timezone.utc).timestamp()) // 60 - 60) * 60,
                                  timezone.utc)  # fmt: skip


def run_minutes(
    services: Services, watcher: AlertWatcher, now: list[datetime], t0: datetime,
    minutes: range, scene: Callable[[str, datetime], None],
) -> dict[int, set[tuple[str, str, str]]]:  # fmt: skip
    """Each device sends one window a minute; returns the (scope, metric, state) of every
    alert after each minute's look."""
    seen = {}
    for k in minutes:
        at = t0 + timedelta(seconds=60 * k + 10)
        for device in SITES:
            scene(device, at)
        now[0] = at + timedelta(seconds=5)
        watcher.poll()
        seen[k] = {(a.scope, a.metric, a.state) for a in alerts(services)}
    return seen


RATE_RULES = (
    Rule(metric="detection_rate", scope="site", baseline="captured", baseline_windows=6,
         fire_above=0.5, clear_below=0.3, fire_after=2, clear_after=2, min_frames=30),
    Rule(metric="empty_share", scope="site", baseline="captured", baseline_windows=6,
         fire_above=0.3, clear_below=0.15, fire_after=2, clear_after=2, min_frames=30),
    Rule(metric="detection_rate", scope="device", baseline="captured", baseline_windows=3,
         fire_above=0.5, clear_below=0.3, fire_after=3, clear_after=2, min_frames=30),
)  # fmt: skip


def test_detections_fall_tenfold_at_one_site(services: Services) -> None:
    version_with_card(services)
    scene = Scene(services, seed=7)
    for device, site in SITES.items():
        scene.feed.device(device, {"site": site})
    t0, now = start(), [start()]
    watcher = watcher_for(services, RATE_RULES, now)
    fallen = [False]

    def frames(device: str, at: datetime) -> None:
        low = fallen[0] and SITES[device] == "north"
        scene.window(device, at, FALLEN if low else NORMAL, BASE)

    quiet = run_minutes(services, watcher, now, t0, range(12), frames)
    assert quiet[11] == set()  # 3 minutes of capture, 9 of noise: nothing fires
    fallen[0] = True  # minute 12: north's detections per frame fall 10x
    changed = run_minutes(services, watcher, now, t0, range(12, 20), frames)
    north = {("site:north", "detection_rate", "firing"), ("site:north", "empty_share", "firing")}
    first = min((k for k, got in changed.items() if north <= got), default=None)
    assert (
        first is not None and first <= 14
    )  # minute 12 is judged when minute 13 closes it; fire_after 2
    assert changed[19] == north | {
        (f"device:{d}", "detection_rate", "firing") for d in ("cam-n1", "cam-n2")
    }  # south, with the same noise, fired nothing; each north device did on its own
    low_windows = [a for a in alerts(services) if a.scope == "site:north"]
    assert all(a.version == "v1" and a.baseline == "captured" for a in low_windows)

    fallen[0] = False  # the scene comes back
    back = run_minutes(services, watcher, now, t0, range(20, 26), frames)
    assert {state for _, _, state in back[25]} == {"resolved"}
    assert {a.reason for a in alerts(services)} == {"clear"}

    with serving(services) as client:
        got = client.get("/v1/alerts", params={"scope": "site:north"}).json()
    assert {(a["metric"], a["state"], a["baseline"]) for a in got["data"]} == {
        ("detection_rate", "resolved", "captured"), ("empty_share", "resolved", "captured"),
    }  # fmt: skip


def test_darkened_site_fires_against_the_card_and_resolves(services: Services) -> None:
    version_with_card(services)
    scene = Scene(services, seed=11)
    for device, site in SITES.items():
        scene.feed.device(device, {"site": site})
    rules = (Rule(metric="psi", scope="site", fire_above=0.25, clear_below=0.1, fire_after=2,
                  clear_after=2, min_detections=150),)  # fmt: skip
    t0, now = start(), [start()]
    watcher = watcher_for(services, rules, now)
    dark = [False]

    def frames(device: str, at: datetime) -> None:
        scene.window(device, at, NORMAL, DARK if dark[0] and SITES[device] == "north" else BASE)

    assert run_minutes(services, watcher, now, t0, range(8), frames)[7] == set()
    dark[0] = True
    changed = run_minutes(services, watcher, now, t0, range(8, 14), frames)
    assert changed[10] == {("site:north", "psi", "firing")}  # fired in 3 minutes, north only
    assert changed[13] == {("site:north", "psi", "firing")}
    dark[0] = False
    back = run_minutes(services, watcher, now, t0, range(14, 19), frames)
    assert back[18] == {("site:north", "psi", "resolved")}


def test_thin_site_buckets_are_summed_until_they_are_a_look(services: Services) -> None:
    """A darkened site whose one-minute buckets each hold about 80 detections (under the
    rule's 200) still alerts: thin buckets are summed with the next ones, as a device's
    thin windows are, instead of being skipped for ever."""
    version_with_card(services)
    scene = Scene(services, seed=5)
    for device, site in SITES.items():
        scene.feed.device(device, {"site": site})
    rules = (Rule(metric="psi", scope="site", fire_above=0.25, clear_below=0.1, fire_after=2,
                  clear_after=2, min_detections=200),)  # fmt: skip
    t0, now = start(), [start()]
    watcher = watcher_for(services, rules, now)
    dark = [False]

    def frames(device: str, at: datetime) -> None:
        scene.window(device, at, 1.0, DARK if dark[0] and SITES[device] == "north" else BASE)

    assert run_minutes(services, watcher, now, t0, range(8), frames)[7] == set()
    dark[0] = True
    changed = run_minutes(services, watcher, now, t0, range(8, 20), frames)
    first = min((k for k, got in changed.items() if got), default=None)
    assert first is not None and first <= 16, changed  # two looks of about 3 buckets each
    assert changed[19] == {("site:north", "psi", "firing")}  # south never


def test_alerts_of_one_version_do_not_carry_over(services: Services) -> None:
    version_with_card(services)
    scene = Scene(services, seed=3)
    scene.feed.device("cam-n1", {"site": "north"})
    rules = (Rule(metric="detection_rate", baseline="captured", baseline_windows=3,
                  fire_above=0.5, clear_below=0.3, fire_after=2, quiet_after_s=300),)  # fmt: skip
    t0, now = start(), [start()]
    watcher = [watcher_for(services, rules, now)]

    def send(k: int, rate: float, version: str) -> None:
        at = t0 + timedelta(seconds=60 * k + 10)
        scene.window("cam-n1", at, rate, BASE, version=version)
        now[0] = at + timedelta(seconds=5)
        watcher[0].poll()

    def restart() -> AlertWatcher:
        watcher[0] = watcher_for(services, rules, now)
        return watcher[0]

    for k in range(3):
        send(k, NORMAL, "v1")  # v1's reference
    for k in range(3, 5):
        send(k, FALLEN, "v1")
    assert [(a.version, a.state) for a in alerts(services)] == [("v1", "firing")]
    restart()  # the firing v1 alert is still known to belong to the device's v1
    for k in range(5, 12):
        send(k, FALLEN, "v2")  # v2 runs at the new rate from its start: its own reference
    got = alerts(services)
    assert [(a.version, a.state, a.reason) for a in got] == [("v1", "resolved", "version")]

    # A restart keeps v2's captured reference: the old rate now reads as drift. At v2's
    # 0.22 a frame a look needs 91 frames (20 detections expected): 3 windows of 40 are
    # summed into each look, and fire_after 2 looks fire at the sixth window.
    assert restart().baselines[("device:cam-n1", "shapes", "v2", 3)].look.windows == 3
    for k in range(12, 17):
        send(k, NORMAL, "v2")
    assert [a.version for a in alerts(services)] == ["v1"]
    send(17, NORMAL, "v2")
    assert [(a.version, a.state) for a in alerts(services)] == [
        ("v1", "resolved"), ("v2", "firing"),
    ]  # fmt: skip
    # The device goes quiet: the alert resolves on its own after quiet_after_s.
    now[0] += timedelta(seconds=301)
    watcher[0].poll()
    assert [(a.version, a.state, a.reason) for a in alerts(services)][-1] == (
        "v2", "resolved", "quiet",
    )  # fmt: skip


def test_measures_and_their_floors() -> None:
    edges = list(CONFIDENCE_EDGES)
    base = Look(frames=400, detections=916, empty_frames=40, counts=BASE)
    rule = Rule(metric="detection_rate", min_frames=30)
    few = Look(frames=40, detections=9, empty_frames=32, counts=[0] * 19 + [9])
    assert measure(rule, few, base, edges) == pytest.approx(1 - (9 / 40) / (916 / 400))
    assert measure(rule, Look(frames=20, detections=2), base, edges) is None  # under min_frames
    empty = Rule(metric="empty_share", fire_above=0.3, clear_below=0.1)
    assert measure(empty, few, base, edges) == pytest.approx(0.8 - 0.1)
    assert measure(empty, Look(frames=40, detections=9), base, edges) is None  # not reported
    assert rate_change(2.0, 1.0) == rate_change(0.5, 1.0) == 0.5
    assert rate_change(0.0, 0.0) == 0.0 and rate_change(0.0, 1.0) == 1.0
    psi = Rule(min_detections=150)
    assert measure(psi, Look(frames=40, detections=100, counts=BASE), base, edges) is None
    # The rate floor is in frames: 20 detections expected at the baseline's 0.1 a frame.
    sparse = Look(frames=1000, detections=100)
    assert not enough(rule, Look(frames=150, detections=0), sparse)
    assert measure(rule, Look(frames=200, detections=0), sparse, edges) == 1.0
    with pytest.raises(ValueError, match="baseline"):
        Rule(baseline="yesterday")
    with pytest.raises(ValueError, match="metric"):
        Rule(metric="frames")


def test_scopes_and_rules_in_the_config_file(tmp_path: Path) -> None:
    labels = {"store": "12", "site": "north"}
    assert scope_of(Rule(scope="site", site_label="store"), "cam-1", labels) == "site:12"
    assert scope_of(Rule(scope="site"), "cam-1", labels) == "site:north"
    assert scope_of(Rule(scope="label:store"), "cam-1", labels) == "label:store=12"
    assert scope_of(Rule(scope="site", site_label="hall"), "cam-1", labels) is None
    assert scope_of(Rule(), "cam-1", labels) == "device:cam-1"
    (tmp_path / "alerts.yaml").write_text(
        "rules:\n  - {metric: detection_rate, scope: site, site_label: store,"
        " baseline: captured, baseline_windows: 4, min_frames: 60}\n"
    )
    (rule,) = load_alert_config(tmp_path).rules
    assert (rule.site_label, rule.baseline, rule.baseline_windows) == ("store", "captured", 4)
    (tmp_path / "alerts.yaml").write_text(
        "rules:\n  - {metric: psi, scope: site}\n  - {metric: psi, scope: site, fire_above: 1}\n"
    )
    with pytest.raises(ConfigError, match="two rules for scope site, metric psi"):
        load_alert_config(tmp_path)
