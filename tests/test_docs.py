"""The docs rendered from the code match it (docs/ARCHITECTURE.md "REST", docs/CLI.md):
regenerate them in memory and compare with what is committed; the failure names the
command that rewrites them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet import docgen
from edgefleet.cli import command_tree

REPO = Path(__file__).resolve().parent.parent


def _commands(command: Any, words: list[str]) -> Iterator[list[str]]:
    yield words
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*words, name])


@pytest.fixture(scope="module")
def pages() -> dict[Path, str]:
    return docgen.render(REPO)


def test_committed_docs_match_the_code(pages: dict[Path, str]) -> None:
    stale = [
        rel.as_posix()
        for rel, want in pages.items()
        if not (REPO / rel).is_file() or (REPO / rel).read_text(encoding="utf-8") != want
    ]
    assert not stale, f"out of date with the code: {', '.join(stale)}; run `{docgen.COMMAND}`"


def test_the_pages_cover_every_route_and_command(pages: dict[Path, str]) -> None:
    arch, cli = pages[docgen.ARCHITECTURE], pages[docgen.CLI_DOC]
    with docgen.controller_app() as app:
        for path, ops in app.openapi()["paths"].items():
            for method in ops:
                assert f"| {method.upper()} | {path} |" in arch
    assert "| POST | /v1/rollouts | " in arch and "| operator |" in arch
    assert "| GET | /v1/tokens | List Tokens |  | `TokensPublic` | admin |" in arch
    assert "its own device or viewer" in arch  # device_or("viewer", own=True)
    for words in _commands(command_tree(), ["edgefleet"]):
        assert f"`{' '.join(words)}`" in cli, words
    assert "Runs `edgefleet.cli.agent:agent_run`." in cli
    assert "| `--json` | print JSON instead of text |" in cli


def test_a_drifted_page_is_caught_and_rewritten(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    arch = (REPO / docgen.ARCHITECTURE).read_text(encoding="utf-8")
    drifted = arch.replace("| GET | /v1/models |", "| GET | /v1/modelz |")
    assert drifted != arch
    (tmp_path / docgen.ARCHITECTURE).write_text(drifted, encoding="utf-8")
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 1  # and CLI.md is missing
    assert docgen.main(["--root", str(tmp_path)]) == 0
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / docgen.ARCHITECTURE).read_text(encoding="utf-8") == arch


def test_a_page_without_its_markers_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / docgen.ARCHITECTURE).write_text("# no markers\n", encoding="utf-8")
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rest-api:begin" in err, err
