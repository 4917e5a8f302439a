"""Handlers of the data-loop commands: ``model show|diff``, ``alerts list``,
``samples list|export``, and the model card half of ``model push --validation``. httpx
against $EDGEFLEET_URL."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgefleet.controller.cli_args import parse_target
from edgefleet.controller.cli_http import check_response, controller_client, request
from edgefleet.controller.cli_output import pipe_safe, print_json, print_table
from edgefleet.controller.gate_cmds import policy_of, show_lines
from edgefleet.shared.errors import ConfigError


def push_card(name: str, version: str, onnx_path: Path, folder: Path) -> dict[str, Any]:
    """Run the model over ``folder`` (the agent's Detector) and store the card."""
    from edgefleet.controller.cards import build_card

    print(f"validating {name}:{version} on {folder} ...", file=sys.stderr)
    card = build_card(onnx_path, folder, name, version)
    body = card.model_dump(mode="json", by_alias=True)
    return request("PUT", f"/v1/models/{name}/versions/{version}/card", json=body)  # type: ignore[no-any-return]


def card_lines(card: dict[str, Any]) -> list[str]:
    m = card.get("map50")
    lines = [
        f"model card {card['model']}:{card['version']} (created {card['created_at']})",
        f"  validation images   {card['images']} ({card['labelled_images']} labelled)",
        f"  mAP50               {'-' if m is None else f'{m:.3f}'}",
        f"  detections          {card['detections']} above conf {card['conf']}"
        f" ({card['detections_per_frame']:.2f} per frame)",
        "  confidence histogram (all classes):",
        *_bars(card["confidence_edges"], card["confidence_counts"]),
    ]
    for cls, counts in card["per_class_confidence"].items():
        ap = card["ap50_per_class"].get(cls)
        extra = f", AP50 {ap:.3f}" if ap is not None else ""
        lines.append(f"  class {cls}: {sum(counts)} detections{extra}")
    return lines


def _bars(edges: list[float], counts: list[int], width: int = 40) -> list[str]:
    top = max(counts) or 1
    return [
        f"    {edges[i]:.2f}-{edges[i + 1]:.2f} {'#' * round(width * c / top):<{width}} {c}"
        for i, c in enumerate(counts)
        if c
    ]


def _optional(path: str) -> dict[str, Any] | None:
    """GET ``path``; None when the controller answers 404 (no card, no lineage)."""
    with controller_client() as client:
        answer = client.get(path)
    if answer.status_code == 404:
        return None
    return check_response(answer)  # type: ignore[no-any-return]


@pipe_safe
def model_show(args: argparse.Namespace) -> int:
    """A version's lineage and model card; either may be missing, not the version."""
    from edgefleet.controller.lineage import lines

    name, version = parse_target(args.target)
    row = _version(name, version)
    lineage = _optional(f"/v1/models/{name}/versions/{version}/lineage")
    card = _optional(f"/v1/models/{name}/versions/{version}/card")
    if args.json:
        print_json({"version": row, "lineage": lineage and lineage["lineage"], "card": card,
                    "policy": policy_of(name)})  # fmt: skip
        return 0
    print(f"{name}:{version} release {row['release']} sha256 {row['sha256'][:12]}"
          f" ({row['length']} bytes, pushed {row['created_at']})"
          f" stage {row.get('stage') or 'candidate'}")  # fmt: skip
    if lineage is None:
        print("  lineage             - (pushed without it)")
    else:
        print("\n".join(lines(lineage["lineage"])))
    print("\n".join(card_lines(card)) if card else "model card: - (push with --validation DIR)")
    print("\n".join(show_lines(name, row)))
    return 0


def _version(name: str, version: str) -> dict[str, Any]:
    answer = request("GET", f"/v1/models/{name}/versions")
    for row in answer["data"]:
        if row["version"] == version:
            return row  # type: ignore[no-any-return]
    raise ConfigError(f"model {name!r} has no version {version!r}")


@pipe_safe
def model_diff(args: argparse.Namespace) -> int:
    """What changed between two versions' lineage: metrics, arguments, dataset files."""
    from edgefleet.controller.lineage import diff, diff_lines

    docs = []
    for target in (args.a, args.b):
        name, version = parse_target(target)
        docs.append(request("GET", f"/v1/models/{name}/versions/{version}/lineage")["lineage"])
    d = diff(docs[0], docs[1])
    if args.json:
        print_json(d)
    else:
        print(f"{args.a} -> {args.b}")
        print("\n".join(diff_lines(d)))
    return 0


@pipe_safe
def alerts_list(args: argparse.Namespace) -> int:
    params = {"state": args.state} if args.state else {}
    answer = request("GET", "/v1/alerts", params=params)
    if args.json:
        print_json(answer["data"])
        return 0
    rows = [
        [str(a["id"]), a["state"], a["scope"], f"{a['model']}:{a['version']}",
         f"{a['metric']} vs {a.get('baseline') or 'card'}", f"{a['value']:.3f}",
         f"{a['threshold']:.3f}", a["fired_at"],
         f"{a['resolved_at']} ({a['reason']})" if a.get("reason") else a["resolved_at"] or "-"]
        for a in answer["data"]
    ]  # fmt: skip
    headers = ["ID", "STATE", "SCOPE", "MODEL", "METRIC", "VALUE", "FIRE AT", "FIRED", "RESOLVED"]
    print_table(headers, rows)
    return 0


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # seconds


def parse_when(text: str, now: datetime, flag: str) -> datetime:
    """ISO 8601 (UTC when it has no offset), or a duration ago: ``90s``, ``30m``, ``2h``, ``1d``."""
    text = text.strip()
    unit = DURATION_UNITS.get(text[-1:].lower())
    if unit is not None and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * unit)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: expected ISO 8601 or a duration like 30m, 2h, 1d"
        ) from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def sample_params(args: argparse.Namespace, *, export: bool) -> dict[str, Any]:
    """The query of ``GET /v1/samples`` for the filter flags (``_sample_filters``)."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.device:
        params["device_id"] = args.device
    labels = list(args.label)
    if args.site:
        labels.append(f"site={args.site}")
    for item in labels:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE")
    if labels:
        params["label"] = labels
    if args.version:
        model, sep, version = args.version.rpartition(":")
        if not version or (sep and not model):
            raise ConfigError(f"--version {args.version!r}: expected VERSION or MODEL:VERSION")
        params["version"] = version
        if model:
            params["model"] = model
    now = datetime.now(timezone.utc)
    for flag in ("since", "until"):
        if getattr(args, flag):
            params[flag] = parse_when(getattr(args, flag), now, f"--{flag}").isoformat()
    if export and not args.include_rejected:
        params["rejected"] = "exclude"
    return params


@pipe_safe
def samples_list(args: argparse.Namespace) -> int:
    params = sample_params(args, export=False)
    answer = request("GET", "/v1/samples", params=params)
    if args.json:
        print_json(answer["data"])
        return 0
    rows = [
        [str(s["id"]), s["device_id"], f"{s['model']}:{s['version']}", s["reason"],
         str(len(s["detections"])), str(s["bytes"]), s["captured_at"]]
        for s in answer["data"]
    ]  # fmt: skip
    print_table(["ID", "DEVICE", "MODEL", "REASON", "DETS", "BYTES", "CAPTURED"], rows)
    print(f"{answer['count']} sample(s)", file=sys.stderr)
    return 0


@pipe_safe
def samples_export(args: argparse.Namespace) -> int:
    from edgefleet.controller.samples import write_yolo_dataset

    if args.format != "yolo":
        raise ConfigError(f"unknown export format {args.format!r} (only yolo)")
    params = sample_params(args, export=True)
    answer = request("GET", "/v1/samples", params=params)
    images = {s["id"]: _download(s["id"]) for s in answer["data"]}
    names = _model_names(answer["data"])
    data_yaml = write_yolo_dataset(
        Path(args.out), answer["data"], images, val_share=args.val, names=names
    )
    print(f"exported {len(images)} sample(s) to {data_yaml.parent} ({data_yaml.name})")
    return 0


def _download(sample_id: int) -> bytes:
    with controller_client() as client:
        r = client.get(f"/v1/samples/{sample_id}/image")
        if not r.is_success:
            check_response(r)
        return r.content


def _model_names(samples: list[dict[str, Any]]) -> dict[int, str]:
    """Class names of the samples' model from its card, so ids line up with the model's."""
    for s in samples:
        if s.get("model") and s.get("version"):
            with controller_client() as client:
                r = client.get(f"/v1/models/{s['model']}/versions/{s['version']}/card")
            if r.is_success:
                return {int(k): str(v) for k, v in r.json().get("names", {}).items()}
    return {}
