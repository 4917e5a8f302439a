"""Sampling configured per device group by the controller (real HTTP, the real CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import yaml
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.pipeline import FrameResult
from edgefleet.agent.sampler import Sampler, controller_settings
from edgefleet.agent.spool import DiskSpool
from edgefleet.agent.store import ModelPointer
from edgefleet.shared.sampling import SamplingConfig, StrategyConfig

from edgefleet.runtime.backend import Detection

FRAME = np.full((48, 64, 3), 100, np.uint8)
LOCAL = SamplingConfig(strategies=[
    StrategyConfig(name="uncertain", kind="near_threshold", per_minute=10),
])  # fmt: skip


def cli(client: httpx.Client, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def settings_file(folder: Path, name: str, per_minute: int) -> Path:
    path = folder / f"{name}.yaml"
    strategies = [{"name": "uncertain", "kind": "near_threshold", "band": [0.1, 0.4],
                   "per_minute": per_minute}]  # fmt: skip
    path.write_text(yaml.safe_dump({"sampling": {"strategies": strategies}}))
    return path


def agent(client: httpx.Client, device: str, labels: dict[str, str], folder: Path) -> Sampler:
    http = ControllerHttp(str(client.base_url), device)
    spool = DiskSpool(folder / device / "spool", max_entries=50)
    return Sampler(device, LOCAL, spool, http, clock=lambda: 0.0,
                   settings=partial(controller_settings, http, device, labels, LOCAL))  # fmt: skip


def feed(sampler: Sampler, frames: int) -> int:
    before = sampler.captured
    meta = ModelPointer("shapes", "v1", 1, "0" * 64, "model.onnx")
    for _ in range(frames):
        det = Detection(0, "circle", 0.2, (1.0, 1.0, 20.0, 20.0))
        sampler.on_frame(FrameResult(0, meta, 5.0, [det], None, FRAME, []))
        while not sampler._queue.empty():
            sampler.capture(sampler._queue.get())
    return sampler.captured - before


def test_two_groups_get_different_budgets_without_restart(
    client: httpx.Client, tmp_path: Path
) -> None:
    for selector, per_minute in (("site=a", 1), ("site=b", 3)):
        done = cli(client, "sampling", "set", "--selector", selector,
                   str(settings_file(tmp_path, selector, per_minute)))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"for {selector}: strategies uncertain" in done.stdout
    listed = cli(client, "sampling", "list")
    assert listed.returncode == 0 and "site=a" in listed.stdout and "site=b" in listed.stdout

    a = agent(client, "cam-a", {"site": "a", "store": "1"}, tmp_path)
    b = agent(client, "cam-b", {"site": "b"}, tmp_path)
    c = agent(client, "cam-c", {"site": "c"}, tmp_path)
    for s in (a, b, c):
        s.refresh()  # what the sampler thread does at start and on each poll
    assert (feed(a, 5), feed(b, 5), feed(c, 5)) == (1, 3, 5)  # c: no rule, local config
    answer = client.get("/v1/devices/cam-b/sampling", params={"label": "site=b"}).json()
    assert answer["selector"] == {"site": "b"} and answer["rule_id"] is not None

    # the operator raises site a's budget: applied on the next poll, no restart; what the
    # strategy already took this minute still counts
    done = cli(client, "sampling", "set", "--selector", "site=a",
               str(settings_file(tmp_path, "a2", 2)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert a.refresh() and not b.refresh()
    assert feed(a, 5) == 1
    # the rule goes away: back to the device's local config
    assert cli(client, "sampling", "delete", "--selector", "site=a").returncode == 0
    assert a.refresh() and a.config == LOCAL

    # the controller down: the sampler keeps what it has
    gone = ControllerHttp("http://127.0.0.1:9", "cam-d", timeout_s=1)
    down = Sampler("cam-d", LOCAL, DiskSpool(tmp_path / "d", max_entries=5), None,
                   settings=partial(controller_settings, gone, "cam-d", {}, LOCAL))  # fmt: skip
    assert down.refresh() is False and down.config == LOCAL


def test_bad_settings_are_one_line(client: httpx.Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies: [{name: x, kind: class}]\n")
    done = cli(client, "sampling", "set", "--selector", "site=a", str(bad))
    assert done.returncode != 0
    assert "needs classes" in done.stderr and "Traceback" not in done.stderr
    done = cli(client, "sampling", "set", "--selector", "site", str(bad))
    assert done.returncode != 0 and "bad selector" in done.stderr
    assert "Traceback" not in done.stderr
    r = client.put("/v1/sampling", json={"selector": {}, "settings": {"jpeg_quality": 5}})
    assert r.status_code == 400 and "jpeg_quality" in r.json()["detail"]
