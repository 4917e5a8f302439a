"""Reproducing a pushed version from its lineage (``edgefleet model reproduce``).

:func:`write_bundle` writes what the lineage recorded (``controller/lineage.py``) as
files a person can run and check: the training command and its arguments, the dataset
manifest in ``sha256sum`` format, the export arguments. :func:`export_onnx` exports the
recorded weights again with the recorded export arguments (Ultralytics, the export
extra), and :func:`compare` says whether the result is the pushed ONNX: the same bytes,
the same model but for volatile metadata (``onnx_compare.py``), or what differs. No
controller and no network here: the CLI command (edgefleet/cli/reproduce.py) fetches.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from edgefleet.controller import onnx_compare
from edgefleet.controller.lineage import tool_versions
from edgefleet.shared.errors import ArtifactError, ConfigError
from edgefleet.shared.hashing import sha256_file

IDENTICAL, EQUIVALENT, DIFFERENT = "identical", "equivalent", "different"


@dataclass(frozen=True)
class Check:
    """The pushed ONNX against a fresh export of the same weights."""

    pushed_sha256: str
    fresh_sha256: str
    pushed_canonical: str
    fresh_canonical: str
    differences: list[str] = field(default_factory=list)  # volatile ones marked "ignored"
    tools: dict[str, list[str | None]] = field(default_factory=dict)  # recorded -> now

    @property
    def verdict(self) -> str:
        if self.pushed_sha256 == self.fresh_sha256:
            return IDENTICAL
        return EQUIVALENT if self.pushed_canonical == self.fresh_canonical else DIFFERENT

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "pushed_sha256": self.pushed_sha256,
                "fresh_sha256": self.fresh_sha256, "pushed_canonical": self.pushed_canonical,
                "fresh_canonical": self.fresh_canonical, "differences": self.differences,
                "tools": self.tools}  # fmt: skip


# --- what the lineage recorded, as files ---------------------------------------------------


def training_command(args: dict[str, Any]) -> str:
    """``yolo train key=value ...`` with every recorded argument (Ultralytics' CLI form)."""
    mode = str(args.get("mode") or "train")
    words = ["yolo", mode] + [f"{k}={_cli_value(v)}" for k, v in args.items() if k != "mode"]
    return " ".join(shlex.quote(w) for w in words)


def _cli_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def write_bundle(doc: dict[str, Any], out: Path) -> list[Path]:
    """The lineage's files under ``out``; returns them, in the order written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [_write(out / "lineage.json", json.dumps(doc, indent=2, sort_keys=True))]
    run = doc.get("run")
    if run:
        written.append(_write(out / "args.yaml", yaml.safe_dump(run["args"], sort_keys=False)))
        script = train_script(run)
        written.append(_write(out / "train.sh", script))
    data = doc.get("dataset")
    if data:
        written.append(_write(out / "dataset.json", json.dumps(data, indent=2, sort_keys=True)))
        sums = "".join(f"{sha}  {path}\n" for path, sha in sorted(data["files"].items()))
        written.append(_write(out / "dataset.sha256", sums))  # sha256sum -c, from its root
    written.append(_write(out / "export.json", json.dumps(doc.get("export") or {}, indent=2)))
    return written


def train_script(run: dict[str, Any]) -> str:
    """A shell script that runs the recorded training again."""
    lines = ["#!/bin/sh", "# the training run recorded at push (edgefleet model reproduce)"]
    if run.get("dir"):
        lines.append(f"# its run directory then: {run['dir']}")
    return "\n".join([*lines, training_command(run["args"])]) + "\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- exporting the weights again -----------------------------------------------------------


def check_weights(weights: Path, doc: dict[str, Any]) -> str:
    """``weights``' sha256, refused unless it is the digest recorded at push."""
    recorded = (doc.get("weights") or {}).get("sha256")
    if not recorded:
        raise ConfigError("the lineage records no weights digest (pushed as ONNX without "
                          "--weights): nothing to check a re-export against")  # fmt: skip
    if not weights.is_file():
        raise ConfigError(f"weights file {weights} does not exist")
    digest = sha256_file(weights)
    if digest != recorded:
        raise ConfigError(
            f"{weights.name} has sha256 {digest[:12]}, not the recorded {recorded[:12]}: "
            "not the weights this version was exported from"
        )
    return digest


def export_arguments(doc: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The recorded export arguments (format onnx when none were recorded), then ``overrides``."""
    args = {"format": "onnx", **(doc.get("export") or {}), **overrides}
    if args["format"] != "onnx":
        raise ConfigError(f"cannot reproduce a {args['format']!r} export: only onnx")
    return args


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as YAML scalars (``opset=12``, ``dynamic=true``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad export argument {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def export_onnx(weights: Path, out_dir: Path, args: dict[str, Any]) -> Path:
    """Export a copy of ``weights`` under ``out_dir`` with ``args`` (imgsz defaults to the
    one the checkpoint was trained with, as ``model push`` does)."""
    with contextlib.redirect_stdout(sys.stderr):  # Ultralytics logs to stdout
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ConfigError("re-exporting needs the export extra: "
                              "pip install 'edgefleet[export]'") from e  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        local = out_dir / weights.name
        shutil.copyfile(weights, local)
        try:
            model = YOLO(str(local))
            imgsz = args.get("imgsz") or model.overrides.get("imgsz") or 640
            exported = model.export(**{**args, "imgsz": imgsz})
        except Exception as e:  # ultralytics raises anything from torch to its own errors
            raise ArtifactError(f"cannot export {weights.name}: {e}".splitlines()[0]) from e
    return Path(exported)


# --- comparing ---------------------------------------------------------------------------


def compare(pushed: Path, fresh: Path, doc: dict[str, Any]) -> Check:
    """``fresh`` against the ``pushed`` ONNX, and the tool versions recorded against now."""
    a, b = onnx_compare.load(pushed), onnx_compare.load(fresh)
    recorded = doc.get("versions") or {}
    now = tool_versions()
    tools = {k: [recorded.get(k), now.get(k)] for k in sorted(set(recorded) | set(now))
             if recorded.get(k) != now.get(k)}  # fmt: skip
    canonical = onnx_compare.canonical_digest
    return Check(sha256_file(pushed), sha256_file(fresh), canonical(a), canonical(b),
                 onnx_compare.differences(a, b), tools)  # fmt: skip


def report_lines(check: Check) -> list[str]:
    if check.verdict == IDENTICAL:
        out = [f"reproduced: identical bytes (sha256 {check.fresh_sha256[:12]})"]
    elif check.verdict == EQUIVALENT:
        out = [f"reproduced: same model, canonical sha256 {check.fresh_canonical[:12]} "
               f"(raw {check.pushed_sha256[:12]} -> {check.fresh_sha256[:12]}: volatile "
               "metadata only)"]  # fmt: skip
    else:
        out = [f"NOT reproduced: canonical sha256 {check.pushed_canonical[:12]} (pushed) -> "
               f"{check.fresh_canonical[:12]} (re-export); what differs:"]  # fmt: skip
    out += [f"  {line}" for line in check.differences]
    out += [f"  tool {k}: {a or '-'} (recorded) -> {b or '-'} (here)"
            for k, (a, b) in check.tools.items()]  # fmt: skip
    return out
