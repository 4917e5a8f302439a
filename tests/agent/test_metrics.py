"""Prometheus metrics from a real pipeline and a real swap, scraped over real HTTP."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from edgefleet.agent.metrics import AgentMetrics, serve
from edgefleet.agent.pipeline import FolderSource, Pipeline
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import ModelPointer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.runtime.detector import Detector

REPO = Path(__file__).resolve().parents[2]
MODELS = {"v1": REPO / "models/shapes/v1/model.onnx", "v2": REPO / "models/shapes/v2/model.onnx"}


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stage(slots: ModelSlots, version: str) -> None:
    pointer = ModelPointer("shapes", version, 1, "0" * 64, f"{version}.onnx")
    slots.stage(Detector.from_onnx(MODELS[version]), pointer)
    slots.swap()
    slots.commit()


def test_frames_latency_swaps_and_model_info_on_the_http_endpoint():
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, backend="onnxruntime-cpu")
    server = serve(registry, 0, "127.0.0.1")
    port = server.port
    slots = ModelSlots()
    pipeline = Pipeline(FolderSource(REPO / "models" / "samples"), slots, [metrics], fps=0)
    try:
        stage(slots, "v1")
        pipeline.start()
        wait_until(lambda: pipeline.frames >= 5)
        stage(slots, "v2")
        wait_until(lambda: metrics.swaps._value.get() >= 1)
        frames_at_swap = pipeline.frames
        wait_until(lambda: pipeline.frames >= frames_at_swap + 3)
        pipeline.stop()
        m = scrape(port)
    finally:
        pipeline.stop()
        slots.close()
        server.close()

    frames = value(m, "edgefleet_agent_frames_total")
    assert frames == pipeline.frames > 0
    assert value(m, "edgefleet_agent_frames_dropped_total") == pipeline.drops == 0
    assert value(m, "edgefleet_agent_inference_seconds_count") == frames
    assert 0 < value(m, "edgefleet_agent_inference_seconds_sum") < frames * 5
    assert value(m, "edgefleet_agent_model_swaps_total") == 1
    info = {
        (lab["model"], lab["version"], lab["backend"]): v
        for lab, v in m["edgefleet_agent_model_info"]
    }
    assert info == {("shapes", "v2", "onnxruntime-cpu"): 1.0}  # v1's series is gone


def test_drops_are_counted():
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, backend="onnxruntime-cpu")
    metrics.on_drop(3)
    assert registry.get_sample_value("edgefleet_agent_frames_dropped_total") == 3
