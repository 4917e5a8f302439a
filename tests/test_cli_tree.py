"""The command tree as a whole: every command has help, `--json` is the one shared flag,
and the package's modules stay importable without the controller's or agent's extras."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgefleet.cli import command_tree, main
from edgefleet.cli.output import JSON_HELP

CLI_DIR = Path(__file__).resolve().parent.parent / "edgefleet" / "cli"


def _walk(command: Any, words: tuple[str, ...] = ("edgefleet",)) -> Iterator[tuple[str, Any]]:
    yield " ".join(words), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*words, name))


def test_every_command_and_parameter_has_help() -> None:
    missing = []
    for words, command in _walk(command_tree()):
        if not (command.help or "").strip():
            missing.append(words)
        missing += [f"{words} {p.name}" for p in command.params if not (p.help or "").strip()]
    assert not missing, f"no help text: {missing}"


def test_json_is_the_one_shared_flag() -> None:
    with_json = []
    for words, command in _walk(command_tree()):
        for p in command.params:
            if "--json" in p.opts:
                assert p.help == JSON_HELP and p.is_flag and not p.secondary_opts, words
                with_json.append(words)
    assert "edgefleet device list" in with_json and "edgefleet bench faults" in with_json
    declared = [f.name for f in CLI_DIR.glob("*.py") if '"--json"' in f.read_text()]
    assert declared == ["output.py"], f"--json declared outside output.py: {declared}"


def test_help_exits_0_and_a_usage_error_exits_2(capsys: Any) -> None:
    assert main(["rollout", "create", "-h"]) == 0
    assert "--selector KEY=VALUE" in capsys.readouterr().out
    assert main(["rollout", "status"]) == 2
    assert main(["model", "list", "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_shell_completion_comes_from_the_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "--show-completion", "bash"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "_EDGEFLEET_COMPLETE" in out.stdout


def test_the_tree_loads_without_the_controller_or_agent_extras() -> None:
    """Command modules import their heavy dependencies only when they run."""
    code = (
        "import sys\n"
        "for name in ('httpx', 'fastapi', 'sqlmodel', 'onnxruntime', 'cv2', 'paho', 'torch'):\n"
        "    sys.modules[name] = None\n"
        "from edgefleet.cli import main\n"
        "sys.exit(main(['model', 'list']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 1, out
    assert out.stderr.strip() == (
        "edgefleet: error: this command needs the 'controller' extra: "
        "pip install 'edgefleet[controller]'"
    )


def test_a_list_is_a_plain_aligned_table_or_json(capsys: Any) -> None:
    from edgefleet.cli.output import Column, show_list

    rows = [{"id": 1, "sel": "site=[a]"}, {"id": 22, "sel": "-"}]
    columns = (Column("ID", lambda r: str(r["id"])), Column("SELECTOR", lambda r: r["sel"]))
    show_list(rows, columns, as_json=False)
    assert capsys.readouterr().out.splitlines() == [
        "ID  SELECTOR",
        "1   site=[a]",  # no Rich markup read into a value
        "22  -",
    ]
    show_list(rows, columns, as_json=True)
    assert json.loads(capsys.readouterr().out) == rows
