"""Ed25519 signing keys, generated on first use and kept as files.

SKELETON KEY HANDLING: every key of both repositories (root, targets, models, snapshot,
timestamp of the image repository; root, targets, snapshot, timestamp of the director)
lives in ``DATA/keys/`` on the controller, unencrypted. That is fine for the embedded demo
and wrong for production: root and targets keys belong offline (or on the publisher's
machine for ``models``), only snapshot / timestamp / director keys are meant to be online.
The Trust issue moves them out; until then, anyone who reads ``DATA/keys/`` can sign models.

Each key is two files: ``<name>.pem`` (PKCS#8 private key, mode 0600) and
``<name>.pub.json`` (the public key as TUF writes it, with its key id), so the public half
can be handed out or audited without touching the private one.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import ConfigError
from securesystemslib.signer import CryptoSigner, SSlibKey

log = logging.getLogger(__name__)

_KEY_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class KeyStore:
    """Loads or creates named Ed25519 signers in one folder (``DATA/keys/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.pem").exists()

    def store(self, name: str, signer: CryptoSigner) -> None:
        """Write ``signer`` as ``name`` (replacing the key of that name: rotation)."""
        self._write(name, signer)

    def signer(self, name: str) -> CryptoSigner:
        """The signer called ``name``; generated and stored the first time it is asked for."""
        if not _KEY_NAME.match(name):
            raise ConfigError(f"invalid key name {name!r}")
        pem = self.folder / f"{name}.pem"
        if pem.exists():
            return load_signer(pem, self.folder / f"{name}.pub.json")
        return self._generate(name)

    def _generate(self, name: str) -> CryptoSigner:
        signer = CryptoSigner.generate_ed25519()
        self._write(name, signer)
        log.warning("generated signing key %s in %s (demo: every key is online)", name,
                    self.folder)  # fmt: skip
        return signer

    def _write(self, name: str, signer: CryptoSigner) -> None:
        if not _KEY_NAME.match(name):
            raise ConfigError(f"invalid key name {name!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        pem = self.folder / f"{name}.pem"
        write_bytes(pem, signer.private_bytes)
        pem.chmod(0o600)
        pub = json.dumps({"keyid": signer.public_key.keyid, **signer.public_key.to_dict()})
        write_bytes(self.folder / f"{name}.pub.json", pub.encode())


def load_signer(pem: Path, pub_json: Path) -> CryptoSigner:
    """Load a signer from its PEM file, checked against its public JSON when present."""
    try:
        private_key = load_pem_private_key(pem.read_bytes(), None)
        public_key = None
        if pub_json.exists():
            data = json.loads(pub_json.read_text())
            keyid = data.pop("keyid")
            public_key = SSlibKey.from_dict(keyid, data)
        return CryptoSigner(private_key, public_key)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot load signing key {pem}: {e}") from e
