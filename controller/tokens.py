"""Operator API tokens: a role each, only the sha256 of the secret stored.

Roles are ordered: ``viewer`` < ``operator`` < ``admin``. A secret is shown once, when it
is created (``edgefleet token create``); the controller keeps ``sha256(secret)`` and
finds the token by that digest. Every create and revoke is written to the audit log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.tokens import ApiToken
from edgefleet.shared.errors import ConfigError, ConflictError, NotFoundError
from edgefleet.shared.protocol import utcnow
from sqlmodel import Session, col, select

ROLES = ("viewer", "operator", "admin")
# not a secret: a prefix that makes a leaked token easy to find for secret scanners
SECRET_PREFIX = "eft_"  # noqa: S105
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class TokenExistsError(ConflictError):
    """A token of that name exists already."""


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create_token(
    session: Session, name: str | None, role: str, actor: str, now: datetime | None = None
) -> tuple[ApiToken, str]:
    """Store a new token; returns the row and its secret (the only time it is seen)."""
    check_role(role)
    name = name or f"{role}-{secrets.token_hex(3)}"
    if not _NAME.match(name):
        raise ConfigError(f"bad token name {name!r}: letters, digits, . _ @ - (64 at most)")
    if session.exec(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise TokenExistsError(f"a token named {name!r} exists already")
    secret = new_secret()
    row = ApiToken(name=name, role=role, sha256=digest(secret), created_at=now or utcnow())
    session.add(row)
    session.add(AuditEntry(actor=actor, action="token-create", target=f"token:{name}",
                           detail={"role": role}))  # fmt: skip
    session.commit()
    session.refresh(row)
    return row, secret


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None (unknown or revoked)."""
    # .where() types as Any with sqlmodel's variadic Select under mypy, so the row is annotated
    row: ApiToken | None = session.exec(
        select(ApiToken).where(ApiToken.sha256 == digest(secret))
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_token(session: Session, name: str, actor: str) -> ApiToken:
    row: ApiToken | None = session.exec(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise NotFoundError(f"no token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.add(AuditEntry(actor=actor, action="token-revoke", target=f"token:{name}",
                               detail={"role": row.role}))  # fmt: skip
        session.commit()
        session.refresh(row)
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))).all())
