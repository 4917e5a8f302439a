"""TUF metadata in the database (``--tuf-store database``), on real SQLite and PostgreSQL:
replicas with their own data folders (the same keys) sign on top of each other through
the database, a signing waits for another process's, and devices fetch the same layout
from /tuf with ETags and 304s (the agent's real updater)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller import registry
from edgefleet.controller.db import make_engine
from edgefleet.controller.services import Services
from edgefleet.controller.signing import TufRepositories
from edgefleet.controller.signing.storage import DatabaseStore
from edgefleet.shared.errors import ConfigError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from edgefleet.tiny_models import tiny_onnx
from tests.controller.conftest import serving
from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test
from tests.controller.test_updater_against_controller import Seen

DEVICE = "cam-1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def engines(db_url: str) -> Iterator[Callable[[], Engine]]:
    made: list[Engine] = []

    def make() -> Engine:  # one per replica, as each process opens its own
        made.append(make_engine(db_url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def _artifact(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(name.encode() * 100)
    return path


def _replica(data: Path, engine: Engine, keys_from: Path | None = None) -> TufRepositories:
    if keys_from is not None:  # what `deploy/README.md` asks: every replica the same keys
        shutil.copytree(keys_from / "keys", data / "keys")
    return TufRepositories(data, store=DatabaseStore(engine))


def test_replicas_on_one_database_sign_on_top_of_each_other(
    tmp_path: Path, engines: Callable[[], Engine]
) -> None:
    a = _replica(tmp_path / "a", engines())
    b = _replica(tmp_path / "b", engines(), keys_from=tmp_path / "a")
    v1 = a.image.add_model_target("shapes", "v1", 1, _artifact(tmp_path, "one"))
    assert b.image.target(v1.target_path) == v1  # b never saw v1 in memory
    v2 = b.image.add_model_target("shapes", "v2", 2, _artifact(tmp_path, "two"))
    assert a.image.version() == b.image.version() == 3
    assert a.image.target(v2.target_path) == v2

    assert a.director.ensure_device(DEVICE) == b.director.ensure_device(DEVICE) == 1
    assert a.assign(DEVICE, [v1]) == 2
    assert b.assign(DEVICE, [v2]) == 3  # not a second "version 2" with other content
    assert a.director.director_version(DEVICE) == 3
    assert [t.version for t in a.director.assigned(DEVICE)] == ["v2"]
    assert b.director.devices() == [DEVICE]
    # No metadata file on either replica's disk: the database holds all of it.
    assert not (tmp_path / "a" / "tuf").exists() and not (tmp_path / "b" / "tuf").exists()
    names = b.store.files(b.director_repo(DEVICE)).names()
    assert "1.root.json" in names and "3.targets.json" in names
    assert "1.targets.json" not in names  # pruned below current - 1, in the same hold


def test_a_replica_with_other_keys_is_refused(
    tmp_path: Path, engines: Callable[[], Engine]
) -> None:
    _replica(tmp_path / "a", engines())
    with pytest.raises(ConfigError, match="not the one database:image/metadata trusts"):
        _replica(tmp_path / "b", engines())  # generated its own keys: a config mistake


def test_a_folder_repository_moves_into_the_database_once(
    tmp_path: Path, engines: Callable[[], Engine]
) -> None:
    data = tmp_path / "a"
    before = TufRepositories(data)  # e.g. `edgefleet keys init`, or a folder-store run
    v1 = before.image.add_model_target("shapes", "v1", 1, _artifact(tmp_path, "one"))
    before.assign(DEVICE, [v1])
    after = _replica(data, engines())
    assert after.image.target(v1.target_path) == v1
    assert after.director.director_version(DEVICE) == 2
    root = (data / "tuf" / "image" / "metadata" / "1.root.json").read_text()
    assert after.newest_root(after.image_repo()) == root


def test_a_signing_waits_for_the_other_process(
    tmp_path: Path, engines: Callable[[], Engine], db_url: str
) -> None:
    repos = _replica(tmp_path / "a", engines())
    holder = subprocess.Popen(  # another replica, holding the signing lock until told
        [sys.executable, "-c",
         "import sys\n"
         "from edgefleet.controller.db import make_engine\n"
         "from edgefleet.controller.signing.storage import DatabaseStore\n"
         "with DatabaseStore(make_engine(sys.argv[1])).lock():\n"
         "    print('held', flush=True); sys.stdin.readline()\n", db_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    signer = threading.Thread(target=repos.director.ensure_device, args=("cam-2",))
    signer.start()
    signer.join(timeout=0.5)
    assert signer.is_alive()  # it cannot sign while the other process holds the lock
    holder.stdin.write("go\n")
    holder.stdin.close()
    signer.join(timeout=60)
    assert not signer.is_alive()  # and signs once the lock is released
    assert holder.wait(timeout=60) == 0
    holder.stdout.close()
    assert repos.director.director_version("cam-2") >= 1


def test_the_updater_against_metadata_in_the_database(
    make_services: Callable[..., Services], tmp_path: Path, db_url: str
) -> None:
    services = make_services(database_url=db_url, tuf_store="database")
    with Session(services.engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        row = registry.push_version(s, services.store, services.signing, "m", f, version="v1")
    services.signing.assign(DEVICE, [services.signing.target("models/m/v1/model.onnx")])
    assert not (tmp_path / "data" / "tuf").exists()
    seen = Seen()
    with serving(services) as client:
        url = str(client.base_url).rstrip("/")
        fetcher = DeadlineFetcher(FetcherConfig(deadline_s=30, timeout_s=10), observer=seen)
        up = ModelUpdater(UpdaterConfig(url, DEVICE, tmp_path / "agent"), fetcher)
        [target] = up.refresh({}, None)
        assert target.sha256 == row.sha256
        seen.answers.clear()
        for _ in range(3):
            assert up.refresh({}, None) == [target]
        assert seen.answers == [("timestamp.json", 200)] + [("timestamp.json", 304)] * 2
        assert client.get("/tuf/image/metadata/..json").status_code == 404
        assert client.get("/tuf/director/cam-9/metadata/1.root.json").status_code == 404
