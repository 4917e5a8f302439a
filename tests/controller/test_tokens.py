"""Operator API tokens over real HTTP: 401 / 403, roles, the audit log's actor."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.models.tokens import ApiToken
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import create_token, digest
from sqlmodel import Session, select

Serve = Callable[[Services], AbstractContextManager[httpx.Client]]


@pytest.fixture
def auth_services(services: Services) -> Services:
    services.settings = dataclasses.replace(services.settings, auth=True)
    return services


def _token(services: Services, role: str, name: str) -> dict[str, str]:
    with Session(services.engine) as session:
        _, secret = create_token(session, name, role, "test")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def authed(auth_services: Services, serve: Serve) -> Iterator[httpx.Client]:
    with serve(auth_services) as client:
        yield client


def _push(client: httpx.Client, onnx: Path, headers: dict[str, str]) -> httpx.Response:
    with onnx.open("rb") as f:
        return client.post("/v1/models/det/versions", files={"file": ("m.onnx", f)},
                           headers=headers)  # fmt: skip


def test_write_without_token_401_viewer_403_operator_ok(
    authed: httpx.Client, auth_services: Services, onnx_model: Path
) -> None:
    assert _push(authed, onnx_model, {}).status_code == 401
    bogus = _push(authed, onnx_model, {"Authorization": "Bearer eft_nope"})
    assert bogus.status_code == 401 and "unknown or revoked" in bogus.json()["detail"]
    viewer = _token(auth_services, "viewer", "alice-viewer")
    refused = _push(authed, onnx_model, viewer)
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    spec = {"model": "det", "version": "v1", "selector": {}}
    assert authed.post("/v1/rollouts", json=spec).status_code == 401
    assert authed.post("/v1/rollouts", json=spec, headers=viewer).status_code == 403
    assert authed.post("/v1/rollouts/1/pause", headers=viewer).status_code == 403
    # reads need at least a viewer token (tests/controller/test_read_auth.py covers them all)
    assert authed.get("/v1/models").status_code == 401
    assert authed.get("/v1/models", headers=viewer).status_code == 200
    assert authed.get("/v1/audit").status_code == 401
    operator = _token(auth_services, "operator", "ci-publisher")
    ok = _push(authed, onnx_model, {**operator, "X-Edgefleet-Actor": "someone-else"})
    assert ok.status_code == 200, ok.text
    audit = authed.get("/v1/audit", headers=viewer).json()["data"]
    push = [a for a in audit if a["action"] == "push"]
    assert push and push[0]["actor"] == "ci-publisher" and push[0]["target"] == "det:v1"


def test_tokens_need_admin_and_revoke_locks_out(
    authed: httpx.Client, auth_services: Services
) -> None:
    operator = _token(auth_services, "operator", "op")
    assert authed.post("/v1/tokens", json={"role": "viewer"}, headers=operator).status_code == 403
    admin = _token(auth_services, "admin", "root-admin")
    made = authed.post("/v1/tokens", json={"role": "operator", "name": "bob"}, headers=admin)
    assert made.status_code == 200, made.text
    secret = made.json()["secret"]
    with Session(auth_services.engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.name == "bob")).one()
        assert row.sha256 == digest(secret) and secret not in row.sha256
    again = authed.post("/v1/tokens", json={"role": "operator", "name": "bob"}, headers=admin)
    assert again.status_code == 409
    bad_role = authed.post("/v1/tokens", json={"role": "root"}, headers=admin)
    assert bad_role.status_code == 400
    bob = {"Authorization": f"Bearer {secret}"}
    assert authed.get("/v1/audit", headers=bob).status_code == 200
    assert authed.post("/v1/tokens/bob/revoke", headers=admin).status_code == 200
    assert authed.get("/v1/audit", headers=bob).status_code == 401
    actions = [(a["actor"], a["action"], a["target"])
               for a in authed.get("/v1/audit", headers=admin).json()["data"]]  # fmt: skip
    assert ("root-admin", "token-create", "token:bob") in actions
    assert ("root-admin", "token-revoke", "token:bob") in actions


def test_audit_log_is_append_only(authed: httpx.Client, auth_services: Services) -> None:
    admin = _token(auth_services, "admin", "adm")
    authed.post("/v1/tokens", json={"role": "viewer", "name": "v"}, headers=admin)
    before = authed.get("/v1/audit", headers=admin).json()
    assert before["count"] >= 1
    entry = before["data"][0]["id"]
    for method in ("DELETE", "PUT", "PATCH"):
        for path in ("/v1/audit", f"/v1/audit/{entry}"):
            answer = authed.request(method, path, headers=admin, json={"actor": "x"})
            assert answer.status_code in (404, 405), (method, path, answer.status_code)
    assert authed.get("/v1/audit", headers=admin).json() == before


def test_auth_off_keeps_writes_open(client: httpx.Client, onnx_model: Path) -> None:
    assert _push(client, onnx_model, {"X-Edgefleet-Actor": "carol"}).status_code == 200
    audit = client.get("/v1/audit").json()["data"]
    assert audit[0]["actor"] == "carol" and audit[0]["action"] == "push"


def test_cli_bootstrap_token_and_audit_list(
    auth_services: Services, serve: Serve, tmp_path: Path
) -> None:
    data = auth_services.settings.data_dir
    env = {**os.environ, "EDGEFLEET_TOKEN": ""}
    made = subprocess.run(
        [sys.executable, "-m", "edgefleet", "token", "create", "--role", "admin",
         "--name", "first-admin", "--data", str(data)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = next(line for line in made.stdout.splitlines() if line.startswith("eft_"))
    with serve(auth_services) as client:
        env["EDGEFLEET_URL"] = str(client.base_url)
        listed = subprocess.run(
            [sys.executable, "-m", "edgefleet", "audit", "list"],
            capture_output=True, text=True, env={**env, "EDGEFLEET_TOKEN": secret}, timeout=60,
        )  # fmt: skip
        refused = subprocess.run(
            [sys.executable, "-m", "edgefleet", "audit", "list"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "token-create" in listed.stdout and "first-admin" in listed.stdout
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        "edgefleet: error: this controller requires an API token: set EDGEFLEET_TOKEN"
    )
