"""Offer the TensorRT plans this device builds to the controller.

Building an engine takes minutes on a Jetson; a fleet of identical devices should build it
once. After a build (``runtime/loader.py``) the plan goes to ``POST /v1/devices/{id}/plans``
with the device's upload credential, in a background thread so the swap never waits on it.
The controller keeps it pending until an operator approves it (a plan is native GPU code:
one device alone must not decide what the others run); once signed, every device of that
fingerprint is given it instead of building its own. A failed offer is logged and dropped:
sharing saves time, it is never needed for the device itself.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import quote

from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.shared.errors import TransportError

from edgefleet.runtime.engine_cache import EngineKey

log = logging.getLogger(__name__)


class PlanSharer:
    def __init__(self, http: ControllerHttp, upload_token: str | None = None) -> None:
        self.http, self.upload_token = http, upload_token
        self.threads: list[threading.Thread] = []

    def offer(self, plan: Path, key: EngineKey) -> None:
        """Upload in the background (the caller is about to swap)."""
        t = threading.Thread(target=self.upload, args=(plan, key), name="plan-share", daemon=True)
        self.threads.append(t)
        t.start()

    def upload(self, plan: Path, key: EngineKey) -> int | None:
        """One attempt; the plan's id at the controller, or None (logged)."""
        try:
            data = plan.read_bytes()
        except OSError as e:
            log.warning("cannot share plan %s: %s", plan.name, e.strerror or e)
            return None
        fields = {
            "compute_capability": key.compute_capability,
            "tensorrt": key.tensorrt,
            "precision": key.precision,
            "onnx_sha256": key.onnx_sha256,
            "file": (plan.name, data, "application/octet-stream"),
        }
        headers = {"Authorization": f"Bearer {self.upload_token}"} if self.upload_token else {}
        path = f"/v1/devices/{quote(self.http.device_id, safe='')}/plans"
        try:
            answer = self.http.request("POST", path, fields=fields, headers=headers)
        except TransportError as e:
            log.warning("cannot share plan %s: %s", plan.name, e.reason)
            return None
        if answer.status != 200:
            log.warning("controller refused plan %s: %s", plan.name, answer.detail())
            return None
        plan_id = answer.json().get("id")
        log.info("offered plan %s to the controller (plan %s, pending approval)", plan.name,
                 plan_id)  # fmt: skip
        return int(plan_id) if isinstance(plan_id, int) else None
