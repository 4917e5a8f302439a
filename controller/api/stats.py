"""/healthz (open: liveness) and /v1/stats (a viewer token): the ingest's counters."""

from __future__ import annotations

from typing import Any

from edgefleet.controller.api.deps import ServicesDep, require
from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/v1/stats", dependencies=[require("viewer")])
def stats(services: ServicesDep) -> dict[str, Any]:
    """MQTT link state and ingest counters (received / malformed / failed per channel)."""
    return {
        "mqtt": {"connected": bool(getattr(services.link, "connected", False))},
        "ingest": services.stats.snapshot(),
    }
