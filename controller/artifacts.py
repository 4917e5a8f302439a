"""Content-addressed artifact store and ONNX validation.

Layout: ``DATA/artifacts/sha256/<ab>/<hex>``. Uploads are streamed into a temp file in
``DATA/artifacts/tmp/`` while hashing, then renamed into place, so a crash never leaves a
half-written artifact under its hash.
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
    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes  # bytes; None = no limit

    def path_for(self, sha256: str) -> Path:
        if not _HEX.match(sha256):
            raise ArtifactError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return _HEX.match(sha256) is not None and self.path_for(sha256).is_file()

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

    def commit(self, tmp: Path, sha256: str) -> StoredArtifact:
        """Move a staged file to its content address (a no-op when already stored)."""
        final = self.path_for(sha256)
        if not final.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
            fsync_dir(final.parent)
        return StoredArtifact(sha256, final.stat().st_size, final)

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored artifact (for audits; serving trusts the address)."""
        return self.has(sha256) and sha256_file(self.path_for(sha256)) == sha256


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
