"""MQTT topics, as small frozen types that validate themselves.

Plain strings are accepted only at the edge (:func:`parse_device_topic`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from edgefleet.shared.errors import ProtocolError

PREFIX = "edgefleet/v1/devices"
# Fleet-wide, retained, controller -> every agent: the ingest is behind, hold telemetry.
FLEET_INGEST = "edgefleet/v1/fleet/ingest"
SHARE_GROUP = "edgefleet"
# Device ids become topic levels and certificate CNs: keep them boring.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Channel(str, Enum):
    DESIRED = "desired"  # controller -> agent, retained, a hint only
    COMMANDS = "commands"  # controller -> agent
    STATE = "state"  # agent -> controller, retained
    EVENTS = "events"  # agent -> controller
    TELEMETRY = "telemetry"  # agent -> controller
    STATUS = "status"  # agent, retained, also the Last Will


def validate_device_id(device_id: str) -> str:
    if not _DEVICE_ID.match(device_id):
        raise ProtocolError(f"invalid device id {device_id!r}: use letters, digits, . _ -")
    return device_id


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    channel: Channel

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)

    def __str__(self) -> str:
        return f"{PREFIX}/{self.device_id}/{self.channel.value}"


def device_topic(device_id: str, channel: Channel) -> str:
    return str(DeviceTopic(device_id, channel))


def fleet_filter(channel: Channel, *, shared: bool = False) -> str:
    """Subscription filter for one channel of every device.

    ``shared=True`` gives the ``$share`` form so controller replicas split the load.
    """
    base = f"{PREFIX}/+/{channel.value}"
    return f"$share/{SHARE_GROUP}/{base}" if shared else base


# A fleet's topics repeat: the controller parses every message's topic, so the parsed
# (immutable) topics are kept. Refused topics raise and are never kept.
_PARSED_TOPICS = 65536


@lru_cache(maxsize=_PARSED_TOPICS)
def parse_device_topic(topic: str) -> DeviceTopic:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise ProtocolError(f"not an edgefleet device topic: {topic!r}")
    try:
        channel = Channel(parts[4])
    except ValueError as e:
        raise ProtocolError(f"unknown channel in topic {topic!r}") from e
    return DeviceTopic(parts[3], channel)
