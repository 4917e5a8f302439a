"""Database tables and the public shapes the REST API answers with, one module per
aggregate; ``base`` holds what they share. Import a name from its aggregate's module.

Importing this package (or any module in it) imports every aggregate, so that
``SQLModel.metadata`` holds every table (Alembic, foreign keys between aggregates).
"""

from edgefleet.controller.models import (
    alerts,
    audit,
    devices,
    pins,
    registry,
    rollouts,
    samples,
    telemetry,
    tokens,
    tuf,
)

__all__ = [
    "alerts",
    "audit",
    "devices",
    "pins",
    "registry",
    "rollouts",
    "samples",
    "telemetry",
    "tokens",
    "tuf",
]
