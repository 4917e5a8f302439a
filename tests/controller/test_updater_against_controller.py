"""The agent's updater against the real controller app: idle polls are 304s, no 404s;
an interrupted download resumes with Range; sampling settings are conditional too."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller import registry
from edgefleet.controller.services import Services
from edgefleet.shared.errors import TransportError
from sqlmodel import Session

from edgefleet.tiny_models import tiny_onnx
from tests.controller.conftest import serving

DEVICE = "cam-idle"


class Seen:
    def __init__(self) -> None:
        self.answers: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, status: int) -> None:
        with self.lock:
            self.answers.append((url.rsplit("/", 1)[1], status))


def test_idle_polls_and_a_resumed_download_against_the_controller(
    services: Services, tmp_path: Path
) -> None:
    with Session(services.engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        row = registry.push_version(s, services.store, services.signing, "m", f, version="v1")
    info = services.signing.target("models/m/v1/model.onnx")
    services.signing.assign(DEVICE, [info])
    seen = Seen()
    with serving(services) as client:
        url = str(client.base_url).rstrip("/")
        fetcher = DeadlineFetcher(FetcherConfig(deadline_s=30, timeout_s=10), observer=seen)
        up = ModelUpdater(UpdaterConfig(url, DEVICE, tmp_path / "agent"), fetcher)
        [target] = up.refresh({}, None)
        assert target.sha256 == row.sha256
        seen.answers.clear()
        for _ in range(4):
            assert up.refresh({}, None) == [target]
        assert up.full_refreshes == 1
        assert seen.answers == [("timestamp.json", 200)] + [("timestamp.json", 304)] * 3

        # half the artifact already on disk, as a broken-off download leaves it
        models = tmp_path / "models"
        models.mkdir()
        whole = services.store.path_for(row.sha256).read_bytes()
        part = models / f".{row.sha256}.onnx.part"
        part.write_bytes(whole[: len(whole) // 2])
        seen.answers.clear()
        assert up.download(target, models).read_bytes() == whole
        assert seen.answers == [(f"{row.sha256}.model.onnx", 206)]
        assert not part.exists()


def test_a_controller_gone_after_idle_polls_is_a_transport_error_not_a_stale_answer(
    services: Services, tmp_path: Path
) -> None:
    services.signing.ensure_device(DEVICE)
    with serving(services) as client:
        up = ModelUpdater(UpdaterConfig(str(client.base_url), DEVICE, tmp_path / "agent"))
        assert up.refresh({}, None) == []
        assert up.refresh({}, None) == []
    with pytest.raises(TransportError):
        up.refresh({}, None)


def test_card_and_sampling_answers_carry_etags(services: Services) -> None:
    with serving(services) as client:
        r = client.get(f"/v1/devices/{DEVICE}/sampling")
        assert r.status_code == 200 and r.headers["etag"]
        again = client.get(f"/v1/devices/{DEVICE}/sampling",
                           headers={"If-None-Match": r.headers["etag"]})  # fmt: skip
        assert (again.status_code, again.content) == (304, b"")
