"""Content-addressed artifact store and ONNX validation.

Layout: ``DATA/artifacts/sha256/<ab>/<hex>``. Uploads are streamed into a temp file in
``DATA/artifacts/tmp/`` while hashing, then renamed into place, so a crash never leaves a
half-written artifact under its hash.

Where the bytes are kept is a :class:`~edgefleet.controller.artifact_store.StoreBackend`
(``--artifact-store``): this folder itself (the default), or an S3 bucket, in which case
this folder is the controller's working copy (signing and model checks read files) and a
missing file is fetched back from the bucket (another replica pushed it, a new disk).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgefleet.controller.artifact_store import LocalStore, StoreBackend, content_key
from edgefleet.shared.durable import fsync_dir
from edgefleet.shared.errors import ArtifactError
from edgefleet.shared.hashing import CHUNK, sha256_file

_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    length: int  # bytes
    path: Path


class ArtifactStore:
    def __init__(
        self, root: Path, max_bytes: int | None = None, backend: StoreBackend | None = None
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes  # bytes; None = no limit
        self.backend: StoreBackend = backend or LocalStore(root)

    @property
    def remote(self) -> bool:
        """True when the bytes live elsewhere and this folder is only a working copy."""
        return not (isinstance(self.backend, LocalStore) and self.backend.root == self.root)

    def path_for(self, sha256: str) -> Path:
        return self.root / content_key(sha256)

    def has(self, sha256: str) -> bool:
        return _HEX.match(sha256) is not None and self.backend.exists(sha256)

    def presigned_url(self, sha256: str) -> str | None:
        """Where a device may fetch the bytes itself (S3 with presign=), else None."""
        return self.backend.presigned_url(sha256) if self.remote else None

    def local_copy(self, sha256: str) -> Path:
        """The artifact's file in this folder, fetched (streamed) from the backend if missing."""
        final = self.path_for(sha256)
        if final.is_file() or not self.remote:
            return final
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self.backend.open(sha256)) as source:
            fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".fetch")
            try:
                digest, _ = self._copy(source, fd)
                if digest != sha256:
                    raise ArtifactError(f"the artifact store holds other bytes under {sha256}")
                self.commit(Path(name), sha256, upload=False)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    Path(name).unlink()
        return final

    @contextlib.contextmanager
    def staged(self, source: BinaryIO):  # type: ignore[no-untyped-def]
        """Stream ``source`` into a temp file; yield (temp path, sha256, length).

        The caller validates the temp file, then calls :meth:`commit`. The temp file is
        removed on exit either way.
        """
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
        tmp = Path(name)
        try:
            digest, length = self._copy(source, fd)
            yield tmp, digest, length
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _copy(self, source: BinaryIO, fd: int) -> tuple[str, int]:
        h = hashlib.sha256()
        length = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                length += len(chunk)
                if self.max_bytes is not None and length > self.max_bytes:
                    raise ArtifactError(f"upload larger than {self.max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.hexdigest(), length

    def commit(self, tmp: Path, sha256: str, *, upload: bool = True) -> StoredArtifact:
        """Move a staged file to its content address (a no-op when already stored), and
        stream it to a remote backend."""
        final = self.path_for(sha256)
        if not final.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
            fsync_dir(final.parent)
        if upload and self.remote:
            with final.open("rb") as f:
                self.backend.put(sha256, f)
        return StoredArtifact(sha256, final.stat().st_size, final)

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored artifact (for audits; serving trusts the address)."""
        return self.has(sha256) and sha256_file(self.local_copy(sha256)) == sha256


def validate_onnx(path: Path) -> None:
    """Raise :class:`ArtifactError` unless ``path`` is a well-formed ONNX model."""
    import onnx

    try:
        # Checking by path keeps models over 2 GiB working and avoids a second copy.
        onnx.checker.check_model(str(path))
    except Exception as e:  # onnx raises protobuf, ValidationError and C++ errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.replace(str(path), "the upload")
        raise ArtifactError(f"not a valid ONNX model: {first}") from e
