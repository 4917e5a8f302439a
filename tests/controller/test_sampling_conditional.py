"""Sampling settings over a conditional GET: unchanged rules cost a bodiless 304."""

from __future__ import annotations

import httpx
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.sampler import ControllerSettings
from edgefleet.shared.sampling import SamplingConfig, StrategyConfig

LOCAL = SamplingConfig(strategies=[StrategyConfig(name="u", kind="near_threshold")])


def test_settings_are_fetched_again_only_when_they_change(client: httpx.Client) -> None:
    statuses: list[int] = []
    http = ControllerHttp(str(client.base_url), "cam-a",
                          observer=lambda _p, s: statuses.append(s))  # fmt: skip
    ask = ControllerSettings(http, "cam-a", {"site": "a"}, LOCAL)

    assert ask() == LOCAL  # no rule: the local settings
    assert ask() is None  # unchanged: 304, keep what you have
    rule = {"strategies": [{"name": "r", "kind": "random", "share": 0.5}]}
    r = client.put("/v1/sampling", json={"selector": {"site": "a"}, "settings": rule})
    assert r.status_code == 200, r.text
    got = ask()
    assert got is not None and [s.name for s in got.strategies] == ["r"]
    assert got.settings_refresh_s == LOCAL.settings_refresh_s  # a local-only setting
    assert ask() is None
    assert statuses == [200, 304, 200, 304]

    other = ControllerSettings(http, "cam-b", {"site": "b"}, LOCAL)
    other.etag = ask.etag  # another device's tag names another answer: a full one
    assert other() == LOCAL
