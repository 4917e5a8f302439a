"""Domain errors carry their HTTP status; one handler (controller/app.py) answers with it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
from edgefleet.controller.app import domain_error
from edgefleet.controller.detector_check import NotADetectorError
from edgefleet.controller.plans import PlanExistsError
from edgefleet.controller.registry import VersionExistsError
from edgefleet.controller.rollouts.lifecycle import TransitionRefusedError
from edgefleet.controller.rollouts.service import NoMatchingDeviceError
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import TokenExistsError
from edgefleet.shared import errors
from edgefleet.shared.errors import EdgefleetError

from tests.controller.conftest import bearer

# What clients have always seen for these (the statuses the old per-route mapping gave).
EXPECTED = {
    errors.ConfigError: 400,
    errors.ProtocolError: 400,
    errors.TrustError: 400,
    errors.ArtifactError: 400,
    errors.RuntimeBackendError: 400,
    errors.TransportError: 503,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.ForbiddenError: 403,
    VersionExistsError: 409,
    TokenExistsError: 409,
    PlanExistsError: 409,
    TransitionRefusedError: 409,
    NotADetectorError: 422,
    NoMatchingDeviceError: 400,
}


DOCUMENTED = {400, 403, 404, 409, 422, 503}


def _subclasses(cls: type[EdgefleetError]) -> Iterator[type[EdgefleetError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_has_an_http_status() -> None:
    found = set(_subclasses(EdgefleetError))
    assert set(EXPECTED) <= found  # the table names real classes of the tree
    for cls in found | {EdgefleetError}:
        assert cls.http_status in DOCUMENTED, cls  # the statuses docs/ARCHITECTURE.md names
    for cls, status in EXPECTED.items():
        assert cls.http_status == status, cls.__name__


def _answer(error: EdgefleetError) -> tuple[int, dict[str, str]]:
    response = asyncio.run(domain_error(None, error))  # type: ignore[arg-type,unused-ignore]
    return response.status_code, json.loads(bytes(response.body))


def test_the_handler_answers_one_line_json_with_the_class_status() -> None:
    status, body = _answer(TransitionRefusedError("cannot resume:\n   it is\trolled_back"))
    assert (status, body) == (409, {"detail": "cannot resume: it is rolled_back"})
    assert _answer(NotADetectorError("no boxes")) == (422, {"detail": "no boxes"})
    assert _answer(errors.ConfigError("bad\n")) == (400, {"detail": "bad"})


def test_routes_answer_domain_errors_over_http(client: httpx.Client) -> None:
    r = client.get("/v1/rollouts/999")
    assert (r.status_code, r.json()) == (404, {"detail": "unknown rollout 999"})
    assert r.headers["content-type"] == "application/json"
    r = client.post("/v1/rollouts/999/pause")
    assert (r.status_code, r.json()) == (404, {"detail": "unknown rollout 999"})
    r = client.post("/v1/rollouts", json={"model": "nope", "version": "v1"})
    assert (r.status_code, r.json()) == (404, {"detail": "unknown model 'nope'"})


def test_a_role_too_low_is_403_and_no_credential_stays_401(
    secured: Services, serve: Callable[[Services], AbstractContextManager[httpx.Client]]
) -> None:
    viewer = bearer(secured, "viewer", "val")
    with serve(secured) as client:
        r = client.post("/v1/rollouts/1/pause", headers=viewer)
        detail = "token 'val' has the viewer role; this needs operator"
        assert (r.status_code, r.json()) == (403, {"detail": detail})
        r = client.post("/v1/rollouts/1/pause")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
