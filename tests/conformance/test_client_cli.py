"""edgefleet-tuf-client's CLIENT-CLI commands against a real HTTP server and real metadata.

The full tuf-conformance suite runs outside pytest (docs/TRUST.md); this keeps the three
commands and their exit codes honest in the normal test run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgefleet.agent.conformance import main
from edgefleet.controller.signing import TufRepositories

from tests.agent.test_adversarial_tuf import AttackServer


@pytest.fixture
def repos(tmp_path: Path) -> TufRepositories:
    return TufRepositories(tmp_path / "controller")


@pytest.fixture
def server(repos: TufRepositories) -> Iterator[AttackServer]:
    with AttackServer(repos.data_dir) as s:
        yield s


def test_init_refresh_download_and_refusal(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    artifact = tmp_path / "v1.bin"
    artifact.write_bytes(b"model bytes" * 100)
    info = repos.image.add_model_target("yolo", "v1", 1, artifact)
    server.override[server.artifact_path(info)] = artifact.read_bytes()
    meta, targets = tmp_path / "client" / "metadata", tmp_path / "client" / "targets"
    meta.mkdir(parents=True)
    md_url = f"{server.url}/tuf/image/metadata"
    common = ["--metadata-dir", str(meta), "--metadata-url", md_url]

    root = repos.image_metadata_dir / "1.root.json"
    assert main(["--metadata-dir", str(meta), "init", str(root)]) == 0
    assert server.requests == []  # init makes no request
    assert main([*common, "refresh"]) == 0
    assert {p.name for p in meta.glob("*.json")} >= {"root.json", "timestamp.json", "targets.json"}
    download = [
        *common,
        "--target-name", info.target_path,
        "--target-base-url", f"{server.url}/tuf/image/targets",
        "--target-dir", str(targets),
        "download",
    ]  # fmt: skip
    assert main(download) == 0
    [got] = list(targets.iterdir())
    assert got.read_bytes() == artifact.read_bytes()
    served = len(server.requests)
    assert main(download) == 0  # cached: no second artifact download
    assert not any("/targets/" in p for p in server.requests[served:])

    server.override[server.artifact_path(info)] = b"tampered" * 137 + b"x" * 4
    got.unlink()
    assert main(download) == 1
    assert main([*common, "--target-name", "models/none/v9/model.onnx", "--target-base-url",
                 server.url, "--target-dir", str(targets), "download"]) == 1  # fmt: skip
