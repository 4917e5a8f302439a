"""``edgefleet token create|list|revoke`` and ``edgefleet audit list``.

Over HTTP with $EDGEFLEET_TOKEN, or, for ``token create --data DIR``, straight into the
controller's database: that is how the first admin token is made (whoever can read the
data folder owns the controller anyway).
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, show_list
from edgefleet.shared.errors import ConfigError

token_app = group("operator API tokens (viewer, operator, admin)")
audit_app = group("the audit log of operator actions")


class Role(str, Enum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


def _print_secret(answer: dict[str, Any], quiet: bool) -> None:
    if quiet:
        print(answer["secret"])
        return
    print(f"token {answer['name']} ({answer['role']}); shown once, keep it secret:")
    print(answer["secret"])
    print("use it with: export EDGEFLEET_TOKEN=<the line above>")


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option("--role", help="what the token may do")],
    name: Annotated[str | None, typer.Option(
        "--name", help="who or what holds it (the audit actor)")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", metavar="DIR",
        help="write into this controller data folder directly (the first admin token)")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", metavar="URL",
        help="with --data: the controller's database when it is not SQLite in DIR "
        "(default: $EDGEFLEET_DATABASE_URL, as `controller serve` reads it)")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet",
        help="print only the secret: export EDGEFLEET_TOKEN=$(edgefleet token create ...)",
    )] = False,
) -> None:  # fmt: skip
    """Make a token; its secret is printed once."""
    from edgefleet.cli.client import ControllerClient

    if data:
        url = database_url or os.environ.get("EDGEFLEET_DATABASE_URL") or None
        answer = _create_in_db(data, url, name, role.value)
    else:
        with ControllerClient.from_env() as api:
            answer = api.create_token(role.value, name)
    _print_secret(answer, quiet)


def _create_in_db(
    data: Path, database_url: str | None, name: str | None, role: str
) -> dict[str, Any]:
    from sqlmodel import Session

    from edgefleet.cli.client import os_user
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.settings import Settings
    from edgefleet.controller.tokens import create_token

    if not data.is_dir():
        raise ConfigError(f"no controller data folder at {data}")
    settings = Settings(data_dir=data.expanduser().resolve(), database_url=database_url)
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as session:
            row, secret = create_token(session, name, role, f"local:{os_user()}")
            return {"name": row.name, "role": row.role, "secret": secret}
    finally:
        engine.dispose()


TOKEN_COLUMNS = (
    Column("NAME", lambda t: t["name"]),
    Column("ROLE", lambda t: t["role"]),
    Column("CREATED", lambda t: t["created_at"]),
    Column("STATE", lambda t: "revoked" if t["revoked_at"] else "active"),
)


@token_app.command("list")
def token_list(as_json: JsonFlag = False) -> None:
    """Tokens, their roles and state (admin)."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.tokens(), TOKEN_COLUMNS, as_json)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the token's name")],
) -> None:
    """Revoke a token by name (admin)."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        answer = api.revoke_token(name)
    print(f"token {answer['name']} revoked")


AUDIT_COLUMNS = (
    Column("ID", lambda a: str(a["id"])),
    Column("AT", lambda a: a["at"]),
    Column("ACTOR", lambda a: a["actor"]),
    Column("ACTION", lambda a: a["action"]),
    Column("TARGET", lambda a: a["target"]),
)


@audit_app.command("list")
def audit_list(
    target: Annotated[str | None, typer.Option(
        "--target", help="only entries about this target")] = None,
    limit: Annotated[int, typer.Option("--limit", help="entries at most")] = 200,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Newest first."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.audit(target, limit), AUDIT_COLUMNS, as_json)
