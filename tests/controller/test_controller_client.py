"""The CLI's ControllerClient against a real controller over real HTTP: typed answers,
and every failure one EdgefleetError line (a refused token, an unknown rollout, a bad
request, a port nobody listens on)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgefleet.controller.services import Services
from edgefleet.shared.errors import EdgefleetError, TransportError

from edgefleet.cli.client import ControllerClient
from edgefleet.devbroker import free_port
from tests.controller.conftest import bearer, serving


def _one_line(e: pytest.ExceptionInfo[EdgefleetError]) -> str:
    reason = e.value.reason
    assert "\n" not in reason and reason.strip() == reason
    return reason


def test_answers_and_errors_from_a_secured_controller(secured: Services, tmp_path: Path) -> None:
    with serving(secured) as http:
        url = str(http.base_url).rstrip("/")
        token = bearer(secured, "operator")["Authorization"].split()[1]
        with ControllerClient(url, token, actor="tester") as api:
            assert api.devices() == [] and api.models() == [] and api.rollouts() == []
            with pytest.raises(EdgefleetError) as unknown:
                api.rollout("99")
            assert "unknown rollout" in _one_line(unknown)
            with pytest.raises(EdgefleetError) as refused:
                api.tokens()  # an admin's list
            assert _one_line(refused)
        with ControllerClient(url, "not-a-token") as api, pytest.raises(EdgefleetError) as bad:
            api.devices()
        assert _one_line(bad)


def test_an_unreachable_controller_is_one_transport_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ControllerClient(url) as api, pytest.raises(TransportError) as e:
        api.devices()
    assert _one_line(e).startswith(f"cannot reach the controller at {url}")
