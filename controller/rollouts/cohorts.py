"""Cohorts: the order in which a rollout reaches its devices (pure).

The order is a hash of (rollout id, device id), so it is the same on every tick and
after a restart, differs between rollouts, and a device that comes to match later slots
in where its hash puts it. With ``stratify_by`` the devices are dealt round-robin across
the label's values, so the first stages span every site before any site gets a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence


def cohort_key(rollout_id: int, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).hexdigest()


def cohort_order(
    rollout_id: int,
    devices: Mapping[str, Mapping[str, str]],
    stratify_by: str | None = None,
) -> list[str]:
    """Device ids (of ``devices``: id -> labels) in the order the stages take them."""
    ordered = sorted(devices, key=lambda d: cohort_key(rollout_id, d))
    if not stratify_by:
        return ordered
    strata: dict[str, list[str]] = {}
    for device_id in ordered:
        strata.setdefault(devices[device_id].get(stratify_by, ""), []).append(device_id)
    # Strata take turns; their order is hashed too so no site is always first.
    turns = sorted(strata.values(), key=lambda members: cohort_key(rollout_id, members[0]))
    out: list[str] = []
    for i in range(max(len(m) for m in turns)):
        out.extend(m[i] for m in turns if i < len(m))
    return out


def control_group(
    matching: Mapping[str, Mapping[str, str]],
    canaries: Sequence[str],
    match_labels: Sequence[str] = (),
) -> list[str]:
    """Matching devices not in the rollout, limited to the canaries' values of
    ``match_labels`` (e.g. same site and camera) when any control device shares them."""
    assigned = set(canaries)
    rest = sorted(d for d in matching if d not in assigned)
    if not match_labels or not canaries:
        return rest
    wanted = {tuple(matching[c].get(k, "") for k in match_labels) for c in canaries}
    matched = [d for d in rest if tuple(matching[d].get(k, "") for k in match_labels) in wanted]
    return matched or rest
