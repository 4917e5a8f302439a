"""The demo's bad canary: models/shapes/bad goes out in stages and is stopped by ML gates.

``bad_canary_scene(client, say)`` expects a controller (with its scheduler) whose fleet
runs a good version already (the demo rolls out v1 then v2). It pushes the bad model as
a new version, creates a staged rollout with the ML gates and rollback on failure, and
follows it until the scheduler has stopped it at its first stage and sent the canary
back to the previous version (re-signed with a higher release), saying what happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edgefleet.shared.errors import EdgefleetError

BAD_MODEL = Path(__file__).resolve().parent.parent / "models" / "shapes" / "bad" / "model.onnx"
SCENE_TIMEOUT_S = 240.0  # seconds until the rollout must have been stopped
POLL_S = 1.0  # seconds between status reads
FINAL = ("rolled_back", "failed", "succeeded", "aborted", "paused")

# Canary against control over the same windows; small sample minimums for a short demo.
DEMO_GATES = [
    {"metric": "install_success_rate", "threshold": 1.0, "min_samples": 1},
    {"metric": "errors", "threshold": 0, "min_samples": 1},
    {"metric": "detection_rate_ratio", "threshold": 0.7, "min_samples": 20},
    {"metric": "mean_confidence_ratio", "threshold": 0.85, "min_samples": 20},
    {"metric": "confidence_rank", "threshold": 0.3, "min_samples": 20},
    {"metric": "low_confidence_share", "threshold": 0.2, "min_samples": 20},
    {"metric": "p95_latency_ratio", "threshold": 3.0, "min_samples": 20},
]


def _answer(r: httpx.Response, what: str) -> Any:
    if r.is_success:
        return r.json()
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text
    raise EdgefleetError(f"{what} failed: {detail}")


def _free_label(client: httpx.Client, base: str) -> str:
    r = client.get("/v1/models/shapes/versions")
    taken = {v["version"] for v in r.json()["data"]} if r.is_success else set()
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}-{n}"
    return label


def _gates_line(stage: dict[str, Any]) -> str:
    parts = []
    for g in stage["gates"]:
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        parts.append(f"{g['metric']}={value} {g['verdict']}")
    return "; ".join(parts) or "waiting for telemetry"


def bad_canary_scene(
    client: httpx.Client,
    say: Callable[[str], None],
    *,
    selector: dict[str, str] | None = None,
    soak: str = "30s",  # the gates fail when their test crosses; the soak only bounds it
) -> None:
    """Push the bad model, roll it out in stages, and wait for the automatic rollback."""
    selector = {"fleet": "demo"} if selector is None else selector
    say("\n-- a bad canary: installs fine, runs, but sees worse --")
    version = _free_label(client, "bad")
    with BAD_MODEL.open("rb") as f:
        files = {"file": (BAD_MODEL.name, f)}
        r = client.post("/v1/models/shapes/versions", files=files, data={"version": version},
                        timeout=300)  # fmt: skip
    pushed = _answer(r, "pushing the bad model")
    version = pushed["version"]
    say(f"pushed shapes:{version} (models/shapes/bad: class logits shifted down, release "
        f"{pushed['release']})")  # fmt: skip
    spec = {"model": "shapes", "version": version, "selector": selector,
            "stages": "1,50%,100%", "soak_s": soak, "gates": DEMO_GATES,
            "on_failure": "rollback"}  # fmt: skip
    say(f"$ edgefleet rollout create shapes:{version} --stages 1,50%,100% --soak {soak} "
        "--on-failure rollback --gate ml")  # fmt: skip
    actor = {"X-Edgefleet-Actor": "demo"}
    created = _answer(client.post("/v1/rollouts", json=spec, headers=actor), "rollout create")
    rid = created["id"]
    say(f"rollout {rid}: stage 1 sends it to {created['total']} of {created['matching']} "
        "device(s); the rest are the control group")  # fmt: skip
    final = _follow(client, rid, say)
    if final["state"] != "rolled_back":
        raise EdgefleetError(f"rollout {rid} ended {final['state']}, not rolled back: "
                             f"{final.get('reason')}")  # fmt: skip
    say(f"rollout {rid} stopped automatically: {final['reason']}")
    say(f"canary sent back to {final['rollback_version']} (the previous bytes, re-signed with "
        "a higher release); the control group never left the good version")  # fmt: skip


def _follow(client: httpx.Client, rid: int, say: Callable[[str], None]) -> dict[str, Any]:
    deadline = time.monotonic() + SCENE_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        r = _answer(client.get(f"/v1/rollouts/{rid}"), "rollout status")
        stage = r["stages"][r["stage"]]
        line = (f"  [{r['state']}] stage {stage['index'] + 1} ({stage['stage']}): "
                f"{r['done']}/{r['total']} installed; {_gates_line(stage)}")  # fmt: skip
        if line != last:
            say(line)
            last = line
        if r["state"] in FINAL:
            return r  # type: ignore[no-any-return]
        time.sleep(POLL_S)
    raise EdgefleetError(f"rollout {rid} was not stopped within {SCENE_TIMEOUT_S:.0f} s")
