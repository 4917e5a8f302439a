"""``edgefleet sampling set|list|delete``: sampler settings per device group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, show_list
from edgefleet.shared.errors import ConfigError

app = group("sampler settings per device group")
Selector = Annotated[str, typer.Option(
    "--selector", metavar="KEY=VALUE[,KEY=VALUE]", help="the devices' labels")]  # fmt: skip


def read_settings(path: Path) -> dict[str, Any]:
    """A YAML file: the agent's ``sampling:`` mapping (bare, or under a ``sampling`` key)."""
    from edgefleet.controller.sampling import check_settings
    from edgefleet.shared.yaml_file import read_yaml

    raw = read_yaml(path)
    if isinstance(raw, dict) and isinstance(raw.get("sampling"), dict):
        raw = raw["sampling"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sampler settings")
    try:
        return check_settings(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.reason}") from e


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


@app.command("set")
def sampling_set(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="YAML: the agent's sampling: mapping")],
    selector: Selector = "",
) -> None:  # fmt: skip
    """Settings for devices whose labels match (first wins)."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.sampling import parse_selector

    chosen = parse_selector(selector)
    with ControllerClient.from_env() as api:
        rule = api.set_sampling(chosen, read_settings(file))
    names = ", ".join(s["name"] for s in rule["settings"]["strategies"]) or "none"
    print(f"sampling rule {rule['id']} for {_selector(rule['selector'])}: strategies {names}")


RULE_COLUMNS = (
    Column("ID", lambda r: str(r["id"])),
    Column("SELECTOR", lambda r: _selector(r["selector"])),
    Column("STRATEGIES", lambda r: _summary(r["settings"])),
)


@app.command("list")
def sampling_list(as_json: JsonFlag = False) -> None:
    """The rules, in the order they are tried."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.sampling_rules(), RULE_COLUMNS, as_json)


@app.command("delete")
def sampling_delete(selector: Selector = "") -> None:
    """Remove the rule of a selector."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.sampling import parse_selector

    parse_selector(selector)
    with ControllerClient.from_env() as api:
        api.delete_sampling(selector)
    print(f"sampling rule for {selector or '(all devices)'} deleted")
