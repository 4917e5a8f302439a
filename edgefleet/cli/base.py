"""How every command group of the CLI is made: plain help (no markup to escape in help
texts), ``-h`` beside ``--help``, and help instead of a bare group."""

from __future__ import annotations

from typing import Any

import typer

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def group(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text, no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT,
        add_completion=False,
    )  # fmt: skip
