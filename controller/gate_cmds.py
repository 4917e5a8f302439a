"""Handlers of the validation gate's commands: ``dataset add|list``, ``model policy``, and
the gate's part of ``model push``, ``model show`` and ``rollout create --override-gate``.

Each argparse handler only unpacks its arguments into a function with typed parameters
(``dataset_add(name, folder, as_json)``...), which does the work against $EDGEFLEET_URL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgefleet.controller.cli_http import actor_header, check_response, controller_client, request
from edgefleet.controller.cli_output import pipe_safe, print_json, print_table
from edgefleet.shared.errors import ConfigError

REJECTED_EXIT = 3  # `model push`: stored, but the validation gate rejected it
POLICY_FLAGS = ("min_map50", "max_regression", "max_class_regression", "latency_budget_ms",
                "dataset", "min_images", "min_class_instances")  # fmt: skip


# --- dataset add | list -------------------------------------------------------------------


@pipe_safe
def dataset_add_cmd(args: argparse.Namespace) -> int:
    return dataset_add(args.name, Path(args.dir), as_json=args.json)


def dataset_add(name: str, folder: Path, *, as_json: bool = False) -> int:
    """Pack ``folder``'s images and labels, upload them, print what was registered."""
    from edgefleet.controller.datasets import pack
    from edgefleet.controller.registry import check_label

    check_label("dataset name", name)
    if not folder.is_dir():
        raise ConfigError(f"dataset folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix="edgefleet-dataset-") as tmp:
        archive = pack(folder, Path(tmp) / "dataset.tar")
        print(f"uploading {archive.stat().st_size} bytes ...", file=sys.stderr)
        with archive.open("rb") as f:
            files = {"file": ("dataset.tar", f, "application/x-tar")}
            row = request("POST", f"/v1/datasets/{name}", files=files, headers=actor_header())
    if as_json:
        print_json(row)
    else:
        print(f"dataset {row['name']}: {row['images']} images ({row['labelled']} labelled), "
              f"digest {row['digest'][:12]}")  # fmt: skip
    return 0


@pipe_safe
def dataset_list_cmd(args: argparse.Namespace) -> int:
    return dataset_list(as_json=args.json)


def dataset_list(*, as_json: bool = False) -> int:
    answer = request("GET", "/v1/datasets")
    if as_json:
        print_json(answer["data"])
        return 0
    rows = [[d["name"], d["digest"][:12], str(d["images"]), str(d["labelled"]), str(d["bytes"]),
             d["created_by"], d["created_at"]] for d in answer["data"]]  # fmt: skip
    print_table(["NAME", "DIGEST", "IMAGES", "LABELLED", "BYTES", "BY", "ADDED"], rows)
    return 0


# --- model policy ---------------------------------------------------------------------


@pipe_safe
def model_policy_cmd(args: argparse.Namespace) -> int:
    given = {k: getattr(args, k) for k in POLICY_FLAGS if getattr(args, k) is not None}
    return model_policy(args.name, given, as_json=args.json)


def model_policy(name: str, changes: dict[str, Any], *, as_json: bool = False) -> int:
    """Print the model's policy; with ``changes``, set them first (on top of the policy
    it has: a flag left out keeps its value)."""
    if changes:
        current = policy_of(name) or {}
        body = {k: current.get(k) for k in POLICY_FLAGS if k in current} | changes
        if not body.get("dataset"):
            raise ConfigError("a new policy needs --dataset NAME (edgefleet dataset add)")
        policy = request("PUT", f"/v1/models/{name}/policy", json=body, headers=actor_header())
    else:
        policy = policy_of(name)
        if policy is None:
            raise ConfigError(f"model {name!r} has no validation policy")
    if as_json:
        print_json(policy)
    else:
        print("\n".join(policy_lines(policy)))
    return 0


def policy_of(name: str) -> dict[str, Any] | None:
    with controller_client() as client:
        answer = client.get(f"/v1/models/{name}/policy")
    return None if answer.status_code == 404 else check_response(answer)


def _limit(value: float | None, fmt: str) -> str:
    return "- (not checked)" if value is None else fmt.format(value)


def policy_lines(p: dict[str, Any]) -> list[str]:
    return [
        f"validation policy of {p['name']} (set by {p['updated_by']}, {p['updated_at']})",
        f"  dataset             {p['dataset']} (at least {p['min_images']} labelled images)",
        f"  min mAP50           {_limit(p['min_map50'], '{:.3f}')}",
        f"  max regression      {_limit(p['max_regression'], '{:.3f}')} mAP50 below production",
        f"  max class regr.     {_limit(p['max_class_regression'], '{:.3f}')} AP50 below "
        f"production (classes with {p['min_class_instances']}+ objects)",
        f"  latency budget      {_limit(p['latency_budget_ms'], '{:g} ms')} (median, reference "
        "profile)",
    ]


# --- the verdict: model push, model show ----------------------------------------------


def gate_lines(version: dict[str, Any]) -> list[str]:
    """The gate's verdict on a version (``gate_status`` and ``gate`` of its public shape)."""
    status, gate = version.get("gate_status"), version.get("gate") or {}
    if status is None:
        return ["validation gate: - (the model had no policy at push)"]
    head = f"validation gate: {status.upper()} on dataset {gate.get('dataset')}"
    prod = gate.get("production")
    lines = [head + (f" against production {prod}" if prod else " (no production version)")]
    cand = gate.get("candidate") or {}
    if cand:
        lines.append(f"  mAP50 {_num(cand.get('map50'))} on {cand.get('labelled')} labelled "
                     f"images; median latency {cand.get('latency_p50_ms')} ms on "
                     f"{cand.get('profile')}")  # fmt: skip
    base = gate.get("baseline") or {}
    if base:
        lines.append(f"  production mAP50 {_num(base.get('map50'))}")
    if gate.get("regression_interval"):
        low, high = gate["regression_interval"]
        lines.append(f"  mAP50 drop vs production: 90 % bootstrap interval [{low:.3f}, {high:.3f}]")
    lines.extend(f"  REJECTED: {r}" for r in gate.get("reasons", []))
    if gate.get("not_judged"):
        lines.append(f"  not judged per class (too few objects): {', '.join(gate['not_judged'])}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def push_verdict(version: dict[str, Any]) -> int:
    """Print the gate's verdict after ``model push``; the exit code says it (3: rejected)."""
    if version.get("gate_status") is None:
        return 0
    print("\n".join(gate_lines(version)))
    if version["gate_status"] == "rejected":
        label = f"{version['name']}:{version['version']}"
        print(f"edgefleet: {label} is stored as rejected: rollouts refuse it unless an admin "
              "passes --override-gate", file=sys.stderr)  # fmt: skip
        return REJECTED_EXIT
    return 0


def show_lines(name: str, version: dict[str, Any]) -> list[str]:
    """``model show``'s gate part: the model's policy, then the version's verdict."""
    policy = policy_of(name)
    lines = policy_lines(policy) if policy else ["validation policy: - (edgefleet model policy)"]
    return [*lines, *gate_lines(version)]


def override_params(args: argparse.Namespace) -> dict[str, str]:
    """``rollout create --override-gate``: the query that asks the controller to roll out a
    rejected version (an admin token only; audited)."""
    return {"override_gate": "true"} if getattr(args, "override_gate", False) else {}
