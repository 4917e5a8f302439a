"""The dashboard (static files, no build step) and the data-loop routers in one place."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response

WEB = Path(__file__).resolve().parent.parent / "web"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def root() -> Response:
    return RedirectResponse("/ui/")


@router.get("/ui/", include_in_schema=False)
def index() -> Response:
    return FileResponse(WEB / "index.html", media_type="text/html")


@router.get("/ui/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    path = WEB / name
    # Only the flat files shipped in web/: no paths, no dotfiles.
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type=_TYPES[path.suffix])


def include_data_loop(app: FastAPI) -> None:
    from edgefleet.controller.api import alerts, cards, drift, samples, sampling
    from edgefleet.controller.api.deps import VIEWER_READS_OPERATOR_WRITES, device_or, require
    from edgefleet.controller.metrics import registry_for
    from edgefleet.controller.metrics import router as metrics_router

    app.state.metrics_registry = registry_for(app.state.services)
    # Auth on: reads need a viewer token, writes an operator one; the reads an agent makes
    # (its version's card, its own sampling settings) take the device's credential too.
    app.include_router(cards.router, dependencies=[VIEWER_READS_OPERATOR_WRITES])
    app.include_router(cards.device_router, dependencies=[device_or("viewer")])
    app.include_router(sampling.router, dependencies=[VIEWER_READS_OPERATOR_WRITES])
    app.include_router(sampling.device_router, dependencies=[device_or("viewer", own=True)])
    app.include_router(samples.router)  # per route: uploads by devices, frames to operators
    for r in (drift.router, alerts.router, metrics_router):
        app.include_router(r, dependencies=[require("viewer")])
    app.include_router(router)  # the dashboard's static files: no data in them
