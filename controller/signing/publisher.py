"""The publisher's offline signing of the ``models`` role, both ends of it.

On the publisher's machine (``edgefleet model push NAME FILE --key FILE``):
:func:`sign_models_update` takes the controller's current ``models`` metadata, checks that
it carries a valid signature of the publisher's own key (so a controller cannot slip
changed targets under the publisher's signature), adds one TargetFile with the fields the
controller would write, bumps version and expiry and signs.

On the controller (``POST /v1/models/{name}/signed``): :func:`check_models_update`
verifies the uploaded metadata against the delegation's keys and threshold in the
``targets`` role, requires version = current + 1, no existing target changed or dropped,
and exactly one new target whose length and sha256 are those of the uploaded bytes.
Then :func:`install_models_update` publishes it with a new snapshot and timestamp.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from edgefleet.controller.signing._chain import (
    DELEGATED_LIFETIME,
    MetadataChain,
    metadata_filename,
)
from edgefleet.controller.signing.targets import MODELS_ROLE, model_target_path, target_custom
from edgefleet.shared.errors import ArtifactError, TrustError
from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

MAX_METADATA_BYTES = 4 * 1024 * 1024  # an upload of models metadata larger than this is refused


def parse_models(data: bytes) -> Metadata[Targets]:
    try:
        md = Metadata[Targets].from_bytes(data)
    except (DeserializationError, ValueError, TypeError) as e:
        raise TrustError(f"models metadata unreadable: {_first_line(e)}") from e
    if not isinstance(md.signed, Targets):
        raise TrustError(f"expected targets metadata for the models role, got {md.signed.type}")
    return md


# -- the publisher's machine -------------------------------------------------------------


def sign_models_update(
    current: bytes,
    signer: Signer,
    *,
    name: str,
    version: str,
    release: int,
    length: int,
    sha256: str,
    now: datetime | None = None,
) -> bytes:
    """The next ``models`` metadata, with ``artifact``'s target added, signed by ``signer``."""
    md = parse_models(current)
    keyid = signer.public_key.keyid
    signature = md.signatures.get(keyid)
    refused = TrustError(
        "the controller's models metadata is not signed by this key: wrong --key, or "
        "the controller's copy was altered"
    )
    if signature is None:
        raise refused
    try:
        signer.public_key.verify_signature(signature, md.signed_bytes)
    except Exception as e:  # securesystemslib raises its own errors for a bad signature
        raise refused from e
    path = model_target_path(name, version, "onnx")
    if path in md.signed.targets:
        raise ArtifactError(f"{path} is already signed", model=name)
    custom = target_custom(name, version, release)
    md.signed.targets[path] = TargetFile(length, {"sha256": sha256}, path, {"custom": custom})
    md.signed.version += 1
    md.signed.expires = (now or datetime.now(timezone.utc)) + DELEGATED_LIFETIME
    md.signatures.clear()
    md.sign(signer)
    return md.to_bytes(JSONSerializer(compact=False))


# -- the controller ----------------------------------------------------------------------


def check_models_update(
    chain: MetadataChain,
    new: Metadata[Targets],
    *,
    target_path: str,
    length: int,
    sha256: str,
    custom: dict[str, Any],
    now: datetime,
) -> None:
    """Refuse (TrustError / ArtifactError, one line) anything but the one expected change."""
    delegator = chain.targets("targets")
    try:
        delegator.verify_delegate(MODELS_ROLE, new.signed_bytes, new.signatures)
    except UnsignedMetadataError as e:
        raise TrustError(
            f"models metadata not signed by the delegation's keys: {_first_line(e)}"
        ) from e
    old = chain.targets(MODELS_ROLE)
    if new.signed.version != old.version + 1:
        raise TrustError(
            f"models metadata version {new.signed.version} must be {old.version + 1} "
            "(current + 1): replayed or out of date, fetch and sign again"
        )
    if new.signed.expires <= now:
        raise TrustError(f"models metadata expired at {new.signed.expires.isoformat()}")
    if new.signed.delegations is not None:
        raise TrustError("models metadata may not delegate further")
    for path, target in old.targets.items():
        mine = new.signed.targets.get(path)
        if mine is None or mine.to_dict() != target.to_dict():
            raise TrustError(f"models metadata changes or drops the published target {path}")
    added = set(new.signed.targets) - set(old.targets)
    if added != {target_path}:
        raise TrustError(
            f"models metadata must add exactly {target_path}; it adds {sorted(added) or 'none'}"
        )
    target = new.signed.targets[target_path]
    if target.length != length or target.hashes != {"sha256": sha256}:
        raise ArtifactError(
            f"signed length/sha256 of {target_path} do not match the uploaded bytes "
            f"({length} bytes, sha256 {sha256[:12]})"
        )
    if target.custom != custom:
        raise ArtifactError(
            f"signed custom fields of {target_path} must be {custom}, got {target.custom}"
        )


def install_models_update(chain: MetadataChain, new: Metadata[Targets], now: datetime) -> None:
    """Write the publisher-signed ``models`` as is, then a new snapshot and timestamp."""
    name = metadata_filename(MODELS_ROLE, new.signed.version)
    chain.files.write(name, new.to_bytes(JSONSerializer(compact=False)))
    chain.md[MODELS_ROLE] = new
    chain.publish_snapshot(now)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


__all__ = [
    "MAX_METADATA_BYTES",
    "check_models_update",
    "install_models_update",
    "parse_models",
    "sign_models_update",
]
