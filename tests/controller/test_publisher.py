"""``model push --key``: the publisher signs the ``models`` role; the controller verifies.

Real HTTP (uvicorn in a thread), the real CLI in a subprocess, and the real agent
ModelUpdater installing the publisher-signed model. The refusals are uploads an attacker
(or a stale publisher) would make: a wrong key, a replayed older version, an existing
target changed, bytes that are not the signed ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.services import Services
from edgefleet.controller.signing.ceremony import init_keys
from edgefleet.controller.signing.keys import load_signer
from edgefleet.controller.signing.publisher import sign_models_update
from edgefleet.shared.hashing import sha256_file
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Targets
from tuf.api.serialization.json import JSONSerializer

REPO = Path(__file__).resolve().parents[2]
Serve = Callable[[Services], AbstractContextManager[httpx.Client]]


@pytest.fixture
def system(
    tmp_path: Path, make_services: Callable[..., Services], serve: Serve
) -> Iterator[tuple[httpx.Client, Services, Path]]:
    offline = tmp_path / "offline"
    init_keys(tmp_path / "data", offline)  # the models key is offline: the controller has none
    services = make_services()
    services.signing.ensure_device("cam-1")
    with serve(services) as client:
        yield client, services, offline / "image-models.pem"


def _signer(pem: Path) -> Signer:
    signer: Signer = load_signer(pem, pem.with_name("image-models.pub.json"))
    return signer


def _current(client: httpx.Client) -> bytes:
    base = "/tuf/image/metadata"
    ts = client.get(f"{base}/timestamp.json").json()
    snap = client.get(f"{base}/{ts['signed']['meta']['snapshot.json']['version']}.snapshot.json")
    version = snap.json()["signed"]["meta"]["models.json"]["version"]
    return bytes(client.get(f"{base}/{version}.models.json").content)


def _post(client: httpx.Client, name: str, artifact: Path, metadata: bytes) -> httpx.Response:
    with artifact.open("rb") as f:
        files: dict[str, tuple[str, BinaryIO | bytes]] = {
            "file": (artifact.name, f), "metadata": ("models.json", metadata)
        }  # fmt: skip
        return client.post(f"/v1/models/{name}/signed", files=files)


def _signed(client: httpx.Client, signer: Signer, name: str, artifact: Path) -> bytes:
    nxt = client.get(f"/v1/models/{name}/next-release").json()
    size, sha = artifact.stat().st_size, sha256_file(artifact)
    return sign_models_update(
        _current(client), signer, name=name, version=str(nxt["version"]),
        release=int(nxt["release"]), length=size, sha256=sha,
    )  # fmt: skip


def _resign(data: bytes, signer: Signer, edit: Callable[[Targets], None] | None = None) -> bytes:
    md = Metadata[Targets].from_bytes(data)
    if edit is not None:
        edit(md.signed)
    md.signatures.clear()
    md.sign(signer)
    return bytes(md.to_bytes(JSONSerializer()))


def _refused(answer: httpx.Response, needle: str) -> None:
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail and needle in detail, detail


def test_cli_push_with_key_installed_by_agent(
    system: tuple[httpx.Client, Services, Path], tmp_path: Path, onnx_model: Path
) -> None:
    client, services, key = system
    env = {**os.environ, "EDGEFLEET_URL": str(client.base_url)}
    plain = subprocess.run(
        [sys.executable, "-m", "edgefleet", "model", "push", "shapes", str(onnx_model)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert plain.returncode == 1 and "no key for the models role" in plain.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "edgefleet", "model", "push", "shapes", str(onnx_model),
         "--key", str(key)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "pushed shapes:v1 (release 1" in proc.stdout
    lineage = client.get("/v1/models/shapes/versions/v1/lineage").json()["lineage"]
    assert lineage["onnx"]["sha256"] == sha256_file(onnx_model) and lineage["pushed_by"]

    info = services.signing.target("models/shapes/v1/model.onnx")
    assert info.sha256 == sha256_file(onnx_model)
    services.signing.assign("cam-1", [info])
    agent = tmp_path / "agent"
    updater = ModelUpdater(UpdaterConfig(str(client.base_url), "cam-1", agent))
    try:
        (target,) = updater.refresh({}, None)
        got = updater.download(target, tmp_path / "dl")
    finally:
        updater.close()
    assert sha256_file(got) == info.sha256 and target.release == 1

    wrong = tmp_path / "wrong" / "image-models.pem"
    wrong.parent.mkdir()
    wrong.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    proc = subprocess.run(
        [sys.executable, "-m", "edgefleet", "model", "push", "shapes", str(onnx_model),
         "--version", "v9", "--key", str(wrong)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not signed by this key" in proc.stderr


def test_refusals_wrong_key_replay_changed_target_other_bytes(
    system: tuple[httpx.Client, Services, Path],
    make_onnx: Callable[[Path, int], Path],
    tmp_path: Path,
) -> None:
    client, services, key = system
    signer = _signer(key)
    v1, v2 = make_onnx(tmp_path / "v1.onnx", 32), make_onnx(tmp_path / "v2.onnx", 48)

    rogue = CryptoSigner.generate_ed25519()
    _refused(_post(client, "m", v1, _resign(_signed(client, signer, "m", v1), rogue)),
             "not signed by the delegation's keys")  # fmt: skip
    first = _signed(client, signer, "m", v1)
    _refused(_post(client, "m", v2, first), "do not match the uploaded bytes")
    assert _post(client, "m", v1, first).status_code == 200

    # replaying the metadata that published v1 (now one version behind) for new bytes
    _refused(_post(client, "m", v2, first), "must be 3 (current + 1)")

    def tamper(targets: Targets) -> None:
        old = targets.targets["models/m/v1/model.onnx"]
        old.hashes = {"sha256": sha256_file(v2)}
        old.length = v2.stat().st_size

    changed = _resign(_signed(client, signer, "m", v2), signer, tamper)
    _refused(_post(client, "m", v2, changed), "changes or drops the published target")

    def drop(targets: Targets) -> None:
        del targets.targets["models/m/v1/model.onnx"]

    _refused(_post(client, "m", v2, _resign(_signed(client, signer, "m", v2), signer, drop)),
             "changes or drops")  # fmt: skip

    def expire(targets: Targets) -> None:
        targets.expires = datetime.now(timezone.utc) - timedelta(days=1)

    _refused(_post(client, "m", v2, _resign(_signed(client, signer, "m", v2), signer, expire)),
             "expired")  # fmt: skip
    _refused(_post(client, "m", v2, b"{not json"), "unreadable")
    second = _post(client, "m", v2, _signed(client, signer, "m", v2))
    assert second.status_code == 200, second.text
    assert second.json()["release"] == 2
    assert services.signing.repos.image.version() == 3


def test_signed_push_of_a_non_detector_is_422(
    system: tuple[httpx.Client, Services, Path], tmp_path: Path
) -> None:
    """The publisher's signature does not make a 1x10 Identity a detector."""
    from tests.controller.test_detector_check import make_bad_module

    client, _services, key = system
    identity = make_bad_module().make_identity(tmp_path / "identity.onnx")
    answer = _post(client, "m", identity, _signed(client, _signer(key), "m", identity))
    assert answer.status_code == 422, answer.text
    assert "not a detector the agent can run" in answer.json()["detail"]
    assert client.get("/v1/models").json()["count"] == 0


