"""The deploy files as shipped, used as deploy/README.md says, work together (issue 11, item 1).

Mosquitto runs on deploy/mosquitto/mosquitto.conf and edgefleet.acl, the controller on
deploy/systemd/edgefleet-controller.service's ExecStart and the agent on
edgefleet-agent.service's, with only their paths moved into a temp folder and their ports
(8883, 8600) changed to free ones. `pki init`, the admin token, the operator token and the
device's config and enrollment are the README's own lines, rewritten the same way. What
cannot be followed here: systemd itself (no User=, no sandbox: every process runs as the
test's user) and the device's host name, which becomes `localhost` (the broker certificate
names both). As root, the broker files belong to the `mosquitto` user as documented and
Mosquitto drops to it before reading them.

The device enrolls over HTTP with a one-time token, commits a rollout over mTLS, and is
then revoked: the broker closes its live session (the shipped dynamic security plugin
lines and ACL) and, once edgefleet-crl.service's copy lines ran and the broker reloaded,
refuses its reconnects, within docs/TRUST.md's bounds. Writes and reads without a token get 401.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from edgefleet.devbroker import DYNSEC_PLUGIN, find_mosquitto, free_port
from tests.e2e.conftest import REPO, SAMPLES, Procs
from tests.waiting import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEPLOY = REPO / "deploy"
EDGEFLEET = Path(sys.executable).parent / "edgefleet"
SHIPPED_EXE = "/opt/edgefleet/venv/bin/edgefleet"
MQTTS_PORT, HTTP_PORT = 8883, 8600  # the shipped ports
DEVICE_HOST = "edgefleet.example.internal"  # the README's host name for controller and broker
# docs/TRUST.md's bounds: the live session closed within 2 s of the revoke answer, a new
# connection refused within 5 s (the CRL path unit's copy and reload; here the test's).
KICK_S, REFUSE_S = 2.0, 5.0
MODEL = REPO / "models" / "shapes" / "v1" / "model.onnx"


@dataclass(frozen=True)
class Moves:
    """The only rewrites: absolute /etc and /var/lib paths into ``root``, the shipped
    executable to this venv's, the shipped ports to free ones."""

    root: Path
    mqtts_port: int
    http_port: int

    def __call__(self, text: str) -> str:
        text = text.replace(SHIPPED_EXE, str(EDGEFLEET))
        text = re.sub(r"(?<![\w./-])(?=/(?:etc|var/lib)/)", str(self.root), text)
        text = re.sub(rf"\b{MQTTS_PORT}\b", str(self.mqtts_port), text)
        return re.sub(rf"\b{HTTP_PORT}\b", str(self.http_port), text)

    def path(self, shipped: str) -> Path:
        return Path(self(shipped))


def _exec_start(unit: str, moves: Moves) -> list[str]:
    lines = (DEPLOY / "systemd" / unit).read_text().splitlines()
    line = next(ln for ln in lines if ln.startswith("ExecStart="))
    return shlex.split(moves(line.removeprefix("ExecStart=")))


def _readme_section(heading: str) -> str:
    """deploy/README.md from ``heading`` to the next heading (not a comment in a block)."""
    lines = (DEPLOY / "README.md").read_text().splitlines()
    start = lines.index(heading) + 1
    out, fenced = [], False
    for line in lines[start:]:
        fenced ^= line.lstrip().startswith("```")
        if line.startswith("#") and not fenced:
            break
        out.append(line)
    return "\n".join(out) + "\n"


def _readme_command(section: str, prefix: str) -> list[str]:
    """The section's shell line starting with ``prefix`` (continuations joined)."""
    block = re.sub(r"\\\n\s*", " ", section)
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if " ".join(words).startswith(prefix):
            return words
    raise AssertionError(f"deploy/README.md has no `{prefix}` line any more")


