"""Two controllers on one data dir: each signs on top of what the other published.

Each ``TufRepositories`` here is what one controller process builds: its own in-memory
chains and its own handle on ``DATA/tuf/.lock`` (flock excludes handles, not processes).
A child process holding the lock shows that a write waits for it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgefleet.controller.signing import TufRepositories
from edgefleet.controller.signing._chain import RepoLock
from edgefleet.shared.errors import TrustError


def _artifact(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(name.encode() * 100)
    return path


def test_replicas_sign_on_top_of_each_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a, b = TufRepositories(data), TufRepositories(data)
    v1 = a.image.add_model_target("shapes", "v1", 1, _artifact(tmp_path, "one"))
    # b never saw v1 in memory: it finds it on disk and signs v2 above it.
    assert b.image.target(v1.target_path) == v1
    v2 = b.image.add_model_target("shapes", "v2", 2, _artifact(tmp_path, "two"))
    assert a.image.version() == b.image.version() == 3
    assert a.image.target(v2.target_path) == v2

    # First sight of a device on both: one chain, not two version-1 roots.
    assert a.director.ensure_device("cam-1") == b.director.ensure_device("cam-1") == 1
    assert a.assign("cam-1", [v1]) == 2
    assert b.assign("cam-1", [v2]) == 3  # not a second "version 2" with other content
    assert a.director.director_version("cam-1") == 3
    assert [t.version for t in a.director.assigned("cam-1")] == ["v2"]
    assert a.assign("cam-1", [v1]) == 4


def test_a_write_waits_for_the_other_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    repos = TufRepositories(data)
    lock = data / "tuf" / ".lock"
    holder = subprocess.Popen(  # holds the lock for a moment, like a replica signing
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
         "print('held', flush=True); time.sleep(1.5)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    repos.director.ensure_device("cam-2")
    waited = time.monotonic() - start
    holder.wait(timeout=30)
    holder.stdout.close()
    assert waited > 0.3  # it could not sign while the other process held the lock


def test_lock_is_reentrant_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    one = RepoLock(path)
    other = RepoLock(path, timeout_s=0.1)
    with one, one, pytest.raises(TrustError, match="held by another process"), other:
        pass  # re-entrant for ``one``; ``other`` (a second handle) cannot get in
    with RepoLock(path, timeout_s=0.1):  # released
        pass
