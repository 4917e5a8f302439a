"""What the fleet's device certificates look like from the database: read by ``pki status``
(controller/pki.py), written by enrollment and renewal (controller/enrollment.py)."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from edgefleet.controller.models.devices import DeviceCert, DeviceRevocation
from sqlmodel import Session, select


def device_cert_expiries(session: Session) -> dict[str, datetime]:
    """Each unrevoked device's latest certificate expiry (renewals add certificates)."""
    revoked = set(session.exec(select(DeviceRevocation.device_id)).all())
    latest: dict[str, datetime] = {}
    for row in session.exec(select(DeviceCert)).all():
        if row.device_id in revoked:
            continue
        try:
            expires = x509.load_pem_x509_certificate(row.pem.encode()).not_valid_after_utc
        except ValueError:
            continue
        latest[row.device_id] = max(expires, latest.get(row.device_id, expires))
    return latest
