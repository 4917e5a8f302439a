"""The agent's TUF/Uptane client: director + image repository, on python-tuf's ngclient.

Thin shell: ngclient verifies metadata, :func:`install_policy.decide` judges each target,
and this module does the disk and network work around them::

    data_dir/trust/image-root.json      pinned bootstrap roots, kept apart from the cache
    data_dir/trust/director-root.json
    data_dir/tuf/image/                 ngclient metadata cache of the image repository
    data_dir/tuf/director/              ... of this device's director repository
    data_dir/tuf/.lock                  flock: one updater at a time touches tuf/

A fresh ngclient ``Updater`` is built for every refresh and download, as ngclient intends;
the cache and the pinned roots carry trust from one to the next.

Idle polls are cheap: while the repositories' ``timestamp.json`` are unchanged (a
conditional GET answered 304, or the very bytes already trusted; the image repository's
is asked every ``image_check_s``) and everything verified last time is further than
``expiry_margin_s`` from expiring, the poll reuses the last full verification of this
process instead of running ngclient's refresh, whose root probe (``N+1.root.json``) is a
404 on every poll. docs/TRUST.md ("Idle polls") says why that is safe.
Downloads resume: the partial file stays in the models folder and the rest is asked for
with ``Range``; the whole file is verified against the signed length and hashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgefleet.agent.enroll import read_upload_token
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.install_policy import VerifiedTarget, decide
from edgefleet.shared.durable import fsync_dir, write_bytes
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.hashing import sha256_file
from edgefleet.shared.protocol import Fingerprint, utcnow
from edgefleet.shared.topics import validate_device_id
from tuf.api import exceptions
from tuf.api.metadata import Key, Metadata, Root, TargetFile, Targets
from tuf.ngclient.config import UpdaterConfig as NgConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from edgefleet import __version__

log = logging.getLogger(__name__)

__all__ = ["ModelUpdater", "Repository", "UpdaterConfig", "VerifiedTarget"]


@dataclass(frozen=True)
class UpdaterConfig:
    controller_url: str  # http(s)://host:port, the controller serving /tuf/
    device_id: str
    data_dir: Path  # the agent's data folder; trust/ and tuf/ live here
    download_deadline_s: float = 300.0  # seconds for one download, metadata or model
    socket_timeout_s: float = 30.0  # seconds to connect, and the longest gap between bytes
    lock_timeout_s: float = 60.0  # seconds to wait for another updater to finish
    ca_bundle: Path | None = None  # PEM CA bundle to pin for https controllers
    client_cert: Path | None = None  # PEM client certificate (mTLS)
    client_key: Path | None = None  # PEM key of client_cert
    agent_version: str = __version__  # compared with targets' min_agent_version
    root_max_length: int = 512_000  # bytes, for the trust-on-first-use root
    timestamp_max_length: int = 16_384  # bytes, for the conditional timestamp check
    expiry_margin_s: float = 3600.0  # seconds: closer than this to expiry, refresh fully
    image_check_s: float = 600.0  # seconds between image timestamp checks while idle
    download_rate_bps: float | None = None  # test-only (agent/hooks.py download_rate_bps)
    # the device's credential from enrollment; None: data_dir/identity/upload-token if any
    credential: str | None = None


@dataclass(frozen=True)
class _Verified:
    """What the last full refresh verified: enough to judge the assignment again."""

    director: list[TargetFile]
    image: dict[str, TargetFile | None]  # director target path -> image repo's entry
    expires: datetime  # the earliest expiry of all metadata that took part
    stamps: dict[str, bytes] = field(default_factory=dict)  # repo -> timestamp.json


class _AliasGuard(FetcherInterface):
    """Our fetcher, with root and targets metadata checked for aliased keys on the way in.

    ngclient sees only bytes that passed, so a root or a delegation that lists one key
    twice is refused before anything of it is trusted or cached. Timestamp, snapshot and
    target files pass through unread.
    """

    def __init__(self, inner: FetcherInterface, metadata_url: str, max_length: int) -> None:
        self._inner, self._metadata_url, self._max_length = inner, metadata_url, max_length

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rpartition("/")[2]
        if not url.startswith(self._metadata_url) or _is_timestamp_or_snapshot(name):
            return self._inner.fetch(url)
        return self._checked(url)

    def _checked(self, url: str) -> Iterator[bytes]:
        # A generator: what it raises reaches ngclient as it is, not as a DownloadError.
        data = bytearray()
        for chunk in self._inner.fetch(url):
            data += chunk
            if len(data) > self._max_length:
                raise exceptions.DownloadLengthMismatchError(
                    f"{url} is over {self._max_length} bytes"
                )
        _check_key_aliases(bytes(data))
        yield bytes(data)


def _is_timestamp_or_snapshot(name: str) -> bool:
    return re.fullmatch(r"timestamp\.json|([0-9]+\.)?snapshot\.json", name) is not None


def _check_key_aliases(data: bytes) -> None:
    """Refuse root or targets metadata whose roles list one public key under two ids.

    Bytes that do not parse are left to ngclient, which refuses them with its own error.
    """
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except (exceptions.RepositoryError, ValueError, TypeError, KeyError):
        return
    signed = md.signed
    if isinstance(signed, Root):
        for name, role in signed.roles.items():
            _refuse_aliased_keys(name, [signed.keys[k] for k in role.keyids if k in signed.keys])
    elif isinstance(signed, Targets):
        delegations = signed.delegations
        if delegations is not None and delegations.roles:
            for name, delegated in delegations.roles.items():
                keys = [delegations.keys[k] for k in delegated.keyids if k in delegations.keys]
                _refuse_aliased_keys(name, keys)


def _refuse_aliased_keys(role: str, keys: list[Key]) -> None:
    """One public key listed under two key ids would count twice toward the threshold.

    ngclient counts signatures per key id, so an attacker holding one key and able to get
    a root signed that lists it twice (or a careless root) meets a threshold of 2 alone.
    """
    seen = {json.dumps(k.keyval, sort_keys=True) for k in keys}
    if len(seen) != len(keys):
        raise exceptions.UnsignedMetadataError(
            f"role {role} lists the same public key more than once"
        )


class Repository:
    """One TUF repository client as the agent runs it, on ngclient's public API only.

    ngclient's ``Updater`` with our fetcher behind :class:`_AliasGuard`; the pinned root
    is checked the same way. ngclient writes its cache atomically (temp file, rename);
    after each of its calls every cached file and folder is fsync'd, so what it wrote
    survives a power cut. A cut in between can at worst leave a torn cache file, which
    ngclient treats as missing and fetches again; the pinned root is kept apart.

    ``bootstrap`` is the pinned root kept apart from the cache; ``None`` trusts the
    ``root.json`` already in ``metadata_dir`` (the conformance client's ``init``).
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        fetcher: FetcherInterface,
        *,
        bootstrap: bytes | None,
        target_dir: Path | None = None,
        target_base_url: str | None = None,
    ) -> None:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        self.metadata_dir = metadata_dir
        root = bootstrap
        if root is None:
            with contextlib.suppress(OSError):  # missing: ngclient says so below
                root = (metadata_dir / "root.json").read_bytes()
        if root is not None:
            _check_key_aliases(root)
        config = NgConfig(app_user_agent=f"edgefleet-agent/{__version__}")
        guard = _AliasGuard(fetcher, metadata_url, max(config.root_max_length,
                                                       config.targets_max_length))  # fmt: skip
        self._updater = Updater(
            str(metadata_dir),
            metadata_url,
            str(target_dir) if target_dir is not None else None,
            target_base_url,
            fetcher=guard,
            config=config,
            bootstrap=bootstrap,
        )
        self._sync()

    def refresh(self) -> None:
        try:
            self._updater.refresh()
        finally:
            self._sync()
        # Roots ngclient took from its own cache (root_history/) did not pass the guard.
        _check_key_aliases((self.metadata_dir / "root.json").read_bytes())

    def get_targetinfo(self, target_path: str) -> TargetFile | None:
        try:
            return self._updater.get_targetinfo(target_path)
        finally:
            self._sync()  # delegated targets metadata it fetched

    def find_cached_target(self, info: TargetFile, filepath: str | None = None) -> str | None:
        return self._updater.find_cached_target(info, filepath)

    def download_target(self, info: TargetFile, filepath: str | None = None) -> str:
        return self._updater.download_target(info, filepath)

    def trusted(self, role: str) -> Metadata[Any]:
        """``role``'s metadata as the last refresh verified and cached it."""
        return Metadata.from_file(str(self.metadata_dir / f"{quote(role, safe='')}.json"))

    def trusted_all(self) -> list[Any]:
        """The signed part of every metadata file the last refresh trusted: the top-level
        roles and each delegated role cached at the version the snapshot names."""
        top = [self.trusted(r).signed for r in ("root", "timestamp", "snapshot", "targets")]
        snapshot = top[2]
        delegated = []
        for filename, meta in snapshot.meta.items():
            role = filename[: -len(".json")]
            if (
                role == "targets"
                or not (self.metadata_dir / f"{quote(role, safe='')}.json").exists()
            ):
                continue  # a delegated role no lookup has needed yet
            with contextlib.suppress(exceptions.RepositoryError, ValueError):
                signed = self.trusted(role).signed
                if signed.version == meta.version:
                    delegated.append(signed)
        return [*top, *delegated]

    def _sync(self) -> None:
        for folder, _, files in os.walk(self.metadata_dir):
            for name in files:
                with contextlib.suppress(OSError):  # a file ngclient is not done with
                    _fsync_file(Path(folder, name))
            fsync_dir(Path(folder))


