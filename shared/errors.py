"""The one exception tree of edgefleet.

    EdgefleetError
    ├── ConfigError            a config file or setting is missing or wrong
    ├── ProtocolError          a wire payload or topic is malformed / unknown schema
    ├── TrustError             signed metadata refused (bad signature, rollback, mismatch)
    ├── ArtifactError          a model file is corrupt, unreadable or does not fit
    ├── RuntimeBackendError    an inference backend could not load or run a model
    ├── TransportError         broker or controller unreachable, timeouts
    ├── NotFoundError          a named model, version, device or rollout does not exist
    ├── ForbiddenError         the caller is known but may not do this (role, revoked)
    └── ConflictError          the request collides with what exists (a name taken, a
                               rollout whose state refuses the action)

Foreign errors are wrapped ``from e``. Each error carries a one-line ``reason`` that is
safe to print to a user and optional context fields.

Each class also carries ``http_status``, the status the controller answers with when the
error leaves a route (one exception handler, controller/app.py): 400 unless a class says
otherwise (NotFoundError 404, ForbiddenError 403, ConflictError 409, TransportError 503).
A subclass raised at the source picks its status; nothing downstream inspects ``__cause__``.
"""

from __future__ import annotations

from typing import ClassVar


class EdgefleetError(Exception):
    """Base of every error edgefleet raises on purpose."""

    http_status: ClassVar[int] = 400  # what the controller's API answers with

    def __init__(
        self,
        reason: str,
        *,
        device_id: str | None = None,
        model: str | None = None,
        model_version: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id
        self.model = model
        self.model_version = model_version

    def __str__(self) -> str:
        return self.reason


class ConfigError(EdgefleetError):
    """A configuration file or setting is missing or invalid."""


class ProtocolError(EdgefleetError):
    """A message on the wire is malformed, too large, or of an unknown schema."""


class TrustError(EdgefleetError):
    """Signed metadata or an artifact failed verification; never install."""


class ArtifactError(EdgefleetError):
    """A model file is corrupt, unreadable, or does not fit this device."""


class RuntimeBackendError(EdgefleetError):
    """An inference backend failed to load, warm up or run a model."""


class TransportError(EdgefleetError):
    """A broker or HTTP endpoint is unreachable or timed out; usually worth a retry."""

    http_status: ClassVar[int] = 503


class NotFoundError(EdgefleetError):
    """A named model, version, device or rollout does not exist."""

    http_status: ClassVar[int] = 404


class ForbiddenError(EdgefleetError):
    """The caller is known but may not do this: a role too low, a revoked device, another
    device's data. (An unknown or missing credential is the controller's 401, not this.)"""

    http_status: ClassVar[int] = 403


class ConflictError(EdgefleetError):
    """The request collides with the current state: a name that exists already, or an
    action the object's state refuses."""

    http_status: ClassVar[int] = 409
