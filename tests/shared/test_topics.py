from __future__ import annotations

import pytest
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.topics import Channel, device_topic, fleet_filter, parse_device_topic


def test_device_topic_builds_and_parses() -> None:
    t = device_topic("cam-01", Channel.STATE)
    assert t == "edgefleet/v1/devices/cam-01/state"
    parsed = parse_device_topic(t)
    assert parsed.device_id == "cam-01"
    assert parsed.channel is Channel.STATE


def test_shared_subscription_filter() -> None:
    assert fleet_filter(Channel.TELEMETRY, shared=True) == (
        "$share/edgefleet/edgefleet/v1/devices/+/telemetry"
    )


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "../x", "a b", "x" * 65, "é"])
def test_device_ids_that_would_break_topics_are_refused(bad: str) -> None:
    with pytest.raises(ProtocolError):
        device_topic(bad, Channel.STATE)


@pytest.mark.parametrize(
    "topic", ["edgefleet/v1/devices/a", "other/v1/devices/a/state", "edgefleet/v1/devices/a/x"]
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(ProtocolError):
        parse_device_topic(topic)
