"""``edgefleet pin create|list|delete`` and ``edgefleet channel set|list|delete``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, labels, show_list
from edgefleet.cli.params import numeric_id, parse_selector, parse_target
from edgefleet.controller.stage_lifecycle import ModelStage
from edgefleet.shared.errors import ConfigError

pin_app = group("hold devices on a version or a channel")
channel_app = group("named version lines (stable, latest, ...)")
ChannelName = Annotated[str, typer.Argument(metavar="NAME", help="channel name")]


def _pin_target(pin: dict[str, Any]) -> str:
    return f"channel {pin['channel']}" if pin["channel"] else f"{pin['model']}:{pin['version']}"


@pin_app.command("create")
def pin_create(
    target: Annotated[str | None, typer.Argument(
        metavar="NAME:VERSION", help="the version to hold (or --channel)")] = None,
    channel: Annotated[str | None, typer.Option(
        "--channel", help="follow this channel instead of one version")] = None,
    selector: Annotated[list[str] | None, typer.Option(
        "--selector", metavar="KEY=VALUE", help="label selector; repeat to AND several")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="pin one device (selector device_id=ID)")] = None,
) -> None:  # fmt: skip
    """Pin matching devices to NAME:VERSION or --channel."""
    from edgefleet.cli.client import ControllerClient

    chosen = parse_selector(selector or [])
    if device:
        chosen["device_id"] = device
    if bool(target) == bool(channel):
        raise ConfigError("give either NAME:VERSION or --channel NAME")
    body: dict[str, Any] = {"selector": chosen, "channel": channel}
    if target:
        body["model"], body["version"] = parse_target(target)
    with ControllerClient.from_env() as api:
        pin = api.create_pin(body)
    held = ", ".join(pin["devices"]) or "no device yet"
    print(f"pin {pin['id']}: {labels(chosen)} -> {_pin_target(pin)} (holds {held})")


PIN_COLUMNS = (
    Column("ID", lambda p: str(p["id"])),
    Column("SELECTOR", lambda p: labels(p["selector"])),
    Column("TARGET", lambda p: _pin_target(p).replace(" ", ":")),
    Column("DEVICES", lambda p: ",".join(p["devices"]) or "-"),
    Column("BY", lambda p: p["created_by"]),
)


@pin_app.command("list")
def pin_list(as_json: JsonFlag = False) -> None:
    """Pins and the devices each holds."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.pins(), PIN_COLUMNS, as_json)


@pin_app.command("delete")
def pin_delete(pin_id: Annotated[str, typer.Argument(metavar="ID", help="pin id")]) -> None:
    """Remove a pin (devices keep what they run)."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        api.delete_pin(numeric_id(pin_id, "pin"))
    print(f"pin {pin_id} deleted")


@channel_app.command("set")
def channel_set(
    name: ChannelName,
    target: Annotated[str, typer.Argument(
        metavar="NAME[:VERSION]", help="a version, or a model alone: its newest")],
    stage: Annotated[ModelStage | None, typer.Option(
        "--stage", help="follow NAME's version in this registry stage")] = None,
) -> None:  # fmt: skip
    """Point a channel at NAME:VERSION (NAME alone: newest; --stage: that stage's)."""
    from edgefleet.cli.client import ControllerClient

    model, _, version = target.partition(":")
    if not model:
        raise ConfigError(f"bad target {target!r}: expected NAME[:VERSION]")
    if version and stage:
        raise ConfigError("give NAME:VERSION or NAME --stage STAGE, not both")
    with ControllerClient.from_env() as api:
        c = api.set_channel(name, model, version or None, stage.value if stage else None)
    if c["stage"]:
        follows = f" (follows {c['stage']})"
    else:
        follows = "" if c["version"] else " (follows the newest version)"
    now = c["resolved"] or f"{model} (no version {'in ' + c['stage'] if c['stage'] else 'yet'})"
    print(f"channel {c['name']}: {now}{follows}")


def _follows(channel: dict[str, Any]) -> str:
    stage = channel.get("stage")
    return str(channel["version"] or (f"({stage})" if stage else "(newest)"))


CHANNEL_COLUMNS = (
    Column("CHANNEL", lambda c: c["name"]),
    Column("MODEL", lambda c: c["model"]),
    Column("VERSION", _follows),
    Column("NOW", lambda c: c["resolved"] or "-"),
)


@channel_app.command("list")
def channel_list(as_json: JsonFlag = False) -> None:
    """Channels and what they stand for."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.channels(), CHANNEL_COLUMNS, as_json)


@channel_app.command("delete")
def channel_delete(name: ChannelName) -> None:
    """Remove a channel no pin follows."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        api.delete_channel(name)
    print(f"channel {name} deleted")
