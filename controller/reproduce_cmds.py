"""Handler of ``edgefleet model reproduce``: a thin argparse shim over :func:`reproduce`,
which fetches the version's lineage (and its ONNX) from the controller and runs
``reproduce.py``'s steps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgefleet.controller import reproduce as rep
from edgefleet.controller.cli_args import parse_target
from edgefleet.controller.cli_http import check_response, controller_client, request
from edgefleet.controller.cli_output import pipe_safe, print_json
from edgefleet.shared.errors import ArtifactError
from edgefleet.shared.hashing import sha256_file


@pipe_safe
def model_reproduce(args: argparse.Namespace) -> int:
    weights = Path(args.weights) if args.weights else None
    return reproduce(args.target, Path(args.out), weights, args.export_arg, as_json=args.json)


def reproduce(
    target: str,
    out: Path,
    weights: Path | None = None,
    export_args: list[str] | None = None,
    *,
    as_json: bool = False,
) -> int:
    """Write NAME:VERSION's recorded training command, arguments and dataset manifest
    under ``out``; with ``weights``, export them again and compare with the pushed ONNX.
    0 when reproduced (the same bytes, or the same model but for volatile metadata)."""
    name, version = parse_target(target)
    overrides = rep.parse_overrides(export_args or [])
    answer = request("GET", f"/v1/models/{name}/versions/{version}/lineage")
    doc = answer["lineage"]
    files = [str(p) for p in rep.write_bundle(doc, out)]
    if weights is None:
        _show(files, {"files": files, "check": None}, as_json,
              ["(no --weights: the re-export was not checked)"])  # fmt: skip
        return 0
    rep.check_weights(weights, doc)
    args = rep.export_arguments(doc, overrides)
    fresh = rep.export_onnx(weights, out / "reexport", args)
    pushed = _download(name, version, answer["sha256"], out / "pushed.onnx")
    check = rep.compare(pushed, fresh, doc)
    (out / "reproduce.json").write_text(json.dumps({"export": args, **check.to_dict()}, indent=2))
    result: dict[str, object] = {"files": files, "export": args, "check": check.to_dict()}
    _show(files, result, as_json, rep.report_lines(check))
    return 0 if check.verdict != rep.DIFFERENT else 1


def _show(files: list[str], result: dict[str, object], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print_json(result)
        return
    for path in files:
        print(f"wrote {path}")
    print("\n".join(lines))


def _download(name: str, version: str, sha256: str, dest: Path) -> Path:
    """The version's ONNX as the controller serves it to devices (by its digest)."""
    url = f"/tuf/image/targets/models/{name}/{version}/{sha256}.model.onnx"
    with controller_client() as client, client.stream("GET", url) as answer:
        if not answer.is_success:
            answer.read()
            check_response(answer)
        with dest.open("wb") as f:
            for chunk in answer.iter_bytes():
                f.write(chunk)
    if sha256_file(dest) != sha256:
        raise ArtifactError(f"the controller sent {name}:{version} with another digest")
    return dest
