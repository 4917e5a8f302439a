"""``edgefleet device list|refresh|wait|token|revoke``."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, labels, or_dash, show_list
from edgefleet.cli.params import parse_target
from edgefleet.shared.errors import ConfigError, TransportError

app = group("devices")
DeviceId = Annotated[str, typer.Argument(metavar="DEVICE_ID", help="the device's id")]
ERROR_WIDTH = 60  # characters of a device's last error shown in the table; --json has it all
POLL_S = 1.0  # seconds between `device wait`'s looks at the fleet


def _desired(d: dict[str, Any]) -> str:
    """What the controller wants the device to run, beside what it reports running."""
    if not d.get("desired_model"):
        return "-"
    return f"{d['desired_model']}:{d.get('desired_version') or '-'}"


def _since(iso: str | None) -> str:
    """When the device last reported its phase, without spaces: ``13:05:09`` today,
    ``11-23T13:05`` another day."""
    if not iso:
        return "-"
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    if at.date() == datetime.now(timezone.utc).date():
        return f"{at:%H:%M:%S}"
    return f"{at:%m-%dT%H:%M}"


def short(error: str | None) -> str:
    if not error:
        return "-"
    line = " ".join(error.split())
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 3] + "..."


DEVICE_COLUMNS = (
    Column("DEVICE", lambda d: d["device_id"]),
    Column("ONLINE", lambda d: "yes" if d["online"] else "no"),
    Column("MODEL", lambda d: d["model"] or "-"),
    Column("VERSION", lambda d: d["version"] or "-"),
    Column("DESIRED", _desired),
    Column("BY", lambda d: d.get("desired_by") or "-"),
    Column("RELEASE", lambda d: or_dash(d.get("release"))),
    Column("PHASE", lambda d: d["phase"] or "-"),
    Column("SINCE", lambda d: _since(d.get("since"))),
    Column("LABELS", lambda d: labels(d["labels"])),
    Column("WAITING", lambda d: short(d.get("waiting"))),
    Column("ERROR", lambda d: short(d.get("error"))),
)


@app.command("list")
def list_devices(as_json: JsonFlag = False) -> None:
    """Fleet table."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.devices(), DEVICE_COLUMNS, as_json)


@app.command("refresh")
def refresh(device_id: DeviceId) -> None:
    """Make a device poll now and retry artifacts it refused."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.shared.topics import validate_device_id

    validate_device_id(device_id)
    with ControllerClient.from_env() as api:
        api.refresh_device(device_id)
    print(f"refresh sent to {device_id}: it polls now and retries what it refused")


@app.command("wait")
def wait(
    device_id: DeviceId,
    runs: Annotated[str | None, typer.Option(
        "--runs", metavar="NAME:VERSION", help="also wait for this version")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds (default 120)")] = 120.0,
) -> None:  # fmt: skip
    """Wait until a device is online (and runs NAME:VERSION, committed)."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.shared.topics import validate_device_id

    validate_device_id(device_id)
    want = parse_target(runs) if runs else None
    if not 0 < timeout <= 86400:
        raise ConfigError(f"bad --timeout {timeout}: expected 0 < seconds <= 86400")
    deadline = time.monotonic() + timeout
    with ControllerClient.from_env() as api:
        while True:
            seen = next((d for d in api.devices() if d["device_id"] == device_id), None)
            if seen is not None and _arrived(seen, want):
                print(f"{device_id}: online, {_running(seen)}")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
    now = "never seen" if seen is None else (
        f"{'online' if seen['online'] else 'offline'}, {_running(seen)}"
        + (f", error: {short(seen.get('error'))}" if seen.get("error") else "")
    )  # fmt: skip
    raise TransportError(f"{device_id} did not arrive in {timeout:g} s: {now}")


def _running(d: dict[str, Any]) -> str:
    return f"{d['model'] or '-'}:{d['version'] or '-'} {d['phase'] or '-'}"


def _arrived(device: dict[str, Any], want: tuple[str, str] | None) -> bool:
    if not device["online"]:
        return False
    if want is None:
        return True
    name, version = want
    # A version rolled back to is re-signed as VERSION-rbN (controller/rollouts/releases.py).
    same = device["version"] == version or re.fullmatch(
        re.escape(version) + r"-rb\d+", device["version"] or ""
    )
    return device["model"] == name and bool(same) and device["phase"] == "COMMITTED"


@app.command("token")
def token(
    device_id: DeviceId,
    ttl: Annotated[float, typer.Option(
        "--ttl", metavar="HOURS", help="hours the token stays valid")] = 24.0,
) -> None:  # fmt: skip
    """One-time enrollment token for a device id."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        answer = api.enroll_token(device_id, int(ttl * 3600))
    print(f"enrollment token for {answer['device_id']} (one use, {ttl:g} h):")
    print(answer["token"])
    print(f"on the device: edgefleet agent enroll --config CONFIG --token {answer['token']}")


@app.command("revoke")
def revoke(device_id: DeviceId) -> None:
    """Revoke a device's certificates; refuse it (admin)."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        answer = api.revoke_device(device_id)
    count = len(answer["serials"])
    kicked = (
        "the broker was asked to close its live session"
        if answer.get("session_kicked")
        else "its live session was NOT kicked (the controller is not on the broker)"
    )
    print(f"revoked {answer['device_id']} ({count} certificate(s)); the controller refuses it "
          f"now and {kicked}. The broker refuses reconnects once it reloads the CRL "
          "(deploy/systemd/edgefleet-crl.path does that).")  # fmt: skip
