"""TLS settings of the agent's broker connection (mTLS with the device certificate).

The broker's certificate must chain to ``ca`` and name the host the agent dials; the
agent proves its identity with ``cert`` / ``key`` (CN = device id), which ``edgefleet
enroll`` obtained. Nothing here is loaded at import time.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsSettings:
    ca: Path  # PEM: the device CA that signed the broker's certificate
    cert: Path  # PEM: this device's certificate
    key: Path  # PEM: its private key (made on the device, never sent)

    def context(self) -> ssl.SSLContext:
        """Verify the server against ``ca`` and its host name; present our cert."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx
