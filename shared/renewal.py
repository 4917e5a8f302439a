"""What a device signs to renew its certificate (``POST /v1/devices/{id}/certificate``).

The agent proves it holds the key of its current, still valid certificate by signing
(ECDSA P-256, SHA-256) this message with that key; the controller checks it with the
certificate's public key. The new CSR's digest and the time are inside, so a signature
only ever vouches for that CSR, for a few minutes (:data:`MAX_SKEW_S`).
"""

from __future__ import annotations

import hashlib

RENEW_CONTEXT = b"edgefleet certificate renewal v1"  # never valid as another message
MAX_SKEW_S = 300  # seconds between the device's signed_at and the controller's clock
RENEW_FRACTION = 1 / 3  # the agent renews when less than this share of its lifetime is left


def renewal_message(device_id: str, signed_at: str, csr_pem: bytes) -> bytes:
    """The bytes the device's current key signs: context, id, time, sha256 of the CSR."""
    digest = hashlib.sha256(csr_pem).hexdigest()
    return b"\n".join((RENEW_CONTEXT, device_id.encode(), signed_at.encode(), digest.encode()))