def test_signed_push_is_judged_by_the_validation_gate(
    system: tuple[httpx.Client, Services, Path], tmp_path: Path
) -> None:
    """The publisher's signature does not skip the gate: a version below the policy's
    minimum is recorded as rejected, whichever push route brought it."""
    import importlib.util

    from edgefleet.controller.datasets import pack

    from edgefleet.tiny_models import tiny_onnx

    client, _services, key = system
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "models/make_dataset.py")
    assert spec is not None
    assert spec.loader is not None
    make_dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_dataset)
    make_dataset.generate(tmp_path / "val", 0, 5, seed=1)
    with pack(tmp_path / "val" / "images" / "val", tmp_path / "val.tar").open("rb") as f:
        assert client.post("/v1/datasets/val", files={"file": f}).status_code == 200
    policy = {"dataset": "val", "min_map50": 0.1, "min_images": 5}
    assert client.put("/v1/models/m/policy", json=policy).status_code == 200
    model = tiny_onnx(tmp_path / "tiny.onnx")  # detects nothing: mAP50 0
    answer = _post(client, "m", model, _signed(client, _signer(key), "m", model))
    assert answer.status_code == 200, answer.text
    assert answer.json()["gate_status"] == "rejected"
    assert answer.json()["gate"]["reasons"] == ["mAP50 0.000 (minimum 0.100)"]
