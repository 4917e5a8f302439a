"""`edgefleet demo` (mTLS by default): agents enroll (own key, CSR, one-time token) and the
whole demo runs over the mTLS Mosquitto (require_certificate, %u ACLs), the controller included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_over_mtls_with_enrolled_agents(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "demo", "--agents", "2",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "broker      mqtts://localhost:" in out.stdout
    assert out.stdout.count("enrolled demo-cam-") == 2
    assert "rollout 2 succeeded" in out.stdout
    conf = (tmp_path / "controller" / "mosquitto" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf
    for device in ("demo-cam-1", "demo-cam-2"):
        ident = tmp_path / "agents" / device / "identity"
        cert = x509.load_pem_x509_certificate((ident / "device.pem").read_bytes())
        assert cert.subject.rfc4514_string().endswith(f"CN={device}") or device in str(cert.subject)
        assert (tmp_path / "agents" / device / "trust" / "image-root.json").is_file()
        assert "trusting" not in (tmp_path / "logs" / f"agent-{device[-1]}.log").read_text()
