"""Domain errors carry their HTTP status; one handler (controller/app.py) answers with it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
from edgefleet.controller.app import domain_error
from edgefleet.controller.detector_check import NotADetectorError
from edgefleet.controller.plans import PlanExistsError
from edgefleet.controller.registry import VersionExistsError
from edgefleet.controller.rollouts.lifecycle import TransitionRefusedError
from edgefleet.controller.rollouts.service import NoMatchingDeviceError
from edgefleet.controller.tokens import TokenExistsError
from edgefleet.shared import errors
from edgefleet.shared.errors import EdgefleetError

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
    VersionExistsError: 409,
    TokenExistsError: 409,
    PlanExistsError: 409,
    TransitionRefusedError: 409,
    NotADetectorError: 422,
    NoMatchingDeviceError: 400,
}


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_has_an_http_status() -> None:
    found = set(_subclasses(EdgefleetError))
    assert set(EXPECTED) <= found  # the table names real classes of the tree
    for cls in found | {EdgefleetError}:
        status = cls.__dict__.get("http_status", None) or cls.http_status
        assert isinstance(status, int) and 400 <= status <= 599, cls
        assert "http_status" not in vars(cls("x")), cls  # a class fact, not per instance
    for cls, status in EXPECTED.items():
        assert cls.http_status == status, cls.__name__


def _answer(error: EdgefleetError) -> tuple[int, dict[str, str]]:
    response = asyncio.run(domain_error(None, error))  # type: ignore[arg-type]
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
