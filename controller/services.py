"""What the app needs, built once in ``main()`` (serve.py) or a test, then passed in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.rollouts.context import HintSender
from edgefleet.controller.settings import Settings
from edgefleet.controller.stats import IngestStats
from edgefleet.controller.trust import Signing
from edgefleet.shared.protocol import utcnow
from sqlalchemy.engine import Engine


class NoLink:
    """A HintSender for a controller run without MQTT (tests of the REST surface)."""

    connected = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.kicked: list[str] = []

    def send_hint(self, device_id: str, director_version: int) -> None:
        self.sent.append((device_id, director_version))

    def kick(self, device_id: str) -> bool:
        self.kicked.append(device_id)
        return False


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    signing: Signing
    link: HintSender
    stats: IngestStats = field(default_factory=IngestStats)
    revoked: Any = None  # enrollment.RevokedDevices; deps.revoked_devices builds it lazily
    # What the REST handlers call "now" (rollout start, operator actions); tests pass their own.
    clock: Callable[[], datetime] = utcnow
