"""Parsers of the operator CLI's arguments that several command modules share."""

from __future__ import annotations

from edgefleet.shared.errors import ConfigError


def parse_target(value: str) -> tuple[str, str]:
    name, sep, version = value.partition(":")
    if not sep or not name or not version:
        raise ConfigError(f"bad target {value!r}: expected NAME:VERSION")
    return name, version
