"""Handlers of ``edgefleet token|audit ...`` and ``edgefleet device token|revoke``.

Over HTTP against $EDGEFLEET_URL with $EDGEFLEET_TOKEN (cli_http's client), or, for
``token create --data DIR``, straight into the controller's database: that is how the
first admin token is made (whoever can read the data folder owns the controller anyway).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edgefleet.controller.cli_http import request
from edgefleet.controller.cli_output import pipe_safe, print_json, print_table
from edgefleet.shared.errors import ConfigError


def _print_secret(answer: dict[str, Any], quiet: bool = False) -> None:
    if quiet:
        print(answer["secret"])
        return
    print(f"token {answer['name']} ({answer['role']}); shown once, keep it secret:")
    print(answer["secret"])
    print("use it with: export EDGEFLEET_TOKEN=<the line above>")


@pipe_safe
def token_create(args: argparse.Namespace) -> int:
    from edgefleet.controller.tokens import check_role

    check_role(args.role)
    if args.data:
        url = args.database_url or os.environ.get("EDGEFLEET_DATABASE_URL") or None
        answer = _create_in_db(Path(args.data), url, args.name, args.role)
    else:
        answer = request("POST", "/v1/tokens", json={"role": args.role, "name": args.name})
    _print_secret(answer, args.quiet)
    return 0


def _create_in_db(
    data: Path, database_url: str | None, name: str | None, role: str
) -> dict[str, Any]:
    import getpass

    from edgefleet.controller.db import make_engine
    from edgefleet.controller.settings import Settings
    from edgefleet.controller.tokens import create_token
    from sqlmodel import Session

    if not data.is_dir():
        raise ConfigError(f"no controller data folder at {data}")
    settings = Settings(data_dir=data.expanduser().resolve(), database_url=database_url)
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as session:
            row, secret = create_token(session, name, role, f"local:{_user(getpass)}")
            return {"name": row.name, "role": row.role, "secret": secret}
    finally:
        engine.dispose()


def _user(getpass: Any) -> str:
    try:
        return str(getpass.getuser())
    except (KeyError, OSError):
        return "unknown"


@pipe_safe
def token_list(args: argparse.Namespace) -> int:
    answer = request("GET", "/v1/tokens")
    if args.json:
        print_json(answer["data"])
        return 0
    rows = [[t["name"], t["role"], t["created_at"], "revoked" if t["revoked_at"] else "active"]
            for t in answer["data"]]  # fmt: skip
    print_table(["NAME", "ROLE", "CREATED", "STATE"], rows)
    return 0


@pipe_safe
def token_revoke(args: argparse.Namespace) -> int:
    answer = request("POST", f"/v1/tokens/{args.name}/revoke")
    print(f"token {answer['name']} revoked")
    return 0


@pipe_safe
def audit_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.target:
        params["target"] = args.target
    answer = request("GET", "/v1/audit", params=params)
    if args.json:
        print_json(answer["data"])
        return 0
    rows = [[str(a["id"]), a["at"], a["actor"], a["action"], a["target"]] for a in answer["data"]]
    print_table(["ID", "AT", "ACTOR", "ACTION", "TARGET"], rows)
    return 0


@pipe_safe
def device_token(args: argparse.Namespace) -> int:
    body = {"device_id": args.device_id, "ttl_s": int(args.ttl * 3600)}
    answer = request("POST", "/v1/enroll-tokens", json=body)
    print(f"enrollment token for {answer['device_id']} (one use, {args.ttl:g} h):")
    print(answer["token"])
    print(f"on the device: edgefleet agent enroll --config CONFIG --token {answer['token']}")
    return 0


@pipe_safe
def device_revoke(args: argparse.Namespace) -> int:
    answer = request("POST", f"/v1/devices/{args.device_id}/revoke")
    count = len(answer["serials"])
    kicked = (
        "the broker was asked to close its live session"
        if answer.get("session_kicked")
        else "its live session was NOT kicked (the controller is not on the broker)"
    )
    print(f"revoked {answer['device_id']} ({count} certificate(s)); the controller refuses it "
          f"now and {kicked}. The broker refuses reconnects once it reloads the CRL "
          "(deploy/systemd/edgefleet-crl.path does that).")  # fmt: skip
    return 0
