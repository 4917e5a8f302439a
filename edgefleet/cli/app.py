"""The one console script, ``edgefleet``: a Typer tree of command groups.

Command modules import only the standard library, Typer and Rich at the top; each command
imports what it runs inside its body, so the agent install never imports FastAPI or torch,
and a missing extra is one line naming it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from edgefleet import __version__
from edgefleet.cli import (
    agent,
    bench,
    controller,
    data,
    devices,
    gate,
    keys,
    models,
    pins,
    pki,
    rollouts,
    sampling,
    sim,
    trust,
)
from edgefleet.cli.base import CONTEXT
from edgefleet.shared.errors import EdgefleetError

PROG = "edgefleet"
EXTRA_FOR = {
    "onnxruntime": "agent",
    "cv2": "agent",
    "paho": "agent",
    "tuf": "agent",
    "prometheus_client": "agent",
    "urllib3": "agent",
    "fastapi": "controller",
    "sqlmodel": "controller",
    "uvicorn": "controller",
    "httpx": "controller",
    "alembic": "controller",
    "pydantic_settings": "controller",
    "securesystemslib": "controller",
    "cryptography": "controller",  # the agent extra has it too; a missing one is the PKI's
    "onnx": "controller",
    "mlflow": "mlflow",
    "ultralytics": "export",
    "torch": "export",
}
INTERRUPTED = 130  # the shell's code for Ctrl-C


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Ship signed vision models to fleets of edge devices."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        name=PROG, no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT,
        callback=_root,
    )  # fmt: skip
    app.command("infer")(agent.infer)
    app.add_typer(agent.app, name="agent")
    app.add_typer(bench.app, name="bench")
    app.add_typer(controller.app, name="controller")
    app.add_typer(models.app, name="model")
    app.add_typer(devices.app, name="device")
    app.add_typer(rollouts.app, name="rollout")
    app.add_typer(pins.pin_app, name="pin")
    app.add_typer(pins.channel_app, name="channel")
    app.add_typer(data.alerts_app, name="alerts")
    app.add_typer(data.samples_app, name="samples")
    app.add_typer(gate.dataset_app, name="dataset")
    app.add_typer(sampling.app, name="sampling")
    app.add_typer(pki.app, name="pki")
    app.add_typer(trust.token_app, name="token")
    app.add_typer(trust.audit_app, name="audit")
    app.add_typer(keys.app, name="keys")
    app.command("demo")(controller.demo)
    app.command("sim")(sim.sim)
    return app


def command_tree() -> Any:
    """The Click command behind the Typer app (docs/CLI.md is rendered from it)."""
    return typer.main.get_command(build_app())


def _missing_extra(e: ModuleNotFoundError) -> str:
    top = (e.name or "").split(".")[0]
    extra = EXTRA_FOR.get(top)
    if extra is None:
        return f"this command needs the Python package {top!r}, which is not installed"
    return f"this command needs the '{extra}' extra: pip install 'edgefleet[{extra}]'"


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """0 done, 1 an EdgefleetError (one line on stderr), 2 a usage error, 130 Ctrl-C."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command_tree().main(args=args, prog_name=PROG, standalone_mode=True)
    except SystemExit as e:
        return _exit_code(e.code)
    except EdgefleetError as e:
        return _fail(e.reason)
    except ModuleNotFoundError as e:
        if (e.name or "").startswith(PROG):  # our own bug, not a missing dependency
            raise
        return _fail(_missing_extra(e))
    except KeyboardInterrupt:
        return INTERRUPTED
    return 0


def _fail(reason: str) -> int:
    print(f"{PROG}: error: {reason}", file=sys.stderr)
    return 1


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """The parameters ``argv`` gives its command, by name, without running it (tests and
    tools read the real parser this way). Groups take no options of their own here."""
    command, rest = command_tree(), list(argv)
    while rest and rest[0] in getattr(command, "commands", {}):
        command = command.commands[rest.pop(0)]
    return dict(command.make_context(PROG, rest).params)
