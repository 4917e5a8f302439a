"""`edgefleet demo` runs the whole system: v1, v2, a bad canary stopped, a drift scene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

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


def test_demo_exits_0_with_every_agent_on_v2(tmp_path: Path) -> None:
    """The Quick start's demo as it runs by default: over mTLS, every agent enrolled (own
    key, CSR, one-time token), the controller secured. One run for both, since a demo run
    is the suite's longest test (`--plain` changes only the broker and its URL)."""
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=500,
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
    # mTLS all the way: the broker requires certificates, each agent enrolled with its own.
    assert "broker      mqtts://localhost:" in out.stdout
    assert out.stdout.count("enrolled demo-cam-") == 3
    conf = (tmp_path / "controller" / "mosquitto" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf
    for n in (1, 2, 3):
        device = f"demo-cam-{n}"
        ident = tmp_path / "agents" / device / "identity"
        cert = x509.load_pem_x509_certificate((ident / "device.pem").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device
        assert (tmp_path / "agents" / device / "trust" / "image-root.json").is_file()
        assert "trusting" not in (tmp_path / "logs" / f"agent-{n}.log").read_text()
    assert "everything it started is stopped" in out.stdout
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
