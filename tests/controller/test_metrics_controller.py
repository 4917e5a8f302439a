"""Prometheus /metrics: devices online, rollouts by state, ingest counters, drift per
model version; an app-owned registry (two apps in one process do not collide)."""

from __future__ import annotations

from edgefleet.controller.services import Services
from prometheus_client.parser import text_string_to_metric_families

from tests.controller.conftest import serving
from tests.controller.dataloop import DARK, Feeder, version_with_card


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics(services: Services) -> None:
    version_with_card(services)
    feed = Feeder(services)
    feed.device("cam-1", {"site": "north"})
    feed.device("cam-2", {"site": "south"}, online=False)
    feed.window("cam-1", DARK)
    with serving(services) as client:
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        m = samples_of(r.text)
    assert m[("edgefleet_devices", (("online", "true"),))] == 1
    assert m[("edgefleet_devices", (("online", "false"),))] == 1
    assert m[("edgefleet_rollouts", (("state", "running"),))] == 0
    assert m[("edgefleet_ingest_messages_total", (("channel", "telemetry"),
                                                  ("outcome", "received")))] == 1  # fmt: skip
    psi = m[("edgefleet_drift_psi", (("model", "shapes"), ("version", "v1")))]
    assert psi > 1.0
    assert ("edgefleet_drift_wasserstein", (("model", "shapes"), ("version", "v1"))) in m
    # A second app in the same process has its own registry: no duplicate-metric error.
    with serving(services) as again:
        assert again.get("/metrics").status_code == 200


def test_ingest_backlog_metrics(services: Services) -> None:
    services.stats.set_gauge("queue_depth", 12)
    services.stats.set_gauge("queue_capacity", 2000)
    services.stats.set_gauge("broker_dropped", 5)
    services.stats.set_gauge("hold", 1)
    with serving(services) as client:
        m = samples_of(client.get("/metrics").text)
    assert m[("edgefleet_ingest_queue_depth", ())] == 12
    assert m[("edgefleet_ingest_queue_capacity", ())] == 2000
    assert m[("edgefleet_broker_dropped_messages_total", ())] == 5
    assert m[("edgefleet_ingest_hold", ())] == 1  # agents told to keep telemetry spooled
