"""The FastAPI application, built from :class:`Services` (no globals)."""

from __future__ import annotations

from collections.abc import Callable

from edgefleet.controller.api import (
    audit,
    devices,
    enroll,
    gate,
    models,
    pins,
    plans,
    publish,
    rollouts,
    stages,
    stats,
    tokens,
    tuf,
)
from edgefleet.controller.api.deps import (
    VIEWER_READS_OPERATOR_WRITES,
    ensure_revoked_devices,
    one_line,
    require,
)
from edgefleet.controller.api.files import FileServing
from edgefleet.controller.api.web import include_data_loop
from edgefleet.controller.device_credentials import DeviceCredentials
from edgefleet.controller.enrollment import upload_device
from edgefleet.controller.limits import RequestLimits
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import find_token
from edgefleet.shared.errors import EdgefleetError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlmodel import Session

from edgefleet import __version__


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return one_line("bad request: " + "; ".join(parts))


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _validation_detail(exc)}, status_code=400)


async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """Any EdgefleetError leaving a route: its class's ``http_status``, its reason as
    ``{"detail": one line}`` (the tree and the statuses: edgefleet/shared/errors.py)."""
    assert isinstance(exc, EdgefleetError)
    return JSONResponse({"detail": one_line(exc.reason)}, status_code=exc.http_status)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="edgefleet controller", version=__version__)
    app.state.services = services
    ensure_revoked_devices(services)  # read once here, refreshed off the request path
    app.state.device_credentials = DeviceCredentials(services.engine)  # devices' own Bearer
    settings = services.settings
    app.state.files = FileServing(
        settings.data_dir,
        max_downloads=settings.max_downloads,
        retry_after=settings.download_retry_after,
        offload_prefix=settings.offload_prefix,
    )
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(EdgefleetError, domain_error)
    for module in (stats, tuf):  # their routes carry their own checks (/healthz is open)
        app.include_router(module.router)
    # With auth on (Settings.auth): reads need a viewer token, writes an operator one,
    # tokens an admin one; /tuf wants an enrolled device or an operator (docs/TRUST.md).
    for module in (models, publish, gate, devices, rollouts, pins, plans, stages):
        app.include_router(module.router, dependencies=[VIEWER_READS_OPERATOR_WRITES])
    app.include_router(plans.device_router)  # a device shares a plan with its own credential
    app.include_router(audit.router, dependencies=[require("viewer")])
    app.include_router(tokens.router)
    app.include_router(enroll.router)  # its routes carry their own role checks
    include_data_loop(app)  # cards, samples, drift, alerts, /metrics, the dashboard
    # Outermost: a too-large body or a flood of credential requests costs no route work.
    holds = _holds_credential(services) if services.settings.auth else None
    app.add_middleware(RequestLimits, upload_max=services.settings.max_upload_bytes,
                       holds_credential=holds)  # fmt: skip
    return app


def _holds_credential(services: Services) -> Callable[[str], bool]:
    """Whether a bearer secret is a live API token or device upload credential: the check
    uploads pass before their body is read (controller/limits.py)."""

    def check(secret: str) -> bool:
        with Session(services.engine) as session:
            return find_token(session, secret) is not None or bool(upload_device(session, secret))

    return check
