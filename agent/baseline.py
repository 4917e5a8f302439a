"""Drift baselines on the device: the model card's confidence histogram for the model it
runs, fetched once from the controller, cached on disk, and scored against each window.

Fetching happens on the telemetry thread, never the frame loop. A missing card (404) or
an unreachable controller is asked again after ``retry_s``, then after twice as long each
time up to ``retry_max_s``: a version pushed without a card costs a handful of requests a
day, not one a minute. When the controller announces the card (``card`` on ``commands``,
sent when it is uploaded), the next lookup (the next telemetry window, the first time the
card is used) asks at once instead of waiting out its gap. Until then windows carry no
drift scores (``None``), which the controller reads as "no baseline", not "no drift". A
card once fetched is kept on disk and never asked for again (a card describes one
immutable version).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.shared.card import ModelCard, comparable, drift_scores
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import TransportError
from edgefleet.shared.protocol import TelemetryWindow
from pydantic import ValidationError

log = logging.getLogger(__name__)


class BaselineCache:
    def __init__(
        self,
        http: ControllerHttp,
        folder: Path,
        *,
        retry_s: float = 60.0,  # seconds before asking again after the first miss
        retry_max_s: float = 6 * 3600.0,  # seconds: the longest gap between two asks
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http, self.folder, self.retry_s, self.clock = http, folder, retry_s, clock
        self.retry_max_s = retry_max_s
        self._cards: dict[tuple[str, str], ModelCard] = {}
        self._next_try: dict[tuple[str, str], float] = {}
        self._misses: dict[tuple[str, str], int] = {}
        # cards the controller announced: asked at the next lookup whatever the gap. Added
        # on paho's thread, taken on the telemetry thread before it asks, so one that
        # arrives during an ask brings another ask.
        self._announced: set[tuple[str, str]] = set()

    def announced(self, model: str, version: str) -> None:
        """The controller has the card of ``model`` ``version`` now. Safe from paho's thread."""
        if (model, version) not in self._cards:  # a card never changes: one is enough
            self._announced.add((model, version))

    def _path(self, model: str, version: str) -> Path:
        return self.folder / model / f"{version}.json"

    def get(self, model: str | None, version: str | None) -> ModelCard | None:
        if not model or not version:
            return None
        key = (model, version)
        if key in self._cards:
            return self._cards[key]
        card = self._from_disk(model, version)
        if card is None and self._due(key):
            card = self._fetch(model, version)
            if card is None:
                misses = self._misses[key] = self._misses.get(key, 0) + 1
                wait = min(self.retry_max_s, self.retry_s * 2 ** (misses - 1))
                self._next_try[key] = self.clock() + wait
        if card is not None:
            self._cards[key] = card
        return card

    def _due(self, key: tuple[str, str]) -> bool:
        if key in self._announced:
            self._announced.discard(key)
            return True
        return self.clock() >= self._next_try.get(key, float("-inf"))

    def _from_disk(self, model: str, version: str) -> ModelCard | None:
        try:
            return ModelCard.model_validate_json(self._path(model, version).read_bytes())
        except (OSError, ValidationError):
            return None

    def _fetch(self, model: str, version: str) -> ModelCard | None:
        try:
            answer = self.http.request("GET", f"/v1/models/{model}/versions/{version}/card")
        except TransportError as e:
            log.warning("no drift baseline for %s %s yet: %s", model, version, e.reason)
            return None
        if answer.status != 200:
            log.info("no model card for %s %s (HTTP %d)", model, version, answer.status)
            return None
        try:
            card = ModelCard.model_validate_json(answer.body)
        except ValidationError:
            log.warning("the model card of %s %s is malformed: ignored", model, version)
            return None
        write_bytes(self._path(model, version), card.to_bytes())
        log.info("drift baseline for %s %s: %d detections", model, version, card.detections)
        return card


def with_drift(window: TelemetryWindow, card: ModelCard | None) -> TelemetryWindow:
    """The window with PSI, Jensen-Shannon and Wasserstein-1 against ``card`` filled in."""
    if card is None or not comparable(card, window.confidence_edges):
        return window  # a card counted another way: no drift rather than a false one
    scores = drift_scores(card.confidence_counts, window.confidence_counts, card.confidence_edges)
    if not scores:
        return window
    return window.model_copy(
        update={
            "drift_psi": scores["psi"],
            "drift_js": scores["js"],
            "drift_wasserstein": scores["wasserstein"],
        }
    )
