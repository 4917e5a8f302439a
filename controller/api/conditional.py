"""Conditional GET for JSON answers (RFC 9110 section 13.1.2): strong ETags, 304 on a match.

Devices poll a few small documents (sampling settings, model cards); an unchanged one
then costs headers only, and the device keeps what it has.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def etag_of(doc: Any) -> str:
    """A strong ETag for a JSON-able document: the same content, the same tag."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return f'"{hashlib.sha256(canonical).hexdigest()[:32]}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Does ``If-None-Match`` name ``etag`` (or ``*``)? Weak prefixes compare equal for GET."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
