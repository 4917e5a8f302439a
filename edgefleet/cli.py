"""The one console script, ``edgefleet``.

Each part registers its own subcommands; handlers are named as "module:function" and
imported only when run, so the agent install never imports FastAPI or torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgefleet import __version__
from edgefleet.shared.errors import EdgefleetError

# Modules whose ``register(subparsers)`` adds commands; they import only the stdlib at top.
_REGISTRARS = (
    "edgefleet.agent.cli",
    "edgefleet.agent.bench_cli",
    "edgefleet.controller.cli",
    "edgefleet.controller.operator_cli",
    "edgefleet.controller.keys_cli",
    "edgefleet.demo",
    "edgefleet.sim",
)

_EXTRA_FOR = {
    "onnxruntime": "agent",
    "cv2": "agent",
    "paho": "agent",
    "tuf": "agent",
    "fastapi": "controller",
    "sqlmodel": "controller",
    "uvicorn": "controller",
    "httpx": "controller",
    "ultralytics": "export",
    "torch": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="Ship signed vision models to fleets of edge devices."
    )
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _REGISTRARS:
        importlib.import_module(name).register(sub)
    return parser


def _run_handler(target: str, args: argparse.Namespace) -> int:
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        extra = _EXTRA_FOR.get(top)
        if extra is None:
            raise
        raise EdgefleetError(
            f"this command needs the '{extra}' extra: pip install 'edgefleet[{extra}]'"
        ) from e
    result: int | None = getattr(module, func_name)(args)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run_handler(args.handler, args)
    except EdgefleetError as e:
        print(f"edgefleet: error: {e.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
