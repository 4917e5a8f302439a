"""``edgefleet model plan push|list|approve``: prebuilt TensorRT plans of a version."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, show_list
from edgefleet.cli.params import numeric_id, parse_target
from edgefleet.shared.errors import ArtifactError

plan_app = group("prebuilt TensorRT plans of a version")
Target = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="a model version")]


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@plan_app.command("push")
def plan_push(
    target: Target,
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="the serialized engine (.plan / .engine)")],
    compute_capability: Annotated[str, typer.Option(
        "--compute-capability", help='the GPU\'s, e.g. "8.7"')],
    tensorrt: Annotated[str, typer.Option(
        "--tensorrt", help='the TensorRT it was built with: "10.3.0"')],
    precision: Annotated[Precision, typer.Option(
        "--precision", help="the engine's precision")] = Precision.fp16,
) -> None:  # fmt: skip
    """Upload and sign a plan built for one GPU and TensorRT."""
    from edgefleet.cli.client import ControllerClient

    name, version = parse_target(target)
    if not file.is_file():
        raise ArtifactError(f"no such plan file: {file}")
    fields = {"compute_capability": compute_capability, "tensorrt": tensorrt,
              "precision": precision.value}  # fmt: skip
    with ControllerClient.from_env() as api:
        row = api.push_plan(name, version, file, fields)
    print(f"signed {row['target']} (plan {row['id']}, {row['length']} bytes)")


PLAN_COLUMNS = (
    Column("ID", lambda r: str(r["id"])),
    Column("MODEL", lambda r: r["name"]),
    Column("VERSION", lambda r: r["version"]),
    Column("GPU", lambda r: f"sm {r['compute_capability']}"),
    Column("TENSORRT", lambda r: r["tensorrt"]),
    Column("PRECISION", lambda r: r["precision"]),
    Column("STATE", lambda r: r["state"]),
    Column("SOURCE", lambda r: r["source"]),
    Column("SHA256", lambda r: r["sha256"][:12]),
)


@plan_app.command("list")
def plan_list(
    target: Annotated[str | None, typer.Argument(
        metavar="NAME:VERSION", help="only this version's plans")] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Plans, signed and shared by devices (pending)."""
    from edgefleet.cli.client import ControllerClient

    params = {}
    if target:
        params["model"], params["version"] = parse_target(target)
    with ControllerClient.from_env() as api:
        show_list(api.plans(params), PLAN_COLUMNS, as_json)


@plan_app.command("approve")
def plan_approve(plan_id: Annotated[str, typer.Argument(metavar="ID", help="plan id")]) -> None:
    """Sign a plan a device shared."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        row = api.approve_plan(numeric_id(plan_id, "plan"))
    print(f"signed {row['target']}: devices of sm {row['compute_capability']} with TensorRT "
          f"{row['tensorrt']} ({row['precision']}) get it from now on")  # fmt: skip
