"""The device-credential cache: a poll costs no database read, a replaced credential stops
working within the stated ttl, and a revoked one is reported as revoked."""

from __future__ import annotations

from edgefleet.controller.device_credentials import MISS, DeviceCredentials, DeviceOf
from edgefleet.controller.models.devices import UploadCredential
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import digest
from edgefleet.shared.protocol import utcnow
from sqlmodel import Session


def _store(services: Services, device: str, secret: str, *, revoked: bool = False) -> None:
    with Session(services.engine) as session:
        row = session.get(UploadCredential, device) or UploadCredential(device_id=device, sha256="")
        row.sha256, row.revoked_at = digest(secret), utcnow() if revoked else None
        session.add(row)
        session.commit()


def test_answers_are_cached_for_ttl_then_read_again(services: Services) -> None:
    now = [0.0]
    creds = DeviceCredentials(services.engine, ttl=30.0, clock=lambda: now[0])
    _store(services, "cam-1", "efu_old")
    assert creds.looks_like("efu_old") and not creds.looks_like("eft_operator")
    assert creds.cached("efu_old") is MISS
    assert creds.lookup("efu_old") == DeviceOf("cam-1", revoked=False)
    assert creds.cached("efu_old") == DeviceOf("cam-1", revoked=False)  # no database read
    assert creds.lookup("efu_nobody") is None
    assert creds.cached("efu_nobody") is None  # an unknown secret is cached as unknown

    _store(services, "cam-1", "efu_new")  # re-enrolled: the old credential is replaced
    now[0] = 29.0
    assert creds.lookup("efu_old") == DeviceOf("cam-1", revoked=False)  # within the ttl
    now[0] = 31.0
    assert creds.lookup("efu_old") is None  # the stated bound: ttl seconds at most
    assert creds.lookup("efu_new") == DeviceOf("cam-1", revoked=False)

    _store(services, "cam-1", "efu_new", revoked=True)
    now[0] = 62.0
    assert creds.lookup("efu_new") == DeviceOf("cam-1", revoked=True)
