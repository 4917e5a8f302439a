"""`edgefleet demo` runs the whole system: v1, v2, a bad canary stopped, a drift scene."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _tables(stdout: str) -> list[list[dict[str, str]]]:
    """Each ``device list`` table as rows keyed by its header (columns may be added)."""
    tables = []
    for chunk in stdout.split("$ edgefleet device list")[1:]:
        lines = chunk.splitlines()
        header = next(line.split() for line in lines if line.startswith("DEVICE "))
        rows = [dict(zip(header, line.split(), strict=False)) for line in lines
                if line.startswith("demo-cam-")]  # fmt: skip
        tables.append(rows)
    return tables


def test_demo_exits_0_with_every_agent_on_v2(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "demo", "--plain", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after_v2, after_canary = _tables(out.stdout)
    assert len(after_v2) == 3
    assert all(r["ONLINE"] == "yes" and r["MODEL"] == "shapes" and r["VERSION"] == "v2"
               for r in after_v2)  # fmt: skip
    # The bad canary was stopped by its ML gates and sent back to v2's bytes (re-signed).
    assert "stopped automatically" in out.stdout
    assert all(r["VERSION"].startswith("v2") and r["PHASE"] == "COMMITTED" for r in after_canary)
    # The drift scene: one store's light goes down, an alert fires, samples come home.
    assert "$ edgefleet alerts list" in out.stdout
    assert "firing" in out.stdout
    assert "exported" in out.stdout
    assert (tmp_path / "dataset" / "data.yaml").is_file()
    assert "everything it started is stopped" in out.stdout
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
