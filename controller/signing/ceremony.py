"""Offline key ceremonies of the image repository: ``keys init`` and ``keys rotate``.

``init_keys`` makes a repository whose root needs ``threshold`` of ``count`` root keys and
writes the offline keys (root keys, targets, the publisher's models key) to a folder of
their own, to be moved off the controller; ``DATA/keys/`` keeps only the online keys
(image snapshot / timestamp, the director's). ``rotate_key`` gives one role a new key:
a new root, signed by a threshold of the old root keys (and by the new ones when root
itself rotates), then the role re-signed with its new key. Agents follow the new root
and from then on refuse metadata signed with the old key.

Run both with the controller stopped: its running repository would keep signing with
the keys it loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from edgefleet.controller.signing._chain import TOP_LEVEL, MetadataChain, lifetime
from edgefleet.controller.signing.image_repo import ONLINE
from edgefleet.controller.signing.keys import KeyStore
from edgefleet.controller.signing.repositories import TufRepositories, utc_now
from edgefleet.controller.signing.storage import FolderFiles
from edgefleet.controller.signing.targets import MODELS_PATHS, MODELS_ROLE
from edgefleet.shared.errors import ConfigError, TrustError
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Root

ROTATABLE = (*TOP_LEVEL, MODELS_ROLE)
DIRECTOR_ROTATABLE = tuple(f"director-{r}" for r in TOP_LEVEL)


@dataclass
class CeremonyResult:
    metadata_dir: Path
    offline_keys: list[Path] = field(default_factory=list)  # to move off this machine
    online_keys: list[Path] = field(default_factory=list)
    root_version: int = 1


def _image_dir(data_dir: Path) -> Path:
    return data_dir / "tuf" / "image" / "metadata"


def init_keys(
    data_dir: Path,
    offline_dir: Path,
    *,
    root_threshold: int = 2,
    root_keys: int = 3,
    models_key_online: bool = False,
    clock: Callable[[], datetime] = utc_now,
) -> CeremonyResult:
    """Create the image repository (root ``root_threshold``-of-``root_keys``) and director."""
    if not 1 <= root_threshold <= root_keys:
        raise ConfigError(f"root threshold {root_threshold} must be 1..{root_keys} (root keys)")
    folder = _image_dir(data_dir)
    if (folder / "timestamp.json").exists():
        raise ConfigError(f"{folder} holds a repository already; use `edgefleet keys rotate`")
    online, offline = KeyStore(data_dir / "keys"), KeyStore(offline_dir)
    roots = [_make(offline, f"image-root-{i}") for i in range(1, root_keys + 1)]
    models_store = online if models_key_online else offline
    signers: dict[str, Signer] = {
        "root": roots[0],
        "targets": _make(offline, "image-targets"),
        "snapshot": _make(online, "image-snapshot"),
        "timestamp": _make(online, "image-timestamp"),
        MODELS_ROLE: _make(models_store, f"image-{MODELS_ROLE}"),
    }
    for role in TOP_LEVEL:
        _make(online, f"director-{role}")  # the director's keys are online
    chain = MetadataChain(FolderFiles(folder), signers, ONLINE)
    chain.create(clock(), {MODELS_ROLE: MODELS_PATHS})
    root = _root(chain)
    for signer in roots[1:]:
        root.add_key(signer.public_key, "root")
    root.roles["root"].threshold = root_threshold
    chain.publish_root(roots)
    TufRepositories(data_dir, clock)  # the director's keys and folder, and a load check
    return CeremonyResult(
        folder,
        offline_keys=sorted(offline_dir.glob("*.pem")),
        online_keys=sorted((data_dir / "keys").glob("*.pem")),
    )


def rotate_key(
    data_dir: Path,
    role: str,
    offline_dir: Path,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> CeremonyResult:
    """A new key for ``role``; a new root (or targets, for ``models``) that trusts it."""
    if role in DIRECTOR_ROTATABLE:
        return rotate_director_key(data_dir, role, clock=clock)
    if role not in ROTATABLE:
        choices = ", ".join((*ROTATABLE, *DIRECTOR_ROTATABLE))
        raise ConfigError(f"cannot rotate {role!r}: choose one of {choices}")
    folder = _image_dir(data_dir)
    if not (folder / "timestamp.json").exists():
        raise ConfigError(f"no image repository in {folder}: run `edgefleet keys init`")
    online, offline = KeyStore(data_dir / "keys"), KeyStore(offline_dir)
    chain = MetadataChain(FolderFiles(folder), {}, frozenset())
    chain.load()
    now = clock()
    keys = _known_signers(chain, online, offline)
    if role == MODELS_ROLE:
        new = _new_key(role, online, offline)
        _rotate_delegation(chain, keys, new, now)
        return CeremonyResult(folder, root_version=chain.version("root"))
    root_signers = _threshold(chain, keys)
    new_keys = (
        [_new_key(role, online, offline)] if role != "root" else _new_root_keys(chain, offline)
    )
    root = _root(chain)
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for signer in new_keys:
        root.add_key(signer.public_key, role)
    root.version += 1
    root.expires = now + lifetime("root")
    chain.publish_root([*root_signers, *new_keys] if role == "root" else root_signers)
    if role == "root":
        _drop_online_root_key(online)
    else:
        _resign(chain, keys, role, new_keys[0], now)
    return CeremonyResult(folder, root_version=chain.version("root"))


def rotate_director_key(
    data_dir: Path, role: str, *, clock: Callable[[], datetime] = utc_now
) -> CeremonyResult:
    """A new online director key for ``role`` (``director-<top-level role>``).

    Every device's director chain gets a new root, signed by the current director root
    key (and by the new one when root itself rotates), that trusts only the new key;
    then the role is re-signed with it. The key file in ``DATA/keys/`` is replaced last,
    so an interrupted run leaves the controller on the old key (run it again).
    """
    top = role.removeprefix("director-")
    if role not in DIRECTOR_ROTATABLE:
        raise ConfigError(f"cannot rotate {role!r}: choose one of {', '.join(DIRECTOR_ROTATABLE)}")
    online = KeyStore(data_dir / "keys")
    missing = [f"director-{r}" for r in TOP_LEVEL if not online.has(f"director-{r}")]
    if missing:
        raise ConfigError(f"no director keys ({', '.join(missing)}) in {online.folder}")
    current = {r: online.signer(f"director-{r}") for r in TOP_LEVEL}
    keys = {s.public_key.keyid: s for s in current.values()}
    new = CryptoSigner.generate_ed25519()
    now = clock()
    folder = data_dir / "tuf" / "director"
    root_version = 0
    for stamp in sorted(folder.glob("*/metadata/timestamp.json")):
        meta = stamp.parent
        chain = MetadataChain(FolderFiles(meta), current, frozenset())
        chain.load()
        root = _root(chain)
        for keyid in list(root.roles[top].keyids):
            root.revoke_key(keyid, top)
        root.add_key(new.public_key, top)
        root.version += 1
        root.expires = now + lifetime("root")
        chain.publish_root([current["root"], new] if top == "root" else [current["root"]])
        if top != "root":
            _resign(chain, keys, top, new, now)
        root_version = max(root_version, chain.version("root"))
    online.store(role, new)
    return CeremonyResult(folder, root_version=root_version)


def _make(store: KeyStore, name: str) -> CryptoSigner:
    signer = CryptoSigner.generate_ed25519()
    store.store(name, signer)
    return signer


def _drop_online_root_key(online: KeyStore) -> None:
    """A demo repository kept its single root key online; the new ones are offline."""
    for name in ("image-root.pem", "image-root.pub.json"):
        (online.folder / name).unlink(missing_ok=True)


def _root(chain: MetadataChain) -> Root:
    root = chain.md["root"].signed
    assert isinstance(root, Root)
    return root


def _known_signers(
    chain: MetadataChain, online: KeyStore, offline: KeyStore
) -> dict[str, CryptoSigner]:
    """Every key of either folder, by key id."""
    found: dict[str, CryptoSigner] = {}
    for store in (online, offline):
        if store.folder.is_dir():
            for pem in sorted(store.folder.glob("*.pem")):
                signer = store.signer(pem.stem)
                found[signer.public_key.keyid] = signer
    return found


def _threshold(chain: MetadataChain, keys: dict[str, CryptoSigner]) -> list[Signer]:
    role = _root(chain).roles["root"]
    have = [keys[k] for k in role.keyids if k in keys]
    if len(have) < role.threshold:
        raise TrustError(
            f"a new root needs {role.threshold} of the current root keys; found {len(have)} "
            "(give the folder that holds them with --offline-keys)"
        )
    return list(have[: role.threshold])


def _key_name(role: str) -> str:
    return f"image-{role}"


def _new_key(role: str, online: KeyStore, offline: KeyStore) -> CryptoSigner:
    signer = CryptoSigner.generate_ed25519()
    # online roles stay online; an offline role's key goes where it was (demo: online)
    store = online if role in ONLINE or online.has(_key_name(role)) else offline
    store.store(_key_name(role), signer)
    return signer


def _new_root_keys(chain: MetadataChain, offline: KeyStore) -> list[CryptoSigner]:
    count = len(_root(chain).roles["root"].keyids)
    out = []
    for i in range(1, count + 1):
        signer = CryptoSigner.generate_ed25519()
        offline.store(f"image-root-{i}", signer)
        out.append(signer)
    return out


def _signer_for(chain: MetadataChain, keys: dict[str, CryptoSigner], role: str) -> Signer:
    root = _root(chain)
    keyids = root.roles[role].keyids
    if role == MODELS_ROLE:
        delegations = chain.targets().delegations
        assert delegations is not None
        assert delegations.roles is not None
        keyids = delegations.roles[MODELS_ROLE].keyids
    for keyid in keyids:
        if keyid in keys:
            return keys[keyid]
    raise TrustError(f"no key for the {role} role in the key folders given")


def _resign(
    chain: MetadataChain, keys: dict[str, CryptoSigner], role: str, new: Signer, now: datetime
) -> None:
    """Re-sign ``role`` with its new key, and what must follow it."""
    signers = {r: _signer_for(chain, keys, r) for r in ("snapshot", "timestamp") if r != role}
    chain.use_signers({**signers, role: new})
    if role == "targets":
        chain.bump("targets", now)
        chain.publish_snapshot(now)
    elif role == "snapshot":
        chain.publish_snapshot(now)
    else:
        chain.bump("timestamp", now)


def _rotate_delegation(
    chain: MetadataChain, keys: dict[str, CryptoSigner], new: Signer, now: datetime
) -> None:
    """The publisher's ``models`` key: targets (offline key) delegates to the new one."""
    targets = chain.targets()
    delegations = targets.delegations
    assert delegations is not None
    assert delegations.roles is not None
    for keyid in list(delegations.roles[MODELS_ROLE].keyids):
        targets.revoke_key(keyid, MODELS_ROLE)
    targets.add_key(new.public_key, MODELS_ROLE)
    chain.use_signers({
        "targets": _signer_for(chain, keys, "targets"),
        "snapshot": _signer_for(chain, keys, "snapshot"),
        "timestamp": _signer_for(chain, keys, "timestamp"),
        MODELS_ROLE: new,
    })  # fmt: skip
    chain.bump(MODELS_ROLE, now)
    chain.bump("targets", now)
    chain.publish_snapshot(now)
