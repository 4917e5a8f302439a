"""Dependencies of the routes: the database session, the services, who is calling.

EdgefleetErrors become HTTP errors in one exception handler (controller/app.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from edgefleet.controller.device_credentials import MISS, DeviceCredentials, DeviceOf
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import find_token, rank
from edgefleet.shared.errors import ForbiddenError
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
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


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- who is calling: API tokens (controller/tokens.py) or a device's own credential -----

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACTOR_HEADER = "X-Edgefleet-Actor"
DEVICE = "device"  # the role of a caller holding an enrolled device's credential (efu_...)


@dataclass(frozen=True)
class Caller:
    name: str  # the token's name, "device:<id>"; with auth off the X-Edgefleet-Actor header
    role: str  # viewer | operator | admin, or DEVICE (below every operator role)
    authenticated: bool
    device_id: str | None = None  # set for DEVICE callers


def _open(request: Request) -> Caller:
    """Auth off (--insecure-dev): everyone is admin; the actor is whatever they say."""
    actor = " ".join(request.headers.get(ACTOR_HEADER, "").split())[:128]
    return Caller(actor or "unknown", "admin", authenticated=False)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: Request) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorised("this controller requires an API token: set EDGEFLEET_TOKEN")
    return secret.strip()


def device_credentials(request: Request) -> DeviceCredentials:
    """The app's credential cache (create_app builds it)."""
    creds: DeviceCredentials = request.app.state.device_credentials
    return creds


def _device_caller(found: DeviceOf | None, services: Services) -> Caller:
    if found is None:
        raise _unauthorised("unknown device credential (re-enroll the device)")
    if found.revoked or found.device_id in revoked_devices(services):
        raise ForbiddenError(f"device {found.device_id} is revoked")
    return Caller(f"device:{found.device_id}", DEVICE, True, found.device_id)


def _token_caller(session: Session, secret: str) -> Caller:
    row = find_token(session, secret)
    if row is None:
        raise _unauthorised("unknown or revoked API token")
    return Caller(row.name, row.role, authenticated=True)


def _caller(request: Request, services: Services, session: Session) -> Caller:
    if not getattr(services.settings, "auth", False):
        return _open(request)
    secret = _bearer(request)
    creds = device_credentials(request)
    if creds.looks_like(secret):
        return _device_caller(creds.lookup(secret), services)
    return _token_caller(session, secret)


def get_caller(request: Request, services: ServicesDep, session: SessionDep) -> Caller:
    return _caller(request, services, session)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_caller_async(request: Request, services: ServicesDep) -> Caller:
    """:func:`get_caller` for the async routes every device polls (/tuf): a known device
    credential is answered from memory; the database is read on a worker thread."""
    if not getattr(services.settings, "auth", False):
        return _open(request)
    secret = _bearer(request)
    creds = device_credentials(request)
    if creds.looks_like(secret):
        hit = creds.cached(secret)
        found = await run_in_threadpool(creds.lookup, secret) if hit is MISS else hit
        return _device_caller(found if isinstance(found, DeviceOf) else None, services)

    def by_token() -> Caller:
        with Session(services.engine) as session:
            return _token_caller(session, secret)

    return await run_in_threadpool(by_token)


def check_role(caller: Caller, role: str) -> None:
    """403 unless the caller's role is at least ``role`` (a device is below every role)."""
    if rank(caller.role) < rank(role):
        if caller.role == DEVICE:
            raise ForbiddenError(f"{caller.name}: a device credential cannot do this")
        raise ForbiddenError(f"token {caller.name!r} has the {caller.role} role; this needs {role}")


def require(role: str) -> Any:
    """A dependency (``dependencies=[require("admin")]``) that answers 401 / 403."""

    def check(caller: CallerDep) -> Caller:
        check_role(caller, role)
        return caller

    return Depends(check)


def device_or(role: str, *, own: bool = False) -> Any:
    """Any enrolled, unrevoked device (only the path's ``device_id`` with ``own``), or a
    token of at least ``role``: the reads the agent makes with its own credential."""

    def check(request: Request, caller: CallerDep) -> Caller:
        if caller.role == DEVICE:
            if own and caller.device_id != request.path_params.get("device_id"):
                raise ForbiddenError(f"{caller.name} may read only its own settings")
            return caller
        check_role(caller, role)
        return caller

    return Depends(check)


def _guard(request: Request, services: ServicesDep, session: SessionDep) -> None:
    needed = "viewer" if request.method in READ_METHODS else "operator"
    check_role(_caller(request, services, session), needed)


# For a whole router: reads need a viewer token, writes an operator (or admin) one.
VIEWER_READS_OPERATOR_WRITES = Depends(_guard)
# The name it had while reads were open; kept so routers added on other branches still
# get the guard (it now guards their reads too).
WRITES_NEED_OPERATOR = VIEWER_READS_OPERATOR_WRITES


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
