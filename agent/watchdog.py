"""systemd's notify protocol (sd_notify) in a few lines, without libsystemd.

``Type=notify`` units learn READY=1 when the agent serves; ``WatchdogSec=`` units expect
WATCHDOG=1 at least every WATCHDOG_USEC and restart the agent when it stops coming. The
environment is read by ``main`` and passed in; with no ``NOTIFY_SOCKET`` every call is a
no-op, so the agent runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

DEFAULT_PING_S = 1.0  # seconds between checks when systemd asks for no watchdog


class SystemdNotifier:
    def __init__(self, socket_path: str | None) -> None:
        # "@name" is Linux's abstract namespace, spelled with a NUL byte on the wire
        if socket_path and socket_path.startswith("@"):
            socket_path = "\0" + socket_path[1:]
        self.socket_path = socket_path or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    def notify(self, state: str) -> bool:
        """Send one datagram; False (logged once per call site) when it cannot be sent."""
        if self.socket_path is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.socket_path)
                s.sendall(state.encode())
        except OSError as e:
            log.warning("sd_notify %r failed: %s", state.split("\n", maxsplit=1)[0], e)
            return False
        return True

    def ready(self, status: str = "serving") -> bool:
        return self.notify(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def ping_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float:
    """Half of systemd's watchdog period (its own advice), or ``DEFAULT_PING_S``."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return DEFAULT_PING_S  # meant for another process
    if not usec.isdigit() or int(usec) == 0:
        return DEFAULT_PING_S
    return min(DEFAULT_PING_S, int(usec) / 2_000_000)