def _broker_user() -> str:
    """The README's `--broker-user mosquitto` as root (Mosquitto then drops to it); else us:
    only root may give files away, and Mosquitto drops privileges only when root."""
    if os.geteuid() == 0 and "mosquitto" in {u.pw_name for u in pwd.getpwall()}:
        return "mosquitto"
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def root() -> Iterator[Path]:
    # Not tmp_path: its parents are 0700, and the broker's user must reach its files.
    folder = Path(tempfile.mkdtemp(prefix="edgefleet-deploy-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, argv: list[str], token: str | None = None) -> str:
        env = {**os.environ, "EDGEFLEET_URL": self.url}
        env.pop("EDGEFLEET_TOKEN", None)
        if token:
            env["EDGEFLEET_TOKEN"] = token
        argv = [str(EDGEFLEET), *argv[1:]] if argv[0].endswith("edgefleet") else argv
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr[-2000:]}"
        return done.stdout


def _install_broker(moves: Moves, user: str) -> Path:
    """deploy/mosquitto's files where the README installs them, and the plugin's store."""
    conf = moves.path("/etc/mosquitto/mosquitto.conf")
    conf.parent.mkdir(parents=True)
    for name in ("mosquitto.conf", "edgefleet.acl"):
        dest = conf.parent / name
        dest.write_text(moves((DEPLOY / "mosquitto" / name).read_text()))
        dest.chmod(0o644)
    pw = pwd.getpwnam(user)
    state = moves.path("/var/lib/mosquitto")  # the mosquitto package makes it, owned so
    state.mkdir(parents=True)
    os.chown(state, pw.pw_uid, pw.pw_gid)
    section = _readme_section("## One machine (controller + Mosquitto + SQLite)")
    echo = re.search(r"^echo '(.*)' > (\S+)$", section, re.MULTILINE)
    assert echo is not None, "the README no longer creates the dynamic security store"
    store = moves.path(echo.group(2))
    store.write_text(echo.group(1) + "\n")
    os.chown(store, pw.pw_uid, pw.pw_gid)
    store.chmod(0o600)
    return conf


def _agent_config(moves: Moves) -> tuple[Path, dict[str, Any]]:
    section = _readme_section("## A device (Jetson or CPU box)")
    heredoc = re.search(r"cat > (\S+) <<'YAML'\n(.*?)\nYAML\n", section, re.DOTALL)
    assert heredoc is not None, "the README no longer writes the agent's config"
    shipped = yaml.safe_load(heredoc.group(2))
    assert urlsplit(shipped["mqtt_url"]).hostname == DEVICE_HOST
    cfg = yaml.safe_load(moves(heredoc.group(2)).replace(DEVICE_HOST, "localhost"))
    cfg["source"] = {"kind": "folder", "path": str(SAMPLES), "fps": 10}  # no camera here
    path = moves.path(heredoc.group(1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _crl_service(moves: Moves, mosquitto: subprocess.Popen[bytes]) -> None:
    """What edgefleet-crl.path starts on a new CRL: its copy lines as shipped (paths moved);
    its `systemctl reload-or-restart mosquitto` is SIGHUP (mosquitto.service's ExecReload)."""
    unit = (DEPLOY / "systemd" / "edgefleet-crl.service").read_text().splitlines()
    starts = [
        shlex.split(ln.removeprefix("ExecStart=")) for ln in unit if ln.startswith("ExecStart=")
    ]
    assert starts[-1][-2:] == ["reload-or-restart", "mosquitto.service"]
    for argv in starts[:-1]:
        subprocess.run([moves(w) for w in argv], check=True, timeout=30)
    mosquitto.send_signal(signal.SIGHUP)


def _committed(http: httpx.Client, device: str, version: str) -> bool:
    r = http.get(f"/v1/devices/{device}")
    d = r.json() if r.status_code == 200 else {}
    return d.get("version") == version and d.get("phase") == "COMMITTED"


@pytest.mark.skipif(not Path(DYNSEC_PLUGIN).exists(), reason="no dynamic security plugin")
def test_the_shipped_stack_enrolls_rolls_out_and_revokes_over_mtls(
    tmp_path: Path, root: Path
) -> None:
    moves = Moves(root, free_port(), free_port())
    url = f"http://127.0.0.1:{moves.http_port}"
    cli = Cli(url)
    user = _broker_user()
    mtls = _readme_section("### The broker over mTLS (Mosquitto 2.0)")
    init = [moves(w) for w in _readme_command(mtls, "edgefleet pki init")]
    init[init.index("--broker-user") + 1] = user
    # devices check the broker's host name: the certificate must carry the one they use
    assert DEVICE_HOST in {init[i + 1] for i, w in enumerate(init) if w == "--broker-name"}
    cli(init)
    admin = cli([*map(moves, _readme_command(mtls, "edgefleet token create --role admin")),
                 "--quiet"]).strip()  # fmt: skip
    conf = _install_broker(moves, user)

    procs = Procs(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(procs.stop_all)
        procs.start("mosquitto", [find_mosquitto(), "-c", str(conf)])
        controller = _exec_start("edgefleet-controller.service", moves)
        assert "--insecure-dev" not in controller
        procs.start("controller", controller)
        http = stack.enter_context(httpx.Client(base_url=url, timeout=10))

        def healthy() -> bool:
            try:
                return http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("controller /healthz", healthy, timeout=60)
        # Secure as shipped: no write without a token.
        assert http.post("/v1/tokens", json={"role": "admin", "name": "x"}).status_code == 401
        assert http.post("/v1/rollouts", json={}).status_code == 401
        # ... and no read: the fleet, the audit log, the models' TUF repository.
        for path in ("/v1/devices", "/v1/audit", "/tuf/image/metadata/timestamp.json"):
            assert http.get(path).status_code == 401, path

        def broker() -> str:
            return procs.log("mosquitto")

        operator = cli([*_readme_command(mtls, "EDGEFLEET_URL=")[2:], "--quiet"], admin)
        operator = operator.strip()
        http.headers["Authorization"] = f"Bearer {operator}"
        config, cfg = _agent_config(moves)
        device = cfg["device_id"]
        enroll = _readme_command(_readme_section("## A device (Jetson or CPU box)"),
                                 f"{SHIPPED_EXE} agent enroll")  # fmt: skip
        assert enroll[-1] == "efe_..."
        token_out = cli(["edgefleet", "device", "token", device], operator)
        enroll[-1] = next(ln for ln in token_out.splitlines() if ln.startswith("efe_"))
        cli([moves(w) for w in enroll])
        agent = _exec_start("edgefleet-agent.service", moves)
        assert agent[agent.index("--config") + 1] == str(config)  # the file the README writes
        procs.start("agent", agent)
        wait_for(f"{device} online", lambda: (http.get(f"/v1/devices/{device}").json()
                                              .get("online")), timeout=60)  # fmt: skip

        # A real detector: the agent's health check refuses one that never scores.
        cli(["edgefleet", "model", "push", "shapes", str(MODEL), "--version", "v1"], operator)
        site = cfg["labels"]["site"]
        cli(["edgefleet", "rollout", "create", "shapes:v1", "--selector", f"site={site}"],
            operator)  # fmt: skip
        try:
            wait_for(f"{device} committed shapes v1", lambda: _committed(http, device, "v1"), 60)
        except AssertionError:
            logs = "\n".join(f"--- {n}\n{procs.log(n)[-3000:]}" for n in procs.running)
            pytest.fail(f"the rollout did not reach {device}\n{logs}")

        # Revocation through the shipped files: the plugin kicks the live session at once,
        # and once edgefleet-crl.service has handed the broker the new CRL it refuses the
        # device's reconnects.
        director = f"/tuf/director/{device}/metadata/timestamp.json"
        assert http.get(director).status_code == 200
        cli(["edgefleet", "device", "revoke", device], admin)
        revoked = time.monotonic()
        assert http.get(director).status_code == 403  # its HTTP side is cut in the same call
        kicked = f"Client {device} been disconnected by administrative action"
        wait_for("the broker closes the revoked session", lambda: kicked in broker(), KICK_S)
        took = {"kick": time.monotonic() - revoked}
        hup = len(broker())
        _crl_service(moves, procs.running["mosquitto"])
        wait_for("a reconnect refused for the revoked certificate",
                 lambda: "certificate verify failed" in broker()[hup:],
                 REFUSE_S - (time.monotonic() - revoked))  # fmt: skip
        took["refused"] = time.monotonic() - revoked
        reloaded = broker()[hup:]
        assert "Reloading config" in reloaded
        assert f"as {device} (" not in reloaded.split("Reloading config", 1)[1]
        print(" ".join(f"{k} {v:.2f} s" for k, v in took.items()))
    # Both came in over mTLS (the broker's only listener), each under its certificate's CN
    # as user name and client id.
    broker_log = procs.log("mosquitto")
    for cn in (device, "edgefleet-controller"):
        assert re.search(rf"New client connected from \S+ as {cn} \(.*u'{cn}'\)", broker_log), cn
    ident = Path(cfg["data_dir"]) / "identity"  # what `agent enroll` wrote, the config reads
    assert cfg["tls"] == {"ca": str(ident / "ca.pem"), "cert": str(ident / "device.pem"),
                          "key": str(ident / "device.key")}  # fmt: skip
