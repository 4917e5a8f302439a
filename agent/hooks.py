"""The agent's seam for behaviour that only tests and the fault bench want.

Nothing here is in the config schema: a device runs :class:`NoHooks`. A test (or
``bench faults``) installs its own :class:`AgentHooks` from outside before the agent
starts: ``tests/hooked_agent.py`` does it for a real ``edgefleet agent run`` process, and
an in-process agent (``edgefleet.sim``) picks up whatever :func:`install` set.
"""

from __future__ import annotations

import threading
from typing import Protocol

from edgefleet.shared.protocol import Fingerprint, Phase


class AgentHooks(Protocol):
    """What a test may change in a running agent; each default does nothing."""

    def on_phase(self, phase: Phase, stop: threading.Event) -> None:
        """Called after the agent entered (and reported) an install phase; not for a
        transient report. A hook may linger here (``stop`` ends the wait) or crash."""

    def download_rate_bps(self) -> float | None:
        """Bytes per second a model download is held to; None: as fast as it comes."""
        return None

    def fingerprint(self, detected: Fingerprint) -> Fingerprint:
        """What the agent reports itself to be, given what it detected."""
        return detected


class NoHooks(AgentHooks):
    """A device's hooks: none."""

    def on_phase(self, phase: Phase, stop: threading.Event) -> None:
        """Nothing: the install goes on at once."""


_installed: AgentHooks = NoHooks()


def install(hooks: AgentHooks | None) -> None:
    """Use ``hooks`` in agents started from now on in this process (None: none)."""
    global _installed  # noqa: PLW0603 - the one process-wide seam, set from outside
    _installed = hooks if hooks is not None else NoHooks()


def installed() -> AgentHooks:
    return _installed
