"""Docs rendered from the code, so they cannot drift: the REST table of
docs/ARCHITECTURE.md (from the controller app's OpenAPI document and its routes'
dependencies) and the CLI reference docs/CLI.md (from the
Typer command tree) and the settings table of docs/SETTINGS.md (from ServeConfig's fields).
``python -m edgefleet.docgen`` rewrites them; ``--check`` only says
which differ (tests/test_docs.py runs the same comparison)."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = Path("docs") / "ARCHITECTURE.md"
CLI_DOC = Path("docs") / "CLI.md"
SETTINGS_DOC = Path("docs") / "SETTINGS.md"
COMMAND = "python -m edgefleet.docgen"
_ROLES = ("viewer", "operator", "admin")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --- REST ------------------------------------------------------------------------------


@contextlib.contextmanager
def controller_app() -> Iterator[Any]:
    """The controller app over a throwaway data folder (its keys, an empty SQLite)."""
    from edgefleet.controller.app import create_app
    from edgefleet.controller.artifacts import ArtifactStore
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.services import NoLink, Services
    from edgefleet.controller.settings import Settings
    from edgefleet.controller.trust import TufSigning

    with tempfile.TemporaryDirectory(prefix="edgefleet-docgen-") as folder:
        settings = Settings(data_dir=Path(folder))
        engine = make_engine(settings.db_url)
        try:
            quiet = io.StringIO()  # "generated signing key ...": throwaway keys
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                signing = TufSigning.open(settings.data_dir)
            store = ArtifactStore(settings.artifacts_dir)
            yield create_app(Services(settings, engine, store, signing, NoLink()))
        finally:
            engine.dispose()


def _dependency_calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _dependency_calls(dep)


def _who(route: Any, method: str) -> str:
    """Who may call a route, as far as its dependencies (controller/api/deps.py) say; ""
    when they say nothing (the route checks by itself, or it is open)."""
    from edgefleet.controller.api.deps import VIEWER_READS_OPERATOR_WRITES, device_or, require

    guard = VIEWER_READS_OPERATOR_WRITES.dependency
    role_check = require("viewer").dependency.__code__
    device_check = device_or("viewer").dependency.__code__
    roles: list[str] = []
    devices: list[str] = []
    for call in _dependency_calls(route.dependant):
        code = getattr(call, "__code__", None)
        bound = inspect.getclosurevars(call).nonlocals if inspect.isfunction(call) else {}
        if call is guard:
            roles.append("viewer" if method in _READS else "operator")
        elif code is role_check:
            roles.append(bound["role"])
        elif code is device_check:
            devices.append("its own device" if bound.get("own") else "a device")
            roles.append(bound["role"])
    if not roles:
        return ""
    need = max(roles, key=_ROLES.index)
    return " or ".join([*dict.fromkeys(devices), need]) if devices else need


def _schema(ref: dict[str, Any]) -> str:
    if "$ref" in ref:
        return "`" + str(ref["$ref"]).rsplit("/", 1)[-1] + "`"
    if ref.get("type") == "array" and "items" in ref:
        return f"[{_schema(ref['items'])}]"
    return ""


def _body(op: dict[str, Any]) -> str:
    content = op.get("requestBody", {}).get("content", {})
    for kind, spec in content.items():
        name = _schema(spec.get("schema", {}))
        if kind.startswith("multipart/"):
            return "multipart"
        return name or kind
    return ""


def _answer(op: dict[str, Any]) -> str:
    for code in ("200", "201"):
        content = op.get("responses", {}).get(code, {}).get("content", {})
        for spec in content.values():
            return _schema(spec.get("schema", {}))
    return ""


def _summary(op: dict[str, Any]) -> str:
    """The first sentence of the route's docstring, else FastAPI's summary (its name)."""
    text = " ".join((op.get("description") or "").split("\n\n")[0].split())
    if not text:
        return str(op.get("summary", ""))
    sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return sentence.rstrip(".").replace("``", "`")


def _api_routes(app: Any) -> Iterator[Any]:
    """The app's API routes with the dependencies of the routers that include them."""
    from fastapi import routing

    if hasattr(routing, "iter_route_contexts"):  # FastAPI 0.165: routers stay nested
        for context in routing.iter_route_contexts(app.routes):
            if isinstance(context.original_route, routing.APIRoute):
                yield context
    else:  # earlier releases copy every included route into app.routes
        yield from (r for r in app.routes if isinstance(r, routing.APIRoute))


def rest_table(app: Any) -> str:
    """``method | path | summary | body | answer | who``: one row per operation of the
    OpenAPI document, in the order the app registers them."""
    routes = {
        (route.path_format, method): route for route in _api_routes(app) for method in route.methods
    }
    rows = ["| method | path | summary | body | answer | who |", "|---|---|---|---|---|---|"]
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            who = _who(routes[(path, method.upper())], method.upper())
            cells = (method.upper(), path, _summary(op), _body(op), _answer(op), who)
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


