"""``edgefleet model plan push|list|approve``: TensorRT plans of a version (see plans.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgefleet.controller.cli_args import parse_target
from edgefleet.controller.cli_http import actor_header, request
from edgefleet.controller.cli_output import pipe_safe, print_json, print_table
from edgefleet.shared.errors import ArtifactError, ConfigError


def plan_push(args: argparse.Namespace) -> int:
    name, version = parse_target(args.target)
    path = Path(args.file)
    if not path.is_file():
        raise ArtifactError(f"no such plan file: {path}")
    fields = {"compute_capability": args.compute_capability, "tensorrt": args.tensorrt,
              "precision": args.precision}  # fmt: skip
    with path.open("rb") as f:
        row = request(
            "POST", f"/v1/models/{name}/versions/{version}/plans", data=fields,
            files={"file": (path.name, f, "application/octet-stream")}, headers=actor_header(),
        )  # fmt: skip
    print(f"signed {row['target']} (plan {row['id']}, {row['length']} bytes)")
    return 0


@pipe_safe
def plan_list(args: argparse.Namespace) -> int:
    params = {}
    if args.target:
        params["model"], params["version"] = parse_target(args.target)
    rows = request("GET", "/v1/plans", params=params)["data"]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "MODEL", "VERSION", "GPU", "TENSORRT", "PRECISION", "STATE", "SOURCE", "SHA256"],
        [
            [str(r["id"]), r["name"], r["version"], f"sm {r['compute_capability']}",
             r["tensorrt"], r["precision"], r["state"], r["source"], r["sha256"][:12]]
            for r in rows
        ],
    )  # fmt: skip
    return 0


def plan_approve(args: argparse.Namespace) -> int:
    if not str(args.id).isdigit():
        raise ConfigError(f"bad plan id {args.id!r}: expected a number")
    row = request("POST", f"/v1/plans/{args.id}/approve", headers=actor_header())
    print(f"signed {row['target']}: devices of sm {row['compute_capability']} with TensorRT "
          f"{row['tensorrt']} ({row['precision']}) get it from now on")  # fmt: skip
    return 0
