"""A private Mosquitto for the demo and the tests, on a free port, with our own config.

Never the system's 1883: the port is picked free on 127.0.0.1 and the config written into
a folder of ours. The config template lives beside this file (``mosquitto-dev.conf``).
"""

from __future__ import annotations

import contextlib
import getpass
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgefleet.shared.errors import TransportError

START_TIMEOUT = 10.0  # seconds
CRL_POLL_S = 0.5  # how often a TLS broker looks for a rewritten CRL


# Listening ports are drawn below Linux's ephemeral range (32768-60999 by default): a port
# the kernel hands out with bind(0) is also what it hands to outgoing connections, so on a
# busy machine another client could take it between our check and the server's bind.
LISTEN_PORTS = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, outside the range outgoing connections take theirs from."""
    for _ in range(200):
        port = random.randrange(*LISTEN_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # all taken: any free one
        s.bind((host, 0))
        found: int = s.getsockname()[1]
        return found


def find_mosquitto() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    raise TransportError(
        "mosquitto not found on PATH: install it (apt-get install mosquitto) "
        "or use the README's quick start, which does"
    )


def queue_settings() -> str:
    """The shipped queue limits (``mosquitto-queues.conf``), as config lines."""
    text = resources.files("edgefleet").joinpath("mosquitto-queues.conf").read_text()
    return "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def render_config(port: int, data_dir: Path) -> str:
    template = resources.files("edgefleet").joinpath("mosquitto-dev.conf").read_text()
    return template.format(port=port, data_dir=data_dir, queues=queue_settings())


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TransportError(f"mosquitto exited at start: {log.read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TransportError(f"mosquitto did not listen on port {port} within {START_TIMEOUT}s")


@dataclass(frozen=True)
class BrokerTls:
    """The files of the mTLS mode (``edgefleet pki init`` writes them)."""

    ca: Path  # device CA: verifies client certificates
    cert: Path  # the broker's server certificate
    key: Path
    crl: Path | None = None  # revoked device certificates


# The production ACL (deploy/mosquitto/edgefleet.acl): %u is the certificate CN.
_CONTROLLER_RIGHTS = """\
topic read  edgefleet/v1/devices/+/state
topic read  edgefleet/v1/devices/+/events
topic read  edgefleet/v1/devices/+/telemetry
topic read  edgefleet/v1/devices/+/status
topic write edgefleet/v1/devices/+/desired
topic write edgefleet/v1/devices/+/commands
topic write edgefleet/v1/fleet/ingest
topic read  $SYS/broker/publish/messages/dropped
topic write $CONTROL/dynamic-security/v1
"""
ACL = """\
pattern read  edgefleet/v1/devices/%u/desired
pattern read  edgefleet/v1/devices/%u/commands
pattern write edgefleet/v1/devices/%u/state
pattern write edgefleet/v1/devices/%u/events
pattern write edgefleet/v1/devices/%u/telemetry
pattern write edgefleet/v1/devices/%u/status
pattern read  edgefleet/v1/fleet/ingest
""" + "".join(
    f"\nuser {user}\n{_CONTROLLER_RIGHTS}"
    for user in ("edgefleet-controller", "edgefleet-controller-2")
)

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
# An empty dynamic security store: the controller only ever adds disabled clients to it
# (a revoked device's kick); the ACL stays the acl_file above, which Mosquitto checks first.
DYNSEC_EMPTY = '{"clients": [], "groups": [], "roles": []}\n'


def render_tls_config(port: int, data_dir: Path, tls: BrokerTls) -> str:
    """deploy/mosquitto/mosquitto.conf's shape on a private port and folder."""
    crl = f"crlfile {tls.crl}\n" if tls.crl else ""
    # Started as root, Mosquitto drops to user "mosquitto", which cannot read our 0700
    # key folder; as anyone else the option is ignored.
    return f"""\
user {getpass.getuser()}
per_listener_settings false
allow_anonymous false
listener {port} 127.0.0.1
protocol mqtt
cafile {tls.ca}
certfile {tls.cert}
keyfile {tls.key}
{crl}require_certificate true
use_identity_as_username true
use_username_as_clientid true
tls_version tlsv1.2
acl_file {data_dir}/edgefleet.acl
plugin {DYNSEC_PLUGIN}
plugin_opt_config_file {data_dir}/dynamic-security.json
persistence true
persistence_location {data_dir}/
autosave_interval 5
max_packet_size 1048576
{queue_settings()}
log_dest stdout
log_type error
log_type warning
log_type notice
connection_messages true
"""


@dataclass
class DevBroker:
    """A running private Mosquitto; ``stop()`` ends it. ``tls`` turns on mTLS + ACLs."""

    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls: BrokerTls | None = None
    _watcher: threading.Thread | None = field(default=None, repr=False)
    _stop_watch: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"mqtts://localhost:{self.port}"
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> DevBroker:
        exe = find_mosquitto()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        conf = self.folder / "mosquitto.conf"
        if self.tls is None:
            conf.write_text(render_config(self.port, self.folder))
        else:
            (self.folder / "edgefleet.acl").write_text(ACL)
            dynsec = self.folder / "dynamic-security.json"
            if not dynsec.exists():  # the plugin keeps its clients here across restarts
                dynsec.write_text(DYNSEC_EMPTY)
            conf.write_text(render_tls_config(self.port, self.folder, self.tls))
        log = self.folder / "mosquitto.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [exe, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        _wait_listening(self.port, self.proc, log)
        if self.tls is not None and self.tls.crl is not None:
            self._stop_watch = threading.Event()
            self._watcher = threading.Thread(
                target=self._watch_crl, args=(self.tls.crl,), name="devbroker-crl", daemon=True
            )
            self._watcher.start()
        return self

    def reload(self) -> None:
        """SIGHUP: Mosquitto 2.0.11 re-reads its config, the ACL file and the CRL.

        Tested (tests/agent/test_broker_acl.py): a certificate revoked before the signal is
        refused at its next TLS handshake. A session already connected stays connected
        until it reconnects (the controller drops a revoked device's messages meanwhile).
        """
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _watch_crl(self, crl: Path) -> None:
        """Reload whenever ``device revoke`` / ``pki revoke`` rewrites the CRL."""
        last = _file_state(crl)
        while not self._stop_watch.wait(CRL_POLL_S):
            state = _file_state(crl)
            if state != last:
                last = state
                self.reload()

    def stop(self) -> None:
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port (persistent sessions survive via the db file)."""
        self.stop()
        self.start()


def _file_state(path: Path) -> tuple[int, int, int] | None:
    with contextlib.suppress(OSError):
        st = path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    return None