class ModelUpdater:
    """Refreshes both repositories for one device and downloads what they agree on."""

    def __init__(
        self,
        config: UpdaterConfig,
        fetcher: DeadlineFetcher | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        validate_device_id(config.device_id)
        self.config = config
        self._clock = clock
        self._verified: _Verified | None = None
        self._etags: dict[str, str | None] = {}  # repo -> ETag of its timestamp.json
        self._image_checked_at: datetime | None = None
        self._refused = False  # the last judgement refused a target
        self.full_refreshes = 0  # ngclient refreshes run (the rest reused a verification)
        self._fetcher = fetcher or DeadlineFetcher(
            FetcherConfig(
                deadline_s=config.download_deadline_s,
                timeout_s=config.socket_timeout_s,
                ca_bundle=config.ca_bundle,
                client_cert=config.client_cert,
                client_key=config.client_key,
                rate_bps=config.download_rate_bps,
                credential=config.credential or read_upload_token(config.data_dir),
            )
        )
        base = config.controller_url.rstrip("/")
        self._urls = {
            "image": f"{base}/tuf/image/metadata/",
            "director": f"{base}/tuf/director/{config.device_id}/metadata/",
        }
        self._targets_url = f"{base}/tuf/image/targets/"
        self._tuf_dir = config.data_dir / "tuf"
        self._trust_dir = config.data_dir / "trust"

    def refresh(
        self, installed_releases: Mapping[str, int], fingerprint: Fingerprint | None
    ) -> list[VerifiedTarget]:
        """Every target the director assigns, if the image repo and the policy agree.

        Raises TrustError when metadata or any assigned target is refused (nothing of the
        assignment may be installed then) and TransportError when the controller is
        unreachable.
        """
        with self._locked(), self._tuf_errors("refresh"):
            verified = self._current_verification()
            self._refused = True  # until every target passed below
            accepted = []
            for target in verified.director:
                decision = decide(
                    target,
                    verified.image[target.path],
                    installed_releases,
                    fingerprint,
                    self.config.agent_version,
                )
                if decision.target is None:
                    custom = target.custom
                    raise TrustError(
                        f"refused {decision.reason}",
                        device_id=self.config.device_id,
                        model=_str_or_none(custom.get("model")),
                        model_version=_str_or_none(custom.get("version")),
                    )
                accepted.append(decision.target)
            self._refused = False
            return accepted

    def _current_verification(self) -> _Verified:
        """The last verification while nothing changed and nothing nears expiry, else anew.

        The director's timestamp is asked on every poll: it alone says what to install.
        The image repository's is asked every ``image_check_s`` and on every poll after a
        refusal (an assignment waiting for its image): while the director's assignment
        stands, a change there cannot make the device install anything new.
        """
        last, now = self._verified, self._clock()
        if (
            last is not None
            and (last.expires - now).total_seconds() > self.config.expiry_margin_s
            and self._unchanged("director", last.stamps["director"])
            and (not self._image_due(now) or self._unchanged("image", last.stamps["image"]))
        ):
            if self._image_due(now):
                self._image_checked_at = now
            return last
        self._verified = None  # a failed refresh below must not leave the old one usable
        self._verified = self._full_refresh()
        self._image_checked_at = now
        return self._verified

    def _image_due(self, now: datetime) -> bool:
        if self._refused or self._image_checked_at is None:
            return True
        return (now - self._image_checked_at).total_seconds() >= self.config.image_check_s

    def _full_refresh(self) -> _Verified:
        self.full_refreshes += 1
        director = self._updater("director")
        director.refresh()
        image = self._updater("image")
        image.refresh()
        targets = list(director.trusted("targets").signed.targets.values())
        infos = {t.path: image.get_targetinfo(t.path) for t in targets}
        signed = [*director.trusted_all(), *image.trusted_all()]
        return _Verified(
            director=targets,
            image=infos,
            expires=min(s.expires for s in signed),
            stamps={repo: self._cached_timestamp(repo) for repo in ("director", "image")},
        )

    def _unchanged(self, repo: str, trusted_stamp: bytes) -> bool:
        """Is ``repo``'s timestamp.json still the one verified? 304 or the same bytes.

        Anything else (a new timestamp, an HTTP error) says no: the full refresh then
        verifies what changed or reports the error as it always did.
        """
        url = f"{self._urls[repo]}timestamp.json"
        try:
            answer = self._fetcher.fetch_conditional(
                url, self._etags.get(repo), self.config.timestamp_max_length
            )
        except exceptions.DownloadHTTPError:
            return False
        same: bool = answer.status == 304 or answer.body == trusted_stamp
        # Keep only an ETag that names the trusted bytes; a 304 must never vouch for others.
        self._etags[repo] = answer.etag if same else None
        return same

    def _cached_timestamp(self, repo: str) -> bytes:
        return (self._tuf_dir / repo / "timestamp.json").read_bytes()

    def download(self, target: VerifiedTarget, dest_dir: Path) -> Path:
        """Fetch and verify ``target`` into ``dest_dir/<sha256><suffix>``; no partial files.

        A file already there with the right hash is returned as it is. A download that
        broke off leaves ``.<name>.part``, which the next call continues; bytes that fail
        verification are deleted.
        """
        dest = dest_dir / f"{target.sha256}{Path(target.target_path).suffix}"
        if dest.exists() and sha256_file(dest) == target.sha256:
            return dest
        dest_dir.mkdir(parents=True, exist_ok=True)
        part = dest_dir / f".{dest.name}.part"  # hidden, and ours alone under the lock
        info = TargetFile(target.length, {"sha256": target.sha256}, target.target_path)
        with self._locked():
            try:
                with self._tuf_errors(f"download of {target.target_path}"):
                    url = self._target_url(info)
                    self._fetcher.download_resumable(url, part, target.length)
                    with part.open("rb") as f:
                        info.verify_length_and_hashes(f)
            except TrustError:
                part.unlink(missing_ok=True)  # wrong bytes: never resume from them
                raise
            _fsync_file(part)
            part.replace(dest)
            fsync_dir(dest_dir)
        return dest

    def _target_url(self, info: TargetFile) -> str:
        """Where ngclient's download_target would fetch ``info`` (hash-prefixed name)."""
        path = info.path
        root: Metadata[Any] = Metadata.from_file(str(self._tuf_dir / "image" / "root.json"))
        if root.signed.consistent_snapshot:
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{info.hashes['sha256']}.{basename}"
        return f"{self._targets_url}{path}"

    def close(self) -> None:
        """Drop pooled connections to the controller."""
        self._fetcher.close()

    # -- the shell around ngclient ----------------------------------------------------

    def _updater(self, repo: str) -> Repository:
        return Repository(
            self._tuf_dir / repo,
            self._urls[repo],
            self._fetcher,
            bootstrap=self._bootstrap_root(repo),
        )

    def _bootstrap_root(self, repo: str) -> bytes:
        """The pinned root; on first use fetched once over the network and pinned."""
        pinned = self._trust_dir / f"{repo}-root.json"
        if pinned.exists():
            return pinned.read_bytes()
        url = f"{self._urls[repo]}1.root.json"
        log.warning("no pinned %s root: trusting %s on first use and pinning it", repo, url)
        data: bytes = self._fetcher.download_bytes(url, self.config.root_max_length)
        _check_self_signed_root(data, url)
        write_bytes(pinned, data)
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._tuf_dir.mkdir(parents=True, exist_ok=True)
        with (self._tuf_dir / ".lock").open("a") as f:
            lock_exclusive(f.fileno(), self.config.lock_timeout_s, self._tuf_dir)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _tuf_errors(self, what: str) -> Iterator[None]:
        """python-tuf's errors as ours: network trouble vs. refused metadata or bytes."""
        device = self.config.device_id
        try:
            yield
        except exceptions.DownloadLengthMismatchError as e:
            raise TrustError(f"{what}: served more bytes than signed", device_id=device) from e
        except exceptions.DownloadError as e:
            raise TransportError(f"{what}: {_one_line(e)}", device_id=device) from e
        except exceptions.ExpiredMetadataError as e:
            # Keep serving what is installed; report, and retry on the next poll.
            raise TrustError(f"{what}: stale metadata: {_one_line(e)}", device_id=device) from e
        except exceptions.RepositoryError as e:
            raise TrustError(f"{what}: {_one_line(e)}", device_id=device) from e
        except OSError as e:
            raise TrustError(f"{what}: local metadata unusable: {e}", device_id=device) from e


def _check_self_signed_root(data: bytes, url: str) -> None:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
        if md.signed.type != "root":
            raise TrustError(f"{url} is not root metadata")
        md.verify_delegate("root", md)
    except (exceptions.RepositoryError, ValueError) as e:
        raise TrustError(f"first-use root {url} refused: {_one_line(e)}") from e


def lock_exclusive(fd: int, timeout_s: float, folder: Path) -> None:
    """Take an exclusive flock on ``fd`` (an open file in ``folder``), polling until
    ``timeout_s`` seconds pass (then TransportError): the one TUF folder lock that the
    updater and the conformance client share."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            if time.monotonic() > deadline:
                raise TransportError(f"another updater holds {folder} for too long") from e
            time.sleep(0.05)
        else:
            return


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0] if text.strip() else type(e).__name__


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
