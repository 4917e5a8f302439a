"""The validation gate's commands: ``dataset add|list``, ``model policy``, and the gate's
part of ``model push`` (its verdict, exit 3 when rejected), ``model show`` and ``model
list`` (docs/GATE.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, print_json, say, show_list
from edgefleet.shared.errors import ConfigError

dataset_app = group("validation sets the gate judges versions on")
REJECTED_EXIT = 3  # `model push`: stored, but the validation gate rejected it
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="model name")]


@dataset_app.command("add")
def dataset_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the set's name")],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="images and YOLO labels")],
    as_json: JsonFlag = False,
) -> None:
    """Register DIR's images and YOLO labels as NAME (once)."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.cli.output import byte_progress
    from edgefleet.controller.datasets import pack
    from edgefleet.controller.registry import check_label

    check_label("dataset name", name)
    if not folder.is_dir():
        raise ConfigError(f"dataset folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix="edgefleet-dataset-") as tmp, \
            ControllerClient.from_env() as api:  # fmt: skip
        archive = pack(folder, Path(tmp) / "dataset.tar")
        with byte_progress("uploading", archive.name, archive.stat().st_size) as bar:
            row = api.add_dataset(name, archive, bar.advance)
    if as_json:
        print_json(row)
        return
    print(f"dataset {row['name']}: {row['images']} images ({row['labelled']} labelled), "
          f"digest {row['digest'][:12]}")  # fmt: skip


DATASET_COLUMNS = (
    Column("NAME", lambda d: d["name"]),
    Column("DIGEST", lambda d: d["digest"][:12]),
    Column("IMAGES", lambda d: str(d["images"])),
    Column("LABELLED", lambda d: str(d["labelled"])),
    Column("BYTES", lambda d: str(d["bytes"])),
    Column("BY", lambda d: d["created_by"]),
    Column("ADDED", lambda d: d["created_at"]),
)


@dataset_app.command("list")
def dataset_list(as_json: JsonFlag = False) -> None:
    """Registered validation sets."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.datasets(), DATASET_COLUMNS, as_json)


def policy(
    name: ModelName,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="the registered validation set versions are judged on")] = None,
    min_map50: Annotated[float | None, typer.Option(
        "--min-map50", metavar="X", help="lowest mAP50 (0-1)")] = None,
    max_regression: Annotated[float | None, typer.Option(
        "--max-regression", metavar="X",
        help="most mAP50 below the production version's (0-1)")] = None,
    max_class_regression: Annotated[float | None, typer.Option(
        "--max-class-regression", metavar="X",
        help="most AP50 below production's, per class (0-1)")] = None,
    latency_budget_ms: Annotated[float | None, typer.Option(
        "--latency-budget-ms", metavar="MS",
        help="median latency on the controller CPU (reference)")] = None,
    min_images: Annotated[int | None, typer.Option(
        "--min-images", metavar="N",
        help="labelled images the set must have (default 50)")] = None,
    min_class_instances: Annotated[int | None, typer.Option(
        "--min-class-instances", metavar="N",
        help="objects a class needs for its own check (default 20)")] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Show or set a model's validation gate (setting it needs an admin); a flag left out
    keeps its value."""
    from edgefleet.cli.client import ControllerClient

    given = {"dataset": dataset, "min_map50": min_map50, "max_regression": max_regression,
             "max_class_regression": max_class_regression,
             "latency_budget_ms": latency_budget_ms, "min_images": min_images,
             "min_class_instances": min_class_instances}  # fmt: skip
    changes = {k: v for k, v in given.items() if v is not None}
    with ControllerClient.from_env() as api:
        current = api.policy(name)
        if changes:
            body = {k: (current or {}).get(k) for k in given if k in (current or {})} | changes
            if not body.get("dataset"):
                raise ConfigError("a new policy needs --dataset NAME (edgefleet dataset add)")
            current = api.set_policy(name, body)
    if current is None:
        raise ConfigError(f"model {name!r} has no validation policy")
    if as_json:
        print_json(current)
    else:
        print("\n".join(policy_lines(current)))


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


def push_verdict(version: dict[str, Any]) -> None:
    """Print the gate's verdict after ``model push``; exit 3 when it rejected the version."""
    if version.get("gate_status") is None:
        return
    print("\n".join(gate_lines(version)))
    if version["gate_status"] == "rejected":
        label = f"{version['name']}:{version['version']}"
        say(f"edgefleet: {label} is stored as rejected: rollouts refuse it unless an admin "
            "passes --override-gate")  # fmt: skip
        raise typer.Exit(REJECTED_EXIT)


def show_lines(policy: dict[str, Any] | None, version: dict[str, Any]) -> list[str]:
    """``model show``'s gate part: the model's policy, then the version's verdict."""
    lines = policy_lines(policy) if policy else ["validation policy: - (edgefleet model policy)"]
    return [*lines, *gate_lines(version)]
