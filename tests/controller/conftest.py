"""Fixtures of the controller tests: a real ONNX model, real services on tmp_path, and the
app served by uvicorn on a free port (real HTTP, no test transport)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from edgefleet.controller.app import create_app
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.db import make_engine
from edgefleet.controller.serve import bind, build_services
from edgefleet.controller.services import NoLink, Services
from edgefleet.controller.settings import Settings
from edgefleet.controller.trust import TufSigning

from edgefleet.devbroker import DevBroker, free_port
from edgefleet.tiny_models import tiny_onnx

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "shapes" / "v1" / "model.onnx"


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    """The shipped shapes model when it is in the repo, else a tiny built one."""
    if SHIPPED.is_file():
        return SHIPPED
    return tiny_onnx(tmp_path / "model.onnx")


@pytest.fixture
def make_services(tmp_path: Path) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def build(
        database_url: str | None = None, link: object | None = None, tuf_store: str = "folder"
    ) -> Services:
        settings = Settings(data_dir=tmp_path / "data", database_url=database_url,
                            tuf_store=tuf_store)  # fmt: skip
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        services = Services(
            settings,
            engine,
            ArtifactStore(settings.artifacts_dir),
            TufSigning.open(settings.data_dir, engine if tuf_store == "database" else None),
            link or NoLink(),  # type: ignore[arg-type]
        )
        built.append(services)
        return services

    yield build
    for s in built:
        s.engine.dispose()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


@contextmanager
def serving(services: Services) -> Iterator[httpx.Client]:
    """Run the app with uvicorn in a thread; yield an httpx client pointed at it."""
    sock = bind("127.0.0.1", free_port())
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(services), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def make_onnx() -> Callable[[Path, int], Path]:
    """``make_onnx(path, size)``: a tiny valid ONNX model (bytes differ per size)."""
    return tiny_onnx


@pytest.fixture
def serve() -> Callable[[Services], AbstractContextManager[httpx.Client]]:
    """``with serve(services) as client:`` runs the app on a free port for the block."""
    return serving


@pytest.fixture
def client(services: Services) -> Iterator[httpx.Client]:
    with serving(services) as c:
        yield c


@pytest.fixture
def linked(tmp_path: Path, broker: DevBroker) -> Iterator[Services]:
    """Services on tmp_path with a real MQTT link to the test broker, connected."""
    services, link = build_services(Settings(data_dir=tmp_path / "ctl", mqtt_url=broker.url))
    link.start()
    assert link.wait_connected(30.0), "controller did not connect to the broker"
    try:
        yield services
    finally:
        link.stop()
        services.engine.dispose()


# --- auth on (the shipped default): tokens and enrolled devices -------------------------


def bearer(services: Services, role: str, name: str | None = None) -> dict[str, str]:
    """An ``Authorization`` header for a new API token of ``role``."""
    from edgefleet.controller.tokens import create_token
    from sqlmodel import Session

    with Session(services.engine) as session:
        _, secret = create_token(session, name or f"{role}-1", role, "test")
    return {"Authorization": f"Bearer {secret}"}


def enroll_device(
    client: httpx.Client, operator: dict[str, str], device: str, folder: Path
) -> dict[str, str]:
    """The real way in: a one-time token (operator), then the agent's own enrollment into
    ``folder``; returns the header the agent then sends (its credential)."""
    from edgefleet.agent.enroll import enroll

    answer = client.post("/v1/enroll-tokens", json={"device_id": device}, headers=operator)
    assert answer.status_code == 200, answer.text
    ident = enroll(str(client.base_url), device, folder, str(answer.json()["token"]))
    assert ident.upload_token is not None
    return {"Authorization": f"Bearer {ident.upload_token.read_text().strip()}"}


@pytest.fixture
def secured(services: Services) -> Services:
    """Services as ``controller serve`` builds them by default: tokens required, device
    PKI made (enrollment works)."""
    import dataclasses

    from edgefleet.controller.pki import DevicePki

    services.settings = dataclasses.replace(services.settings, auth=True)
    DevicePki(services.settings.data_dir / "pki").init(("localhost",))
    return services
