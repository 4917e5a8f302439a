"""Parsers of argument values that several commands share: ``NAME:VERSION``, selectors,
numeric ids. Each refuses a bad value with one ConfigError line."""

from __future__ import annotations

from edgefleet.shared.errors import ConfigError


def parse_target(value: str) -> tuple[str, str]:
    name, sep, version = value.partition(":")
    if not sep or not name or not version:
        raise ConfigError(f"bad target {value!r}: expected NAME:VERSION")
    return name, version


def parse_selector(items: list[str]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad selector {item!r}: expected KEY=VALUE")
        selector[key] = value
    return selector


def numeric_id(value: str, what: str) -> str:
    if not value.isdigit():
        raise ConfigError(f"bad {what} id {value!r}: expected a number")
    return value
