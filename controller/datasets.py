"""Validation sets, registered once and kept by digest, so every version is judged alike.

``edgefleet dataset add NAME DIR`` packs the images under DIR and their YOLO labels (beside
each image or in the sibling ``labels/`` tree, as :func:`~edgefleet.controller.cards.label_path`
finds them) into a tar as ``images/<path>`` and ``labels/<path>.txt``. The controller
unpacks it (regular files with plain relative names only), lists every file with its
sha256 in a manifest, and keeps the tree under ``DATA/datasets/<digest>/`` where
``digest`` is the sha256 of that manifest: the same images and labels give the same
digest wherever they were packed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edgefleet.controller.cards import IMAGE_SUFFIXES, label_path, validation_images
from edgefleet.shared.errors import ArtifactError, NotFoundError
from edgefleet.shared.hashing import sha256_file

MANIFEST = "manifest.json"
MAX_FILES = 200_000


@dataclass(frozen=True)
class Unpacked:
    digest: str
    images: int
    labelled: int
    bytes: int


def pack(folder: Path, out: Path) -> Path:
    """Write ``folder``'s images and their labels into the tar ``out`` (the upload)."""
    images = validation_images(folder)
    with tarfile.open(out, "w") as tar:
        for image in images:
            rel = image.relative_to(folder).as_posix()
            tar.add(image, arcname=f"images/{rel}", recursive=False)
            label = label_path(image)
            if label is not None:
                label_rel = PurePosixPath(rel).with_suffix(".txt")
                tar.add(label, arcname=f"labels/{label_rel}", recursive=False)
    return out


def manifest(root: Path) -> list[dict[str, object]]:
    """Every file under ``root`` (but the manifest): relative path, bytes, sha256, sorted."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    return [
        {
            "path": p.relative_to(root).as_posix(),
            "bytes": p.stat().st_size,
            "sha256": sha256_file(p),
        }
        for p in files
    ]


def digest_of(entries: list[dict[str, object]]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    path = PurePosixPath(member.name)
    top = path.parts[0] if path.parts else ""
    if path.is_absolute() or ".." in path.parts or top not in ("images", "labels"):
        raise ArtifactError(f"dataset archive: refused member {member.name!r}")
    return path


def _unpack(source: BinaryIO, into: Path) -> None:
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_FILES:
                    raise ArtifactError(f"dataset archive has more than {MAX_FILES} files")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ArtifactError(f"dataset archive: {member.name!r} is not a plain file")
                target = into / _member_path(member)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None  # a regular file always has data
                with target.open("wb") as f:
                    shutil.copyfileobj(data, f)
    except tarfile.TarError as e:
        raise ArtifactError(f"dataset archive is not a readable tar: {e}") from e


class DatasetStore:
    """Registered validation sets under ``DATA/datasets/<digest>/``, one tree per digest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, digest: str) -> Path:
        path = self.folder / digest
        if not (path / MANIFEST).is_file():
            raise NotFoundError(f"no stored validation set with digest {digest[:12]}")
        return path

    def add(self, source: BinaryIO) -> Unpacked:
        """Unpack an uploaded archive, check it holds images, keep it by its digest."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.folder))
        try:
            _unpack(source, tmp)
            unpacked = _describe(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.folder / unpacked.digest
        if final.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.replace(final)
        return unpacked


def _describe(root: Path) -> Unpacked:
    """Count the unpacked tree's images and write its manifest; the digest names it."""
    folder = root / "images"
    images = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise ArtifactError("dataset archive holds no images under images/")
    labelled = sum(1 for p in images if label_path(p) is not None)
    entries = manifest(root)
    (root / MANIFEST).write_text(json.dumps(entries, indent=1), encoding="utf-8")
    size = sum(int(str(e["bytes"])) for e in entries)
    return Unpacked(digest_of(entries), len(images), labelled, size)
