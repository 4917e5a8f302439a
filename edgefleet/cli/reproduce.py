"""``edgefleet model reproduce``: a version's lineage written back as files (training
command, arguments, dataset manifest); with ``--weights``, a re-export compared with the
pushed ONNX. The steps are controller/reproduce.py's; this fetches and prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.output import JsonFlag, print_json
from edgefleet.cli.params import parse_target
from edgefleet.shared.errors import ArtifactError


def reproduce(
    target: Annotated[str, typer.Argument(metavar="NAME:VERSION", help="a model version")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="where to write them")],
    weights: Annotated[Path | None, typer.Option(
        "--weights", metavar="FILE",
        help="the .pt it was exported from (checked against the recorded digest)")] = None,
    export_arg: Annotated[list[str] | None, typer.Option(
        "--export-arg", metavar="KEY=VALUE",
        help="export with this instead of the recorded argument; repeat for several")] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Write a version's recorded training command, arguments and dataset manifest; with
    --weights, check that a re-export gives the pushed ONNX (exit 1 if it does not)."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller import reproduce as rep
    from edgefleet.shared.hashing import sha256_file

    name, version = parse_target(target)
    overrides = rep.parse_overrides(export_arg or [])
    with ControllerClient.from_env() as api:
        answer = api.lineage_answer(name, version)
        doc = answer["lineage"]
        files = [str(p) for p in rep.write_bundle(doc, out)]
        if weights is None:
            _show(files, {"files": files, "check": None}, as_json,
                  ["(no --weights: the re-export was not checked)"])  # fmt: skip
            return
        rep.check_weights(weights, doc)
        args = rep.export_arguments(doc, overrides)
        fresh = rep.export_onnx(weights, out / "reexport", args)
        pushed = out / "pushed.onnx"
        api.download_model(name, version, answer["sha256"], pushed)
    if sha256_file(pushed) != answer["sha256"]:
        raise ArtifactError(f"the controller sent {name}:{version} with another digest")
    check = rep.compare(pushed, fresh, doc)
    (out / "reproduce.json").write_text(json.dumps({"export": args, **check.to_dict()}, indent=2))
    result: dict[str, object] = {"files": files, "export": args, "check": check.to_dict()}
    _show(files, result, as_json, rep.report_lines(check))
    if check.verdict == rep.DIFFERENT:
        raise typer.Exit(1)


def _show(files: list[str], result: dict[str, object], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print_json(result)
        return
    for path in files:
        print(f"wrote {path}")
    print("\n".join(lines))