# --- CLI -------------------------------------------------------------------------------


def _param_name(param: Any) -> str:
    """``--flag METAVAR`` for an option, ``METAVAR`` for a positional argument."""
    if param.param_type_name == "argument":
        name = str(param.metavar or param.name.upper())
        return f"{name} ..." if param.nargs == -1 and not name.endswith("...") else name
    flags = ", ".join([*param.opts, *param.secondary_opts])
    if param.is_flag:
        return flags
    return f"{flags} {param.metavar or param.name.upper()}"


def _choices(param: Any) -> list[str]:
    """The values of a parameter typed as an Enum (Typer keeps the annotation; a Click
    Choice has them itself)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(m.value) for m in annotation]
    return [str(c) for c in getattr(getattr(param, "type", None), "choices", None) or ()]


def _param_help(param: Any) -> str:
    text = getattr(param, "help", None) or ""
    choices = _choices(param)
    if choices:
        text += f" (one of: {', '.join(choices)})"
    default = param.default
    shown = param.param_type_name == "option" and not param.is_flag and "default" not in text
    if shown and default not in (None, (), [], ""):
        text += f" (default: {getattr(default, 'value', default)})"
    if param.required and param.param_type_name == "option":
        text += " (required)"
    if getattr(param, "multiple", False):
        text += " (repeatable)"
    return text


def _params(command: Any) -> list[str]:
    rows = [
        f"| `{_cell(_param_name(p))}` | {_cell(_param_help(p))} |"
        for p in command.params
        if not getattr(p, "hidden", False)
    ]
    return ["| argument | help |", "|---|---|", *rows] if rows else []


def _command(words: list[str], command: Any) -> list[str]:
    out = [f"{'#' * min(len(words) + 1, 4)} `{' '.join(words)}`", ""]
    for text in (command.help, command.epilog):
        if text:
            out += [_cell(text), ""]
    params = _params(command)
    if params:
        out += [*params, ""]
    callback = command.callback
    subs = dict(getattr(command, "commands", {}))
    if callback is not None and not subs:
        out += [f"Runs `{callback.__module__}:{callback.__name__}`.", ""]
    if subs:
        out += ["Subcommands: " + ", ".join(f"`{name}`" for name in subs) + ".", ""]
    for name, sub in subs.items():
        out += _command([*words, name], sub)
    return out


def cli_reference() -> str:
    from edgefleet.cli import command_tree

    head = [
        "# edgefleet CLI reference",
        "",
        f"<!-- Generated from the Typer command tree (edgefleet/cli/) by `{COMMAND}`; do not"
        " edit by hand. tests/test_docs.py fails when this page and the code differ. -->",
        "",
        "Every command and subcommand of the `edgefleet` console script, with its help and"
        " its arguments (`edgefleet COMMAND --help` prints the same). 'Runs' names the"
        " command's function (`module:function`); what it runs is imported only then.",
        "",
    ]
    return "\n".join(head + _command(["edgefleet"], command_tree())).rstrip() + "\n"


# --- the pages -------------------------------------------------------------------------


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between ``<!-- name:begin -->`` and ``<!-- name:end -->``
    replaced by ``body``; a ValueError when the markers are missing."""
    pattern = re.compile(rf"(<!-- {name}:begin -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def render(root: Path = REPO) -> dict[Path, str]:
    """Each generated page as the code says it should read."""
    with controller_app() as app:
        table = rest_table(app)
    arch = (root / ARCHITECTURE).read_text(encoding="utf-8")
    arch = replace_block(arch, "rest-api", table)
    from edgefleet.controller.settings import settings_table

    page = root / SETTINGS_DOC if (root / SETTINGS_DOC).is_file() else REPO / SETTINGS_DOC
    settings = replace_block(page.read_text(encoding="utf-8"), "settings", settings_table())
    return {ARCHITECTURE: arch, CLI_DOC: cli_reference(), SETTINGS_DOC: settings}


def stale(root: Path = REPO) -> list[Path]:
    """The generated pages whose committed text differs from the code's."""
    out = []
    for rel, want in render(root).items():
        path = root / rel
        have = path.read_text(encoding="utf-8") if path.is_file() else None
        if have != want:
            out.append(rel)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the repository (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        pages = render(args.root)
    except (OSError, ValueError) as e:
        print(f"{COMMAND}: error: {e}", file=sys.stderr)
        return 1
    changed = []
    for rel, want in pages.items():
        path = args.root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != want:
            changed.append(rel)
            if not args.check:
                path.write_text(want, encoding="utf-8")
    verb = "stale" if args.check else "rewrote"
    for rel in changed:
        print(f"{verb}: {rel.as_posix()}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
