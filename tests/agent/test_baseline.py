"""Drift baselines on the agent: fetched from a real controller, cached on disk, scored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgefleet.agent.baseline import BaselineCache, with_drift
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.controller import registry
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.cards import CardStore
from edgefleet.controller.db import make_engine
from edgefleet.controller.services import NoLink, Services
from edgefleet.controller.settings import Settings
from edgefleet.controller.trust import TufSigning
from edgefleet.shared.card import ModelCard
from edgefleet.shared.drift import DRIFT_PSEUDOCOUNT, js_distance, psi, wasserstein1
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS
from edgefleet.shared.protocol import TelemetryWindow, utcnow
from sqlmodel import Session

from edgefleet.devbroker import free_port
from edgefleet.tiny_models import tiny_onnx
from tests.controller.conftest import serving

BINS = len(CONFIDENCE_EDGES) - 1
BASE = [0] * 10 + [5, 10, 20, 40, 60, 80, 60, 40, 20, 5]  # confident model


def card(version: str = "v1") -> ModelCard:
    return ModelCard(model="m", version=version, images=10, conf=0.25, confidence_counts=BASE,
                     detections=sum(BASE))  # fmt: skip


def window(counts: list[int], version: str = "v1") -> TelemetryWindow:
    now = utcnow()
    return TelemetryWindow(
        device_id="cam-1", model="m", version=version, window_start=now, window_end=now,
        frames=10, latency_edges_ms=list(LATENCY_EDGES_MS),
        latency_counts=[0] * (len(LATENCY_EDGES_MS) - 1),
        confidence_edges=list(CONFIDENCE_EDGES), confidence_counts=counts,
    )  # fmt: skip


def test_window_scored_against_the_card() -> None:
    same = with_drift(window(BASE), card())
    assert same.drift_psi == pytest.approx(0.0, abs=1e-12)
    assert same.drift_js == pytest.approx(0.0, abs=1e-6)
    darker = [0] * 5 + [20, 40, 60, 40, 20] + [5] * 10  # confidence fell
    out = with_drift(window(darker), card())
    assert out.drift_psi == pytest.approx(psi(BASE, darker, pseudocount=DRIFT_PSEUDOCOUNT))
    assert out.drift_psi > 1.0
    assert out.drift_js == pytest.approx(js_distance(BASE, darker))
    assert out.drift_wasserstein == pytest.approx(wasserstein1(BASE, darker, CONFIDENCE_EDGES))
    # No card, or an empty window: no scores, never an exception.
    assert with_drift(window(darker), None).drift_psi is None
    assert with_drift(window([0] * BINS), card()).drift_psi is None


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[Services, httpx.Client]]:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.db_url)
    services = Services(settings, engine, ArtifactStore(settings.artifacts_dir),
                        TufSigning.open(settings.data_dir), NoLink())  # type: ignore[arg-type]  # fmt: skip
    with Session(engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        registry.push_version(s, services.store, services.signing, "m", f, version="v1")
    CardStore(settings.data_dir / "cards").put(card())
    try:
        with serving(services) as client:
            yield services, client
    finally:
        engine.dispose()


def test_fetched_once_then_served_from_disk(
    controller: tuple[Services, httpx.Client], tmp_path: Path
) -> None:
    _, client = controller
    now = [0.0]
    cache = BaselineCache(ControllerHttp(str(client.base_url), "cam-1"), tmp_path / "b",
                          retry_s=60, clock=lambda: now[0])  # fmt: skip
    got = cache.get("m", "v1")
    assert got is not None and got.confidence_counts == BASE
    assert (tmp_path / "b" / "m" / "v1.json").is_file()
    # No card for v2 yet: asked once, then not again until retry_s passed.
    assert cache.get("m", "v2") is None
    assert cache._next_try[("m", "v2")] == 60.0
    # Restarted with the controller unreachable: the disk copy still serves.
    offline = ControllerHttp(f"http://127.0.0.1:{free_port()}", "cam-1", timeout_s=1)
    again = BaselineCache(offline, tmp_path / "b")
    assert again.get("m", "v1") == got
    assert again.get("m", "v9") is None  # unreachable: a warning, no exception


def test_a_missing_card_is_asked_with_growing_gaps_and_a_card_answers_304(
    controller: tuple[Services, httpx.Client], tmp_path: Path
) -> None:
    _, client = controller
    asked: list[tuple[str, int]] = []
    http = ControllerHttp(str(client.base_url), "cam-1", observer=lambda p, s: asked.append((p, s)))
    now = [0.0]
    cache = BaselineCache(http, tmp_path / "b", retry_s=60, retry_max_s=6 * 3600,
                          clock=lambda: now[0])  # fmt: skip
    for minute in range(24 * 60):  # a day of telemetry windows, one a minute
        now[0] = minute * 60.0
        assert cache.get("m", "v2") is None
    # 60 s, 2 min, 4 min, ... 6 h: 10 asks to reach the cap, then one per 6 hours
    assert len(asked) == 12
    assert {s for _, s in asked} == {404}

    card_path = "/v1/models/m/versions/v1/card"
    first = client.get(card_path)
    assert first.status_code == 200 and first.headers["etag"]
    again = client.get(card_path, headers={"If-None-Match": first.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == first.headers["etag"]
    assert client.get(card_path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_drifting_window_opens_the_samplers_drift_budget(
    controller: tuple[Services, httpx.Client], tmp_path: Path
) -> None:
    """DataLoop: the window scored against the card fetched from a real controller tells
    the sampler (agent/sampler.py) that the scene changed; the window is still spooled."""
    from edgefleet.agent.dataloop import DataLoop
    from edgefleet.agent.forward import TelemetryForwarder
    from edgefleet.agent.sampler import Sampler
    from edgefleet.agent.spool import DiskSpool
    from edgefleet.shared.sampling import SamplingConfig

    _, client = controller
    http = ControllerHttp(str(client.base_url), "cam-1")
    spool = DiskSpool(tmp_path / "telemetry")
    forwarder = TelemetryForwarder(spool, lambda payload, timeout: False, lambda: False)
    sampler = Sampler("cam-1", SamplingConfig(), DiskSpool(tmp_path / "samples"), None)
    loop = DataLoop(forwarder, BaselineCache(http, tmp_path / "b"), sampler, http)
    loop.publish_telemetry(window(BASE))
    assert not sampler.drift.drifting(sampler.clock())
    loop.publish_telemetry(window([0] * 5 + [20, 40, 60, 40, 20] + [5] * 10))  # darker
    assert sampler.drift.drifting(sampler.clock())
    assert sampler.drift.reason is not None and sampler.drift.reason.startswith("psi")
    assert len(list(spool.entries())) == 2
    http.close()
