"""Drift alerts: the pure hysteresis rules, and the watcher on a real database sending to a
real webhook server; listed by the API and ``edgefleet alerts list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from edgefleet.controller.alerts.config import load_alert_config
from edgefleet.controller.alerts.notify import WebhookNotifier
from edgefleet.controller.alerts.rules import Look, Rule, Track, Transition, measure, step
from edgefleet.controller.alerts.watch import AlertWatcher
from edgefleet.controller.cards import CardStore
from edgefleet.controller.services import Services
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.histogram import CONFIDENCE_EDGES

from tests.controller.conftest import serving
from tests.controller.dataloop import BASE, DARK, Feeder, version_with_card


def run(rule: Rule, values: list[float | None]) -> list[str]:
    track, out = Track(), []
    for v in values:
        track, what = step(rule, track, v)
        out.append(what.value[0] if what is not Transition.NONE else ".")
    return out


def test_hysteresis() -> None:
    rule = Rule(fire_above=0.25, clear_below=0.1, fire_after=2, clear_after=2)
    # One spike does not fire; two in a row do; hovering between the thresholds keeps it
    # firing; two windows under clear_below resolve it.
    got = run(rule, [0.3, 0.0, 0.3, 0.4, 0.2, 0.3, 0.05, 0.2, 0.05, 0.05, 0.3])
    assert got == [".", ".", ".", "f", ".", ".", ".", ".", ".", "r", "."]


def test_thin_windows_and_missing_scores_leave_the_track_alone() -> None:
    rule = Rule(fire_after=1, min_detections=20)
    base = Look(frames=50, detections=340, counts=BASE)
    thin = Look(frames=100, detections=5, counts=[0] * 15 + [5] * 1 + [0] * 4)
    assert measure(rule, thin, base, list(CONFIDENCE_EDGES)) is None  # 5 detections: no PSI
    assert run(rule, [None, 0.9]) == [".", "f"]


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        Rule(fire_above=0.1, clear_below=0.2)
    with pytest.raises(ValueError, match="metric"):
        Rule(metric="kl")


def test_alert_config_file(tmp_path: Path) -> None:
    assert load_alert_config(tmp_path).rules == (Rule(),)
    (tmp_path / "alerts.yaml").write_text(
        "rules:\n  - {metric: js, fire_above: 0.3, clear_below: 0.1}\n"
        "webhooks: [http://127.0.0.1:9/hook]\ninterval_s: 1\n"
    )
    cfg = load_alert_config(tmp_path)
    assert cfg.rules[0].metric == "js" and cfg.webhooks == ("http://127.0.0.1:9/hook",)
    (tmp_path / "alerts.yaml").write_text("webhooks: [ftp://x]\n")
    with pytest.raises(ConfigError, match="not an http"):
        load_alert_config(tmp_path)


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server that records what webhooks POST to it."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def test_watcher_fires_resolves_and_calls_webhooks(
    services: Services, hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, posted = hook
    version_with_card(services)
    feed = Feeder(services)
    feed.device("cam-1", {"site": "north"})
    feed.device("cam-2", {"site": "south"})
    cfg = load_alert_config(services.settings.data_dir)
    watcher = AlertWatcher(services.engine, CardStore(services.settings.data_dir / "cards"), cfg,
                           WebhookNotifier([url], backoff_s=0))  # fmt: skip
    watcher.resume()
    for counts in (DARK, DARK, DARK):
        feed.window("cam-1", counts)
        feed.window("cam-2", BASE)
        watcher.poll()
    assert [p["event"] for p in posted] == ["alert.fired"]
    alert = posted[0]["alert"]
    assert alert["device_id"] == "cam-1" and alert["metric"] == "psi"
    assert alert["labels"] == {"site": "north"} and alert["value"] > 0.25
    for _ in range(2):
        feed.window("cam-1", BASE)
        watcher.poll()
    assert [p["event"] for p in posted] == ["alert.fired", "alert.resolved"]

    with serving(services) as client:
        listed = client.get("/v1/alerts").json()
        assert listed["count"] == 1 and listed["data"][0]["state"] == "resolved"
        assert listed["data"][0]["resolved_at"].endswith(("Z", "+00:00"))  # UTC, zoned
        env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}
        argv = [sys.executable, "-m", "edgefleet", "alerts", "list"]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "device:cam-1" in out.stdout and "resolved" in out.stdout
        assert "psi vs card" in out.stdout and "(clear)" in out.stdout


def test_unreachable_webhook_is_retried_then_counted(services: Services) -> None:
    from edgefleet.devbroker import free_port

    notifier = WebhookNotifier([f"http://127.0.0.1:{free_port()}/"], attempts=2, backoff_s=0,
                               timeout_s=1)  # fmt: skip
    notifier.send({"event": "alert.fired"})
    assert notifier.failed == 1 and notifier.sent == 0
