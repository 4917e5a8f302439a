"""The ``edgefleet`` command line: one Typer tree (``app``), one HTTP client of the
controller (``client``), one output helper (``output``)."""

from edgefleet.cli.app import command_tree, main, parse_args

__all__ = ["command_tree", "main", "parse_args"]
