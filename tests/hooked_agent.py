"""Run ``edgefleet ...`` with test hooks installed (agent/hooks.py): what a test or the fault
bench wants from a real agent process, without a switch in the shipped config::

    python tests/hooked_agent.py '{"sigkill_in_phase": "WARMING"}' agent run --config c.yaml

(or ``python -m tests.hooked_agent ...`` from the repository root). The JSON's keys:

* ``phase_delay_s``: seconds to linger in each install phase on the way (not the end
  phases), so a crash test can hit a phase that would otherwise last microseconds;
* ``sigkill_in_phase``: the agent SIGKILLs itself in that phase, after lingering;
* ``download_rate_bps``: bytes per second a model download is held to;
* ``fingerprint``: fields replacing what the agent detects (``{"platform": "jetson"}``).

Anything else is refused with one line. Imports only edgefleet and the standard library,
so it runs by path from any folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edgefleet.agent.hooks import AgentHooks, install
from edgefleet.shared.protocol import Fingerprint, Phase

log = logging.getLogger("edgefleet.tests.hooks")

# Phases an install passes through on its way; the end phases are not stretched.
ON_THE_WAY = frozenset(
    {
        Phase.DOWNLOADING,
        Phase.VERIFIED,
        Phase.PREPARING,
        Phase.WARMING,
        Phase.SWAPPED,
        Phase.HEALTH_CHECK,
    }
)
KEYS = ("phase_delay_s", "sigkill_in_phase", "download_rate_bps", "fingerprint")


class TestHooks(AgentHooks):
    __test__ = False  # not a pytest class

    def __init__(
        self,
        phase_delay_s: float = 0.0,
        sigkill_in_phase: Phase | None = None,
        download_rate_bps: float | None = None,
        fingerprint: dict[str, str] | None = None,
    ) -> None:
        self.phase_delay_s, self.sigkill_in_phase = phase_delay_s, sigkill_in_phase
        self.rate, self.fields = download_rate_bps, fingerprint or {}

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> TestHooks:
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown hook(s) {unknown}; known: {list(KEYS)}")
        kill = spec.get("sigkill_in_phase")
        return cls(
            phase_delay_s=float(spec.get("phase_delay_s") or 0.0),
            sigkill_in_phase=Phase(kill) if kill else None,
            download_rate_bps=spec.get("download_rate_bps"),
            fingerprint=spec.get("fingerprint"),
        )

    def on_phase(self, phase: Phase, stop: threading.Event) -> None:
        if self.phase_delay_s and phase in ON_THE_WAY:
            stop.wait(self.phase_delay_s)
        if phase == self.sigkill_in_phase:
            log.warning("test hook: killing this agent in %s", phase.value)
            os.kill(os.getpid(), signal.SIGKILL)

    def download_rate_bps(self) -> float | None:
        return self.rate

    def fingerprint(self, detected: Fingerprint) -> Fingerprint:
        if not self.fields:
            return detected
        return Fingerprint.model_validate({**detected.model_dump(), **self.fields})


def argv(hooks: dict[str, Any], *args: str) -> list[str]:
    """The command line that runs ``edgefleet ARGS`` with ``hooks`` installed."""
    return [sys.executable, str(Path(__file__).resolve()), json.dumps(hooks), *args]


def _object(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise TypeError("expected a JSON object")
    return spec


def main(args: list[str]) -> int:
    if not args:
        print("usage: hooked_agent.py '<json hooks>' EDGEFLEET-ARGS...", file=sys.stderr)
        return 2
    try:
        hooks = TestHooks.parse(_object(json.loads(args[0])))
    except (TypeError, ValueError) as e:
        print(f"hooked_agent: error: bad hooks {args[0]!r}: {e}", file=sys.stderr)
        return 2
    install(hooks)
    from edgefleet.cli import main as edgefleet_main

    return edgefleet_main(args[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
