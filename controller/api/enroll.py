"""/v1/enroll: devices enroll with a one-time token; operators make tokens and revoke.

``POST /v1/enroll`` needs no API token: the one-time enrollment token is the credential.
``POST /v1/devices/{id}/certificate`` (renewal) needs none either: the device signs it with
its current certificate's key.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

from edgefleet.controller import enrollment
from edgefleet.controller.api.deps import (
    ActorNameDep,
    ServicesDep,
    SessionDep,
    require,
    revoked_devices,
)
from edgefleet.controller.pki import DevicePki
from edgefleet.shared.errors import ForbiddenError, ProtocolError
from fastapi import APIRouter
from pydantic import BaseModel, Field

router = APIRouter(prefix="/v1", tags=["enrollment"])


class EnrollTokenCreate(BaseModel):
    device_id: str = Field(max_length=64)
    ttl_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)  # seconds


class EnrollTokenCreated(BaseModel):
    device_id: str
    token: str  # shown once
    expires_s: int


class EnrollRequest(BaseModel):
    token: str = Field(max_length=128)
    csr: str = Field(max_length=16_384)  # PEM


class EnrollAnswer(BaseModel):
    device_id: str
    cert: str  # PEM, CN = device id
    ca: str  # PEM, the device CA (it also signed the broker's certificate)
    image_root: str  # JSON: pin as trust/image-root.json
    director_root: str  # JSON: pin as trust/director-root.json
    upload_token: str  # the device's sample-upload credential (Bearer), shown once


class RenewRequest(BaseModel):
    cert: str = Field(max_length=16_384)  # PEM: the device's current, still valid certificate
    csr: str = Field(max_length=16_384)  # PEM: for its new key
    signed_at: str = Field(max_length=64)  # ISO 8601, within 5 minutes of the controller
    signature: str = Field(max_length=512)  # base64 DER ECDSA by the current key


class RenewAnswer(BaseModel):
    device_id: str
    cert: str  # PEM, CN = device id, for the CSR's key
    ca: str  # PEM, the device CA


class Revoked(BaseModel):
    device_id: str
    serials: list[str]
    session_kicked: bool = False  # the broker was asked to close its live MQTT session


def _pki(services: ServicesDep) -> DevicePki:
    return DevicePki(services.settings.data_dir / "pki")


@router.post("/enroll-tokens", response_model=EnrollTokenCreated,
             dependencies=[require("operator")])  # fmt: skip
def create_enroll_token(
    body: EnrollTokenCreate, session: SessionDep, actor: ActorNameDep
) -> EnrollTokenCreated:
    token = enrollment.create_enroll_token(
        session, body.device_id, actor, timedelta(seconds=body.ttl_s)
    )
    return EnrollTokenCreated(device_id=body.device_id, token=token, expires_s=body.ttl_s)


@router.post("/enroll", response_model=EnrollAnswer)
def enroll(body: EnrollRequest, session: SessionDep, services: ServicesDep) -> EnrollAnswer:
    done = enrollment.enroll(
        session, _pki(services), services.signing, body.token, body.csr.encode()
    )
    return EnrollAnswer(device_id=done.device_id, cert=done.cert_pem, ca=done.ca_pem,
                        image_root=done.image_root, director_root=done.director_root,
                        upload_token=done.upload_token)  # fmt: skip


@router.post("/devices/{device_id}/certificate", response_model=RenewAnswer)
def renew_certificate(
    device_id: str, body: RenewRequest, session: SessionDep, services: ServicesDep
) -> RenewAnswer:
    """A device renews its own certificate before it expires. No API token: the credential
    is the current certificate's key, which signed the request (shared/renewal.py)."""
    if device_id in revoked_devices(services):
        raise ForbiddenError(f"device {device_id} is revoked")
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except ValueError:
        raise ProtocolError("signature is not base64") from None
    proof = enrollment.Proof(body.cert.encode(), body.csr.encode(), body.signed_at, signature,
                             datetime.now(timezone.utc))  # fmt: skip
    done = enrollment.renew_certificate(session, _pki(services), device_id, proof)
    return RenewAnswer(device_id=done.device_id, cert=done.cert_pem, ca=done.ca_pem)


@router.post("/devices/{device_id}/revoke", response_model=Revoked,
             dependencies=[require("admin")])  # fmt: skip
def revoke(
    device_id: str, session: SessionDep, services: ServicesDep, actor: ActorNameDep
) -> Revoked:
    serials = enrollment.revoke_device(session, _pki(services), device_id, actor)
    revoked_devices(services).add(device_id)
    kick = getattr(services.link, "kick", None)  # MqttLink: the broker drops its session now
    kicked = bool(kick(device_id)) if kick is not None else False
    return Revoked(device_id=device_id, serials=serials, session_kicked=kicked)
