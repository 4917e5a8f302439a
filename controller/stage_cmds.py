"""Handlers of ``edgefleet model stage`` and ``edgefleet channel set --stage``: thin
argparse shims over functions with typed parameters (a CLI framework calls those)."""

from __future__ import annotations

import argparse

from edgefleet.controller.cli_args import parse_target
from edgefleet.controller.cli_http import actor_header, request
from edgefleet.controller.cli_output import pipe_safe
from edgefleet.shared.errors import ConfigError


@pipe_safe
def model_stage(args: argparse.Namespace) -> int:
    return set_stage(args.target, args.stage)


def set_stage(target: str, stage: str) -> int:
    """Move NAME:VERSION to a registry stage (admin); production archives the one before."""
    name, version = parse_target(target)
    row = request("PUT", f"/v1/models/{name}/versions/{version}/stage",
                  json={"stage": stage}, headers=actor_header())  # fmt: skip
    print(f"{name}:{row['version']} is {row['stage']}")
    return 0


@pipe_safe
def channel_set(args: argparse.Namespace) -> int:
    return set_channel(args.name, args.target, args.stage)


def set_channel(name: str, target: str, stage: str | None = None) -> int:
    """Point channel ``name`` at NAME:VERSION, at NAME's version in ``stage``, or (NAME
    alone) at NAME's newest version."""
    model, _, version = target.partition(":")
    if not model:
        raise ConfigError(f"bad target {target!r}: expected NAME[:VERSION]")
    if version and stage:
        raise ConfigError("give NAME:VERSION or NAME --stage STAGE, not both")
    body = {"model": model, "version": version or None, "stage": stage}
    c = request("PUT", f"/v1/channels/{name}", json=body, headers=actor_header())
    if c["stage"]:
        follows = f" (follows {c['stage']})"
    else:
        follows = "" if c["version"] else " (follows the newest version)"
    now = c["resolved"] or f"{model} (no version {'in ' + c['stage'] if c['stage'] else 'yet'})"
    print(f"channel {c['name']}: {now}{follows}")
    return 0
