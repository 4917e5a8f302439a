"""Webhooks: POST one JSON document per alert change, a few attempts, never raising."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)


class WebhookNotifier:
    def __init__(
        self, urls: Sequence[str], *, timeout_s: float = 5.0, attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:  # fmt: skip
        self.urls = list(urls)
        self.timeout_s, self.attempts, self.backoff_s = timeout_s, attempts, backoff_s
        self.sent = 0
        self.failed = 0

    def send(self, body: dict[str, Any]) -> None:
        for url in self.urls:
            if self._post(url, body):
                self.sent += 1
            else:
                self.failed += 1

    def _post(self, url: str, body: dict[str, Any]) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                r = httpx.post(url, json=body, timeout=self.timeout_s)
            except httpx.HTTPError as e:
                reason = str(e) or type(e).__name__
            else:
                if r.is_success:
                    return True
                reason = f"HTTP {r.status_code}"
            log.warning("webhook %s attempt %d/%d failed: %s", url, attempt, self.attempts, reason)
            time.sleep(self.backoff_s * attempt)
        return False
