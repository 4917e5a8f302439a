"""Prometheus /metrics: a registry owned by the app (never the global one), filled at scrape
time from the database and the ingest counters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from edgefleet.controller.api.cards import card_store
from edgefleet.controller.drift_report import drift_report
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.rollouts import Rollout
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.controller.services import Services
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import Session, col, select

DRIFT_SPAN = timedelta(minutes=15)  # drift gauges cover the windows of the last 15 minutes
ROLLOUT_STATES = tuple(s.value for s in RolloutState)

router = APIRouter(tags=["metrics"])


class FleetCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        with Session(self.services.engine) as s:
            yield self._devices(s)
            yield self._rollouts(s)
            yield from self._drift(s)
        yield self._ingest()
        yield from self._backlog()

    def _devices(self, s: Session) -> Metric:
        g = GaugeMetricFamily("edgefleet_devices", "Devices known, by online", labels=["online"])
        rows = dict(s.exec(select(Device.online, func.count()).group_by(col(Device.online))).all())
        g.add_metric(["true"], float(rows.get(True, 0)))
        g.add_metric(["false"], float(rows.get(False, 0)))
        return g

    def _rollouts(self, s: Session) -> Metric:
        g = GaugeMetricFamily("edgefleet_rollouts", "Rollouts by state", labels=["state"])
        rows = dict(s.exec(select(Rollout.state, func.count()).group_by(Rollout.state)).all())
        for state in sorted(set(ROLLOUT_STATES) | set(rows)):
            g.add_metric([state], float(rows.get(state, 0)))
        return g

    def _ingest(self) -> Metric:
        c = CounterMetricFamily(
            "edgefleet_ingest_messages", "MQTT messages ingested", labels=["outcome", "channel"]
        )
        for outcome, channels in self.services.stats.snapshot().items():
            for channel, n in sorted(channels.items()):
                c.add_metric([outcome, channel], float(n))
        return c

    def _backlog(self) -> Iterator[Metric]:
        """The ingest queue and the broker's drops: where a burst waits, or is lost."""
        gauges = self.services.stats.gauges()
        for name, help_text in (
            ("queue_depth", "Messages received and not yet stored"),
            ("queue_capacity", "Bound of the ingest queue"),
            ("hold", "1 while agents are told to hold telemetry in their spools (backpressure)"),
        ):
            if name in gauges:
                yield GaugeMetricFamily(f"edgefleet_ingest_{name}", help_text, gauges[name])
        if "broker_dropped" in gauges:
            yield CounterMetricFamily(
                "edgefleet_broker_dropped_messages",
                "Messages the broker dropped for full queues ($SYS), all clients",
                gauges["broker_dropped"],
            )

    def _drift(self, s: Session) -> Iterator[Metric]:
        since = datetime.now(timezone.utc) - DRIFT_SPAN
        data = drift_report(s, card_store(self.services), since=since, bucket_s=0)
        for metric in ("psi", "js", "wasserstein"):
            g = GaugeMetricFamily(
                f"edgefleet_drift_{metric}",
                f"Confidence drift ({metric}) against the model card, last 15 minutes",
                labels=["model", "version"],
            )
            for d in data:
                if d[metric] is not None:
                    g.add_metric([d["model"] or "", d["version"] or ""], float(d[metric]))
            yield g


def registry_for(services: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(services))
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
