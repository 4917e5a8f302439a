"""Helpers of the data-loop tests: a model version with a card, and windows and states fed
through the controller's real ingest (the broker path itself is tests/controller/test_ingest)."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.controller import registry
from edgefleet.controller.cards import CardStore
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.services import Services
from edgefleet.shared.card import ModelCard
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS
from edgefleet.shared.protocol import DeviceState, Status, TelemetryWindow, utcnow
from edgefleet.shared.topics import Channel, device_topic
from sqlmodel import Session

from edgefleet.tiny_models import tiny_onnx

BASE = [0] * 10 + [5, 10, 20, 40, 60, 80, 60, 40, 20, 5]  # the card: a confident model
DARK = [0] * 5 + [20, 40, 60, 40, 20] + [5] * 10  # confidence fell (darker light)


def version_with_card(services: Services, name: str = "shapes", version: str = "v1") -> None:
    path = tiny_onnx(services.settings.data_dir / f"{name}-{version}.onnx")
    with Session(services.engine) as s, path.open("rb") as f:
        registry.push_version(s, services.store, services.signing, name, f, version=version)
    card = ModelCard(model=name, version=version, images=50, conf=0.25,
                     confidence_counts=BASE, detections=sum(BASE))  # fmt: skip
    CardStore(services.settings.data_dir / "cards").put(card)


class Feeder:
    def __init__(self, services: Services) -> None:
        self.ingest = Ingest(services.engine, services.signing, services.link,  # type: ignore[arg-type]
                             services.stats)  # fmt: skip

    def device(self, device_id: str, labels: dict[str, str], *, online: bool = True) -> None:
        state = DeviceState(device_id=device_id, model="shapes", version="v1", labels=labels)
        self.ingest.handle(str(device_topic(device_id, Channel.STATE)), state.to_bytes())
        status = Status(device_id=device_id, online=online)
        self.ingest.handle(str(device_topic(device_id, Channel.STATUS)), status.to_bytes())

    def window(
        self, device_id: str, counts: list[int], *, at: datetime | None = None,
        version: str = "v1", frames: int = 100, empty_frames: int | None = None,
    ) -> None:  # fmt: skip
        end = at or utcnow()
        w = TelemetryWindow(
            device_id=device_id, model="shapes", version=version,
            window_start=end - timedelta(seconds=60), window_end=end, frames=frames,
            empty_frames=empty_frames,
            latency_edges_ms=list(LATENCY_EDGES_MS),
            latency_counts=[0] * (len(LATENCY_EDGES_MS) - 1),
            confidence_edges=list(CONFIDENCE_EDGES), confidence_counts=counts,
            detections=sum(counts), low_confidence=sum(counts[:10]),
        )  # fmt: skip
        self.ingest.handle(str(device_topic(device_id, Channel.TELEMETRY)), w.to_bytes())
