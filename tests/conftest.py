"""Fixtures shared by every test folder.

``broker`` starts a real Mosquitto on a free port with edgefleet's own config (never the
system's 1883) and stops it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.devbroker import DevBroker

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DevBroker]:
    b = DevBroker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
