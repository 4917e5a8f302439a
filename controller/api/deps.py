"""Dependencies of the routes, and the one place EdgefleetErrors become HTTP errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from edgefleet.controller.detector_check import NotADetectorError
from edgefleet.controller.plans import PlanExistsError
from edgefleet.controller.registry import VersionExistsError
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import TokenExistsError, find_token, rank
from edgefleet.shared.errors import EdgefleetError, NotFoundError, TransportError
from fastapi import Depends, HTTPException, Request
from sqlmodel import Session


async def get_services(request: Request) -> Services:
    # async: an attribute read; a plain def would cost every request a trip to the
    # threadpool (FastAPI runs sync dependencies there).
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with Session(services.engine) as session:
        yield session


# scope="function": the session (and its pooled connection) is closed as soon as the route
# returns, before the response is sent, so a slow client never holds a connection. FastAPI
# runs that close on a thread outside the request threadpool's limit, so a full threadpool
# cannot keep a connection from coming back (the 50-device deadlock).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def status_for(error: EdgefleetError) -> int:
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, (VersionExistsError, TokenExistsError, PlanExistsError)):
        return 409
    if isinstance(error, TransportError):
        return 503
    if isinstance(error, NotADetectorError):
        return 422
    return 400


def one_line(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def http_errors() -> Iterator[None]:
    """Turn an EdgefleetError raised inside a route into ``{"detail": one line}``."""
    try:
        yield
    except EdgefleetError as e:
        raise HTTPException(status_for(e), one_line(e.reason)) from e


# --- who is calling: API tokens (controller/tokens.py) -----------------------------------

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACTOR_HEADER = "X-Edgefleet-Actor"


@dataclass(frozen=True)
class Caller:
    name: str  # the token's name; with auth off, the X-Edgefleet-Actor header or "unknown"
    role: str  # viewer | operator | admin
    authenticated: bool


def _caller(request: Request, services: Services, session: Session) -> Caller:
    if not getattr(services.settings, "auth", False):
        actor = " ".join(request.headers.get(ACTOR_HEADER, "").split())[:128]
        return Caller(actor or "unknown", "admin", authenticated=False)
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise HTTPException(
            401,
            "this controller requires an API token: set EDGEFLEET_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = find_token(session, secret.strip())
    if row is None:
        raise HTTPException(
            401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(row.name, row.role, authenticated=True)


def get_caller(request: Request, services: ServicesDep, session: SessionDep) -> Caller:
    return _caller(request, services, session)


CallerDep = Annotated[Caller, Depends(get_caller)]


def _check_role(caller: Caller, role: str) -> None:
    if rank(caller.role) < rank(role):
        raise HTTPException(
            403, f"token {caller.name!r} has the {caller.role} role; this needs {role}"
        )


def require(role: str) -> Any:
    """A dependency (``dependencies=[require("admin")]``) that answers 401 / 403."""

    def check(caller: CallerDep) -> Caller:
        _check_role(caller, role)
        return caller

    return Depends(check)


def _guard_writes(request: Request, services: ServicesDep, session: SessionDep) -> None:
    if request.method not in READ_METHODS:
        _check_role(_caller(request, services, session), "operator")


# For a whole router: reads stay open, every write needs an operator (or admin) token.
WRITES_NEED_OPERATOR = Depends(_guard_writes)


def actor_name(caller: CallerDep) -> str:
    return caller.name


# The audit log's actor: the token's name (auth on) or the X-Edgefleet-Actor header.
ActorNameDep = Annotated[str, Depends(actor_name)]


def ensure_revoked_devices(services: Services) -> Any:
    """The controller's :class:`RevokedDevices` (shared by the API and the MQTT ingest),
    built and read once when the app is built, never on a request."""
    if services.revoked is None:
        from edgefleet.controller.enrollment import RevokedDevices

        services.revoked = RevokedDevices(services.engine)
        services.revoked.load()
    return services.revoked


def revoked_devices(services: Services) -> Any:
    return services.revoked if services.revoked is not None else ensure_revoked_devices(services)
