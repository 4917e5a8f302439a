"""The README's "Using it" section, run as written: terminal 1's block (a local-only
Mosquitto and the controller) and terminal 2's (an operator and one real agent), in a folder
that holds the checkout's ``models/`` and ``.venv`` as the README assumes. Only the ports are
changed, to free ones. After every ``edgefleet device list`` the agent's own ``/metrics``
is read: the table must show the model and version the agent says it serves."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from edgefleet.devbroker import free_port
from tests.e2e.conftest import REPO, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PORTS = ("18830", "8600", "9600")  # broker, controller, agent metrics, as the README has them
SERVED = re.compile(r'^edgefleet_agent_model_info\{[^}]*model="([^"]*)",version="([^"]*)"', re.M)
MARK = "@@agent-metrics"
WINDOW = '--window "* 2 * * *"'  # the README's maintenance window (02:00-02:59 UTC)


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def on_free_ports(block: str, ports: dict[str, str]) -> str:
    for old, new in ports.items():
        block = re.sub(rf"(?<=[:\s]){old}\b", new, block)
    return block


def with_metric_reads(block: str, metrics_port: str) -> str:
    """After each ``device list``, print the agent's /metrics behind a marker line."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    code = f"import urllib.request as u; print(u.urlopen('{url}').read().decode())"
    read = f'echo {MARK}; python -c "{code}"'
    out = []
    for line in block.splitlines():
        out.append(line)
        if line.startswith("edgefleet device list"):
            out.append(read)
    return "\n".join(out) + "\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder laid out like the checkout: ``models/`` and ``.venv`` are the real ones."""
    (tmp_path / "models").symlink_to(REPO / "models")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


@pytest.fixture
def terminal_1(folder: Path) -> Iterator[tuple[dict[str, str], subprocess.Popen[bytes]]]:
    ports = {old: str(free_port()) for old in PORTS}
    block = on_free_ports(readme_blocks()[0], ports)
    with (folder / "terminal-1.log").open("wb") as log:
        proc = subprocess.Popen(["bash", "-c", block], cwd=folder, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{ports['8600']}/healthz"
        wait_for("the controller from terminal 1", lambda: _up(url, proc, folder), timeout=120)
        yield ports, proc
    finally:
        _stop_group(proc)


def _up(url: str, proc: subprocess.Popen[bytes], folder: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError((folder / "terminal-1.log").read_text()[-3000:])
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def fleet_vs_agent(stdout: str, by: list[str]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """For each ``device list``: (model, version) in the table and in the agent's /metrics
    (and, into ``by``, its BY column: what set the desired version)."""
    pairs = []
    chunks = stdout.split(MARK)
    for before, after in itertools.pairwise(chunks):
        tables = [line for line in before.splitlines() if line.startswith("DEVICE ")]
        assert tables, before[-2000:]
        head = [h for h in tables if " MODEL " in h][-1]
        header = head.split()
        line = next(line for line in before.splitlines()[::-1]
                    if line.startswith("store-north-cam-1 "))  # fmt: skip
        row = line.split()
        by.append(line[head.index(" BY ") + 1 : head.index(" RELEASE ")].strip())
        shown = (row[header.index("MODEL")], row[header.index("VERSION")])
        # each step ends where the controller wanted it: desired is what is reported
        assert row[header.index("DESIRED")] == ":".join(shown), before[-1500:]
        served = SERVED.findall(after)
        assert len(served) == 1, after[:2000]
        pairs.append((shown, served[0]))
    return pairs


def test_using_it_runs_as_written_and_the_fleet_table_tells_the_truth(
    folder: Path, terminal_1: tuple[dict[str, str], subprocess.Popen[bytes]]
) -> None:
    ports, _ = terminal_1
    block = with_metric_reads(on_free_ports(readme_blocks()[1], ports), ports["9600"])
    assert WINDOW in block
    closed = (datetime.now(timezone.utc).hour + 12) % 24  # twelve hours away: closed now
    block = block.replace(WINDOW, f'--window "* {closed} * * *"')
    proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        _stop_group(proc)
    stdout = out.decode(errors="replace")
    (folder / "terminal-2.log").write_text(stdout)
    agent_log = folder / "agent.log"
    why = (
        stdout[-4000:]
        + "\n--- agent.log:\n"
        + (agent_log.read_text(errors="replace")[-3000:] if agent_log.exists() else "(none)")
    )
    assert proc.returncode == 0, why
    by: list[str] = []
    pairs = fleet_vs_agent(stdout, by)
    assert len(pairs) == readme_blocks()[1].count("edgefleet device list"), why
    for shown, served in pairs:
        assert shown == served, why
    # The walk went v1, v2, back to v1's bytes (rollback), v2 (a pin), v1 (a channel), v1
    # still (rollout 3 waits for its window), v2 (the window lifted): after the first two,
    # each is a lower release than what the device ran, so each is a re-signed copy.
    versions = [shown[1] for shown, _ in pairs]
    assert versions[:2] == ["v1", "v2"], versions
    for got, want in zip(versions[2:], ["v1", "v2", "v1", "v1", "v2"], strict=True):
        assert re.fullmatch(rf"{want}-rb\d+", got), versions
    assert versions[4] == versions[5], versions  # held by the window: nothing installed
    # While the window held it, rollout status and the fleet table both said so.
    held = stdout.split(MARK)[5]
    assert re.search(r"^waiting for window \(opens .*\d\d:00 UTC\)$", held, re.M), why
    row = next(line for line in held.splitlines()[::-1] if line.startswith("store-north-cam-1 "))
    assert re.search(r"window closed \(opens (\d\d-\d\d )?\d\d:00 UTC\)", row), row
    assert "rollout 3: window none, now running" in stdout, why
    # BY names what set each step's version; a deleted pin's device keeps what it set.
    assert by == ["rollout/1", "rollout/2", "rollout/2:rollback", "pin/1", "pin/2:stable",
                  "pin/2:stable (deleted)", "rollout/3"], by  # fmt: skip
    assert (folder / "agent-data").is_dir() and (folder / "ctl").is_dir()
