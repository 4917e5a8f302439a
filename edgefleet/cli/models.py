"""``edgefleet model push|list|show|diff|reproduce|stage`` and ``model plan ...``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.cli import gate, plans, push, reproduce
from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, print_json, show_list
from edgefleet.cli.params import parse_target
from edgefleet.controller.stage_lifecycle import ModelStage
from edgefleet.shared.errors import ConfigError

if TYPE_CHECKING:
    from edgefleet.cli.client import ControllerClient

app = group("models and versions")
app.command("push")(push.push)
app.add_typer(plans.plan_app, name="plan")

Target = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="a model version")]


# --- list, show, diff ------------------------------------------------------------------

VERSION_COLUMNS = (
    Column("MODEL", lambda v: v["model"]),
    Column("VERSION", lambda v: v["version"]),
    Column("STAGE", lambda v: v.get("stage") or "-"),
    Column("RELEASE", lambda v: str(v["release"])),
    Column("SHA256", lambda v: v["sha256"][:12]),
    Column("BYTES", lambda v: str(v["length"])),
    Column("CREATED", lambda v: v["created_at"]),
    Column("GATE", lambda v: v.get("gate_status") or "-"),
)


@app.command("list")
def list_models(as_json: JsonFlag = False) -> None:
    """List models and their versions."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        models = api.models()
    if as_json:
        print_json(models)
        return
    rows = [{**v, "model": m["name"]} for m in models for v in m["versions"]]
    show_list(rows, VERSION_COLUMNS, as_json=False)


@app.command("show")
def show(target: Target, as_json: JsonFlag = False) -> None:
    """Print a version's lineage and model card."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.lineage import lines

    name, version = parse_target(target)
    with ControllerClient.from_env() as api:
        row = _version(api, name, version)
        lineage = api.lineage(name, version)
        card = api.card(name, version)
        policy = api.policy(name)
    if as_json:
        print_json({"version": row, "lineage": lineage, "card": card, "policy": policy})
        return
    print(f"{name}:{version} release {row['release']} sha256 {row['sha256'][:12]}"
          f" ({row['length']} bytes, pushed {row['created_at']})"
          f" stage {row.get('stage') or 'candidate'}")  # fmt: skip
    if lineage is None:
        print("  lineage             - (pushed without it)")
    else:
        print("\n".join(lines(lineage)))
    no_card = "model card: - (push with --validation DIR)"
    print("\n".join(push.card_lines(card)) if card else no_card)
    print("\n".join(gate.show_lines(policy, row)))


def _version(api: ControllerClient, name: str, version: str) -> dict[str, Any]:
    for row in api.versions(name):
        if row["version"] == version:
            return row
    raise ConfigError(f"model {name!r} has no version {version!r}")


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(metavar="NAME:A", help="the older version")],
    b: Annotated[str, typer.Argument(metavar="NAME:B", help="the newer version")],
    as_json: JsonFlag = False,
) -> None:
    """Compare two versions' lineage: metrics, args, dataset."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.lineage import diff as lineage_diff
    from edgefleet.controller.lineage import diff_lines

    docs = []
    with ControllerClient.from_env() as api:
        for target in (a, b):
            name, version = parse_target(target)
            docs.append(api.required_lineage(name, version))
    d = lineage_diff(docs[0], docs[1])
    if as_json:
        print_json(d)
    else:
        print(f"{a} -> {b}")
        print("\n".join(diff_lines(d)))


app.command("reproduce")(reproduce.reproduce)
app.command("policy")(gate.policy)


@app.command("stage")
def stage(
    target: Target,
    to: Annotated[ModelStage, typer.Argument(metavar="STAGE", help="the registry stage")],
) -> None:
    """Move a version to a registry stage (admin); production archives the one before."""
    from edgefleet.cli.client import ControllerClient

    name, version = parse_target(target)
    with ControllerClient.from_env() as api:
        row = api.set_stage(name, version, to.value)
    print(f"{name}:{row['version']} is {row['stage']}")
