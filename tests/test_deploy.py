"""The shipped deploy files agree with each other and with the code: the controller unit
requires tokens and reaches the broker where deploy/mosquitto listens, with TLS; every
systemd unit passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgefleet.controller.settings import Settings

from edgefleet.cli import parse_args

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "deploy" / "systemd"
MOSQUITTO = REPO / "deploy" / "mosquitto" / "mosquitto.conf"


def _exec_start(unit: Path) -> list[str]:
    lines = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) >= 1, unit
    return shlex.split(lines[0].removeprefix("ExecStart="))


def test_the_controller_unit_is_secure_and_finds_the_shipped_broker(tmp_path: Path) -> None:
    argv = _exec_start(SYSTEMD / "edgefleet-controller.service")
    assert argv[0].endswith("/edgefleet") and "--insecure-dev" not in argv
    flags = parse_args(argv[1:])
    settings = Settings.from_flags(flags)
    assert settings.auth, "the shipped controller must require API tokens"
    broker = settings.broker
    assert broker.tls, "the shipped broker only speaks TLS"
    listeners = re.findall(r"^listener\s+(\d+)", MOSQUITTO.read_text(), re.MULTILINE)
    assert [str(broker.port)] == listeners
    # The CRL the broker reads is the one the CRL path unit copies the controller's to.
    crl = re.search(r"^crlfile\s+(\S+)", MOSQUITTO.read_text(), re.MULTILINE)
    assert crl is not None
    copy = _exec_start(SYSTEMD / "edgefleet-crl.service")
    assert copy[-1] == crl.group(1)
    assert copy[-2] == str(Path(flags["data"]) / "pki" / "device-ca.crl")
    watched = (SYSTEMD / "edgefleet-crl.path").read_text()
    assert f"PathChanged={copy[-2]}" in watched


def test_the_test_brokers_acl_is_the_shipped_one() -> None:
    from edgefleet.devbroker import ACL

    def rules(text: str) -> list[str]:
        return [" ".join(ln.split()) for ln in text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]  # fmt: skip

    shipped = rules((MOSQUITTO.parent / "edgefleet.acl").read_text())
    assert rules(ACL) == shipped
    assert "pattern read edgefleet/v1/fleet/ingest" in shipped  # devices read the hold


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    edgefleet = Path(sys.executable).parent / "edgefleet"
    for unit in SYSTEMD.iterdir():
        text = unit.read_text().replace("/opt/edgefleet/venv/bin/edgefleet", str(edgefleet))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *units],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    ours = [ln for ln in (out.stdout + out.stderr).splitlines() if "edgefleet" in ln]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


def _acl_rules(text: str, user: str) -> list[str]:
    """The ``topic`` rules of ``user``'s block in a Mosquitto ACL file."""
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
    start = lines.index(f"user {user}") + 1
    block = []
    for ln in lines[start:]:
        if ln.startswith(("user ", "pattern ")):
            break
        if ln.startswith("topic "):
            block.append(ln)
    return block


def _edgefleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_pki_replica_gives_any_replica_the_controllers_acl_block(tmp_path: Path) -> None:
    shipped = (MOSQUITTO.parent / "edgefleet.acl").read_text()
    controller = _acl_rules(shipped, "edgefleet-controller")
    # The shipped replica-2 block (run on a real broker by test_replicas_broker.py) is what
    # `pki replica --acl` writes for any replica.
    assert _acl_rules(shipped, "edgefleet-controller-2") == controller
    acl = tmp_path / "edgefleet.acl"
    acl.write_text(shipped)
    acl.chmod(0o640)
    data = tmp_path / "data"
    assert _edgefleet("pki", "init", "--data", str(data)).returncode == 0
    done = _edgefleet("pki", "replica", "--data", str(data), "7", "--acl", str(acl))
    assert done.returncode == 0, done.stderr
    assert f"added user edgefleet-controller-7 to {acl}" in done.stdout
    assert _acl_rules(acl.read_text(), "edgefleet-controller-7") == controller
    assert acl.read_text().startswith(shipped)  # nothing else changed
    assert acl.stat().st_mode & 0o777 == 0o640
    again = _edgefleet("pki", "replica", "--data", str(data), "7", "--acl", str(acl))
    assert again.returncode == 0 and "already has user edgefleet-controller-7" in again.stdout
    assert acl.read_text().count("user edgefleet-controller-7") == 1
    status = _edgefleet("pki", "status", "--data", str(data))
    assert status.returncode == 0 and "replica 7" in status.stdout  # its expiry is watched too

    foreign = tmp_path / "other.acl"
    foreign.write_text("pattern read x/%u\n")
    for bad in (foreign, tmp_path / "missing.acl"):
        refused = _edgefleet("pki", "replica", "--data", str(data), "8", "--acl", str(bad))
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
        assert refused.stderr.startswith("edgefleet: error: ")
    assert not (data / "pki" / "controller-8.pem").exists()  # refused before issuing
