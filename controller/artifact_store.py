"""Where artifact bytes live: a local folder (the default) or S3-compatible storage.

``controller serve --artifact-store URL`` picks the backend:

- none, or ``file:///PATH`` -> :class:`LocalStore` (``DATA/artifacts`` by default);
- ``s3://BUCKET[/PREFIX][?endpoint=URL&presign=SECONDS&region=NAME]`` -> :class:`S3Store`.
  Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role); the endpoint from ``endpoint=``
  or ``AWS_ENDPOINT_URL`` (MinIO, Ceph, R2, ...). With ``presign=SECONDS`` a device asking
  /tuf for an artifact gets a 307 to a presigned URL valid that long, and downloads the
  bytes from the store itself; the controller only checks who asks and which target.

The store is untrusted: devices verify every artifact against the signed TUF hashes, so
a store that serves other bytes is caught. Keys are content addresses,
``PREFIX/sha256/<ab>/<hex>``, the same layout as the local folder.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from edgefleet.shared.durable import fsync_dir
from edgefleet.shared.errors import ArtifactError, ConfigError

_HEX = re.compile(r"^[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_PRESIGN_S = 7 * 24 * 3600  # seconds: SigV4's longest validity
PART_BYTES = 8 * 1024 * 1024  # bytes per multipart upload part


def content_key(sha256: str) -> str:
    """``sha256/<ab>/<hex>``; anything but a sha256 digest is an ArtifactError."""
    if not _HEX.match(sha256):
        raise ArtifactError(f"not a sha256 digest: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256}"


class StoreBackend(Protocol):
    """The seam: content-addressed blobs, put once, read many times."""

    def put(self, sha256: str, source: BinaryIO) -> None:
        """Store ``source`` (read in chunks, never whole in memory) under ``sha256``."""

    def open(self, sha256: str) -> BinaryIO:
        """A stream of the stored bytes; ArtifactError when absent."""

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None:
        """Remove the blob; absent is not an error."""

    def presigned_url(self, sha256: str) -> str | None:
        """A URL anyone holding it may GET the bytes from, or None (the controller serves)."""


class LocalStore:
    """A folder on the controller's disk (what the controller always did)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / content_key(sha256)

    def put(self, sha256: str, source: BinaryIO) -> None:
        final = self.path(sha256)
        if final.is_file():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{sha256}.{os.getpid()}.part")
        with tmp.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(final)
        fsync_dir(final.parent)

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError as e:
            raise ArtifactError(f"artifact {sha256} is not in the store") from e

    def exists(self, sha256: str) -> bool:
        return _HEX.match(sha256) is not None and self.path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def presigned_url(self, sha256: str) -> str | None:
        return None


class S3Store:
    """A bucket (and key prefix) of S3-compatible storage, through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        presign_s: int | None = None,  # seconds a presigned URL is valid; None = no presigning
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix, self.presign_s = bucket, prefix.strip("/"), presign_s
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:
                raise ConfigError(
                    "an s3:// artifact store needs boto3: pip install 'edgefleet[s3]'"
                ) from e
            config = Config(signature_version="s3v4", retries={"mode": "standard"})
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                  config=config)  # fmt: skip
        self.client = client

    def check(self) -> None:
        """Fail at startup, in one line, when the bucket cannot be reached or read."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as e:
            raise ConfigError(f"artifact store s3://{self.bucket}: {_reason(e)}") from e

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{content_key(sha256)}" if self.prefix else content_key(sha256)

    def put(self, sha256: str, source: BinaryIO) -> None:
        if self.exists(sha256):
            return
        # multipart in 8 MiB parts, 4 at once: at most about 32 MiB of a model in memory
        from boto3.s3.transfer import TransferConfig

        parts = TransferConfig(multipart_chunksize=PART_BYTES, max_concurrency=4)
        parts.max_in_memory_upload_chunks = 4  # s3transfer's knob; boto3's __init__ lacks it
        self._call("upload", self.client.upload_fileobj, source, self.bucket, self.key(sha256),
                   Config=parts)  # fmt: skip

    def open(self, sha256: str) -> BinaryIO:
        answer = self._call("read", self.client.get_object, Bucket=self.bucket,
                            Key=self.key(sha256))  # fmt: skip
        body: BinaryIO = answer["Body"]
        return body

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise ArtifactError(f"artifact store s3://{self.bucket}: {_reason(e)}") from e
        return True

    def delete(self, sha256: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.key(sha256))

    def presigned_url(self, sha256: str) -> str | None:
        if not self.presign_s:
            return None
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(sha256)},
            ExpiresIn=self.presign_s,
        )
        return url

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise ArtifactError(
                f"artifact store s3://{self.bucket}/{self.prefix}: {what} failed: {_reason(e)}"
            ) from e


def _reason(e: Exception) -> str:
    error = getattr(e, "response", {}).get("Error", {})
    return str(error.get("Message") or error.get("Code") or e).splitlines()[0]


def open_backend(url: str | None, default_root: Path) -> StoreBackend:
    """The backend ``--artifact-store URL`` names (see the module docstring)."""
    if not url:
        return LocalStore(default_root)
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.path:
        return LocalStore(Path(unquote(parts.path)))
    if parts.scheme != "s3":
        raise ConfigError(f"bad --artifact-store {url!r}: expected s3://BUCKET/PREFIX or file:///")
    if not _BUCKET.match(parts.netloc):
        raise ConfigError(f"bad --artifact-store {url!r}: {parts.netloc!r} is not a bucket name")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "presign", "region"}
    if unknown:
        raise ConfigError(f"bad --artifact-store {url!r}: unknown option {sorted(unknown)[0]!r}")
    presign = query.get("presign")
    if presign is not None and not (presign.isdigit() and 0 < int(presign) <= MAX_PRESIGN_S):
        raise ConfigError(
            f"bad --artifact-store {url!r}: presign must be 1..{MAX_PRESIGN_S} seconds"
        )
    return S3Store(
        parts.netloc,
        unquote(parts.path),
        endpoint_url=query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL") or None,
        region=query.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        presign_s=int(presign) if presign else None,
    )
