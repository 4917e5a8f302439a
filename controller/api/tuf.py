"""/tuf: the image and director repositories' metadata, and the artifacts they sign.

Only plain file names are served from the signing folders (no separators, no dot
files), and a target is served only when its hash is the registered artifact of that
version: the URL never decides which file on disk is read. With an S3 artifact store
and presigning on (``--artifact-store s3://...?presign=SECONDS``) an artifact is a 307 to
a presigned URL of the bucket, after the same checks.

Who may read (auth on): the image repository (metadata and artifacts) an enrolled,
unrevoked device (its own credential, ``Authorization: Bearer efu_...``) or an operator
token; ``controller serve --public-mirror`` serves it to anyone. A device's director
metadata only that device or an operator, mirror or not.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated

import anyio
from edgefleet.controller import plans
from edgefleet.controller.api.deps import (
    DEVICE,
    ServicesDep,
    SessionDep,
    check_role,
    get_caller_async,
    revoked_devices,
)
from edgefleet.controller.api.files import (
    FileServing,
    StaticFile,
    file_serving,
    if_none_match,
    metadata_etag,
)
from edgefleet.controller.models.registry import ModelVersion
from edgefleet.controller.signing.storage import Blob
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import ForbiddenError, NotFoundError, ProtocolError
from edgefleet.shared.topics import validate_device_id
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import select

router = APIRouter(prefix="/tuf", tags=["tuf"])

_METADATA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.json$")
_TARGET = re.compile(r"^([0-9a-f]{64})\.(model\.onnx|plan-[A-Za-z0-9._-]+\.plan)$")
_NO_CACHE = {"Cache-Control": "no-cache"}  # caches revalidate: an unchanged poll is a 304
FilesDep = Annotated[FileServing, Depends(file_serving)]


async def _image_reader(request: Request, services: ServicesDep) -> None:
    if getattr(services.settings, "public_mirror", False):
        return
    caller = await get_caller_async(request, services)
    if caller.role != DEVICE:
        check_role(caller, "operator")


async def _director_reader(device_id: str, request: Request, services: ServicesDep) -> None:
    caller = await get_caller_async(request, services)
    if caller.role != DEVICE:
        check_role(caller, "operator")
    elif caller.device_id != device_id:
        raise ForbiddenError(f"{caller.name} may read only its own director metadata")


IMAGE_READER = [Depends(_image_reader)]


def _stat(path: Path) -> os.stat_result | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


async def _metadata_file(
    signing: Signing, repo: str, filename: str, files: FileServing, request: Request
) -> Response:
    if not _METADATA.match(filename):
        raise NotFoundError(f"no metadata {filename!r}")
    folder = signing.metadata_folder(repo)
    if folder is None:  # --tuf-store database: one row by primary key, off the event loop
        blob = await anyio.to_thread.run_sync(signing.read_metadata, repo, filename)
        if blob is None:
            raise NotFoundError(f"no metadata {filename!r}")
        return _blob(blob, request)
    st = _stat(folder / filename)
    if st is None:
        raise NotFoundError(f"no metadata {filename!r}")
    return StaticFile(folder / filename, st, metadata_etag(st), files, "application/json",
                      headers=_NO_CACHE)  # fmt: skip


def _blob(blob: Blob, request: Request) -> Response:
    """A metadata row with the semantics of StaticFile that TUF clients use: ETag, 304."""
    headers = {**_NO_CACHE, "ETag": blob.etag}
    if if_none_match(request.headers.get("if-none-match"), blob.etag):
        return Response(status_code=304, headers=headers)
    return Response(blob.data, media_type="application/json", headers=headers)


@router.get("/image/metadata/{filename}", dependencies=IMAGE_READER)
@router.head("/image/metadata/{filename}", include_in_schema=False, dependencies=IMAGE_READER)
async def image_metadata(
    filename: str, services: ServicesDep, files: FilesDep, request: Request
) -> Response:
    signing = services.signing
    return await _metadata_file(signing, signing.image_repo(), filename, files, request)


@router.get("/director/{device_id}/metadata/{filename}",
            dependencies=[Depends(_director_reader)])  # fmt: skip
@router.head("/director/{device_id}/metadata/{filename}", include_in_schema=False,
             dependencies=[Depends(_director_reader)])  # fmt: skip
async def director_metadata(
    device_id: str, filename: str, services: ServicesDep, files: FilesDep, request: Request
) -> Response:
    # async: every idle device polls this; its work (an in-memory revocation set, one
    # stat of a local file) does not block, and a threadpool trip cost more than it
    # (metadata in the database: the query goes to a worker thread, see _metadata_file).
    try:
        validate_device_id(device_id)
    except ProtocolError as e:
        raise NotFoundError(f"unknown device {device_id!r}") from e
    if device_id in revoked_devices(services):
        raise ForbiddenError(f"device {device_id} is revoked")
    signing = services.signing
    return await _metadata_file(signing, signing.director_repo(device_id), filename, files,
                                request)  # fmt: skip


@router.get("/image/targets/models/{name}/{version}/{filename}", dependencies=IMAGE_READER)
@router.head("/image/targets/models/{name}/{version}/{filename}", include_in_schema=False,
             dependencies=IMAGE_READER)  # fmt: skip
def target_file(  # noqa: PLR0917 - FastAPI passes these by name
    name: str,
    version: str,
    filename: str,
    session: SessionDep,
    services: ServicesDep,
    files: FilesDep,
) -> Response:
    """``<sha256>.<file>`` (TUF consistent snapshots): the version's ONNX or a signed plan."""
    found = _TARGET.match(filename)
    if found is None:
        raise NotFoundError(f"no target {name}/{version}/{filename}")
    digest = found.group(1)
    row = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    if found.group(2) == "model.onnx":
        known = row is not None and row.sha256 == digest
    else:
        target = f"models/{name}/{version}/{found.group(2)}"
        signed = plans.list_plans(session, name, version)
        known = any(p.target == target and p.sha256 == digest for p in signed)
    if not known:
        raise NotFoundError(f"no target {name}/{version}/{filename}")
    # Asked by a reader the route's dependencies let in, for a registered target: now the
    # bytes may come from the artifact store itself (TUF verifies them on the device).
    presigned = services.store.presigned_url(digest)
    if presigned is not None:
        return RedirectResponse(presigned, status_code=307, headers={"Cache-Control": "no-store"})
    path = services.store.local_copy(digest)  # a bucket without presigning: via this disk
    st = _stat(path)
    if st is None:
        raise NotFoundError(f"artifact {digest} is missing from the store")
    # Content-addressed: the digest is the strongest ETag there is.
    return StaticFile(path, st, f'"{digest}"', files, "application/octet-stream", counted=True)
