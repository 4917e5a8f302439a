"""Alert settings: ``DATA/alerts.yaml`` (optional) -> rules and webhook URLs.

rules:
  - {metric: psi, fire_above: 0.25, clear_below: 0.1, fire_after: 2, clear_after: 2}
  - {metric: detection_rate, scope: site, baseline: captured, fire_above: 0.5, clear_below: 0.3}
webhooks:
  - https://hooks.example.com/edgefleet
interval_s: 5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from edgefleet.controller.alerts.rules import Rule
from edgefleet.shared.errors import ConfigError

FILE_NAME = "alerts.yaml"


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...] = (Rule(),)
    webhooks: tuple[str, ...] = ()
    interval_s: float = 5.0  # seconds between looks at new telemetry windows
    webhook_timeout_s: float = 5.0  # seconds per attempt
    webhook_attempts: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule is a mapping")
    try:
        return Rule(**raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _webhook(url: Any, where: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: webhook {url!r} is not an http(s) URL")
    return url


def load_alert_config(data_dir: Path) -> AlertConfig:
    path = data_dir / FILE_NAME
    if not path.is_file():
        return AlertConfig()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping")
    rules = tuple(_rule(r, str(path)) for r in raw.get("rules") or [{}])
    keys = [(r.scope, r.metric, r.baseline) for r in rules]
    for key in {k for k in keys if keys.count(k) > 1}:
        raise ConfigError(f"{path}: two rules for scope {key[0]}, metric {key[1]}, "
                          f"baseline {key[2]}: their alerts would be one")  # fmt: skip
    hooks = tuple(_webhook(u, str(path)) for u in raw.get("webhooks") or [])
    interval = float(raw.get("interval_s", 5.0))
    if interval <= 0:
        raise ConfigError(f"{path}: interval_s must be above 0")
    return AlertConfig(rules=rules, webhooks=hooks, interval_s=interval)
