"""``edgefleet sampling set|list|delete``: sampler settings per device group."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgefleet.controller.cli_http import request
from edgefleet.controller.cli_output import pipe_safe, print_json, print_table
from edgefleet.controller.sampling import check_settings, parse_selector
from edgefleet.shared.errors import ConfigError
from edgefleet.shared.yaml_file import read_yaml


def read_settings(path: Path) -> dict[str, Any]:
    """A YAML file: the agent's ``sampling:`` mapping (bare, or under a ``sampling`` key)."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and isinstance(raw.get("sampling"), dict):
        raw = raw["sampling"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sampler settings")
    try:
        return check_settings(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.reason}") from e


def sampling_set(args: argparse.Namespace) -> int:
    body = {"selector": parse_selector(args.selector), "settings": read_settings(Path(args.file))}
    rule = request("PUT", "/v1/sampling", json=body)
    names = ", ".join(s["name"] for s in rule["settings"]["strategies"]) or "none"
    print(f"sampling rule {rule['id']} for {_selector(rule['selector'])}: strategies {names}")
    return 0


@pipe_safe
def sampling_list(args: argparse.Namespace) -> int:
    answer = request("GET", "/v1/sampling")
    if args.json:
        print_json(answer["data"])
        return 0
    rows = [[str(r["id"]), _selector(r["selector"]), _summary(r["settings"])]
            for r in answer["data"]]  # fmt: skip
    print_table(["ID", "SELECTOR", "STRATEGIES"], rows)
    return 0


def sampling_delete(args: argparse.Namespace) -> int:
    parse_selector(args.selector)
    request("DELETE", "/v1/sampling", params={"selector": args.selector})
    print(f"sampling rule for {args.selector or '(all devices)'} deleted")
    return 0


def _selector(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(all devices)"


def _summary(settings: dict[str, Any]) -> str:
    if not settings.get("enabled", True):
        return "disabled"
    parts = []
    for s in settings.get("strategies", []):
        limits = {k: s.get(k) for k in ("per_minute", "per_hour", "per_day") if s.get(k)}
        parts.append(f"{s['name']}({s['kind']}{', ' if limits else ''}{json.dumps(limits)[1:-1]})")
    return "; ".join(parts) or "none"
