"""/healthz and /v1/stats: liveness, and the ingest's counters."""

from __future__ import annotations

from typing import Any

from edgefleet.controller.api.deps import ServicesDep
from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/v1/stats")
def stats(services: ServicesDep) -> dict[str, Any]:
    """MQTT link state and ingest counters (received / malformed / failed per channel)."""
    return {
        "mqtt": {"connected": bool(getattr(services.link, "connected", False))},
        "ingest": services.stats.snapshot(),
    }
