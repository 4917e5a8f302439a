"""The data loop: ``edgefleet alerts list`` and ``edgefleet samples list|export``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, say, show_list
from edgefleet.shared.errors import ConfigError

if TYPE_CHECKING:
    from edgefleet.cli.client import ControllerClient

alerts_app = group("drift alerts")
samples_app = group("frames devices sent back for annotation")

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # seconds


class AlertState(str, Enum):
    firing = "firing"
    resolved = "resolved"


def _resolved(a: dict[str, Any]) -> str:
    if a.get("reason"):
        return f"{a['resolved_at']} ({a['reason']})"
    return str(a["resolved_at"] or "-")


ALERT_COLUMNS = (
    Column("ID", lambda a: str(a["id"])),
    Column("STATE", lambda a: a["state"]),
    Column("SCOPE", lambda a: a["scope"]),
    Column("MODEL", lambda a: f"{a['model']}:{a['version']}"),
    Column("METRIC", lambda a: f"{a['metric']} vs {a.get('baseline') or 'card'}"),
    Column("VALUE", lambda a: f"{a['value']:.3f}"),
    Column("FIRE AT", lambda a: f"{a['threshold']:.3f}"),
    Column("FIRED", lambda a: a["fired_at"]),
    Column("RESOLVED", _resolved),
)


@alerts_app.command("list")
def alerts_list(
    state: Annotated[AlertState | None, typer.Option("--state", help="only these")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Firing and resolved alerts."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.alerts(state.value if state else None), ALERT_COLUMNS, as_json)


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


@dataclass(frozen=True)
class SampleFilters:
    """Scope, version and time filters of ``samples list`` and ``samples export``."""

    device: str | None = None
    site: str | None = None
    label: list[str] = field(default_factory=list)
    version: str | None = None
    since: str | None = None
    until: str | None = None


def sample_params(f: SampleFilters, limit: int, *, include_rejected: bool) -> dict[str, Any]:
    """The query of ``GET /v1/samples`` for the filter flags."""
    params: dict[str, Any] = {"limit": limit}
    if f.device:
        params["device_id"] = f.device
    wanted = [*f.label, *([f"site={f.site}"] if f.site else [])]
    for item in wanted:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE")
    if wanted:
        params["label"] = wanted
    if f.version:
        model, sep, version = f.version.rpartition(":")
        if not version or (sep and not model):
            raise ConfigError(f"--version {f.version!r}: expected VERSION or MODEL:VERSION")
        params["version"] = version
        if model:
            params["model"] = model
    now = datetime.now(timezone.utc)
    for flag, value in (("since", f.since), ("until", f.until)):
        if value:
            params[flag] = parse_when(value, now, f"--{flag}").isoformat()
    if not include_rejected:
        params["rejected"] = "exclude"
    return params


Device = Annotated[str | None, typer.Option("--device", help="one device")]
Site = Annotated[str | None, typer.Option("--site", help="devices labelled site=SITE")]
Label = Annotated[
    list[str] | None,
    typer.Option(
        "--label", metavar="KEY=VALUE", help="devices with this label (repeatable: all must match)"
    ),
]
Version = Annotated[
    str | None,
    typer.Option("--version", metavar="[MODEL:]VERSION", help="samples of this model version"),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="TIME", help="captured at or after: ISO 8601, or 30m, 2h, 1d ago"
    ),
]
Until = Annotated[
    str | None,
    typer.Option("--until", metavar="TIME", help="captured before: ISO 8601, or 30m, 2h, 1d ago"),
]

SAMPLE_COLUMNS = (
    Column("ID", lambda s: str(s["id"])),
    Column("DEVICE", lambda s: s["device_id"]),
    Column("MODEL", lambda s: f"{s['model']}:{s['version']}"),
    Column("REASON", lambda s: s["reason"]),
    Column("DETS", lambda s: str(len(s["detections"]))),
    Column("BYTES", lambda s: str(s["bytes"])),
    Column("CAPTURED", lambda s: s["captured_at"]),
)


@samples_app.command("list")
def samples_list(
    device: Device = None, site: Site = None, label: Label = None, version: Version = None,
    since: Since = None, until: Until = None,
    limit: Annotated[int, typer.Option("--limit", help="samples at most")] = 100,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Received samples, newest first."""
    from edgefleet.cli.client import ControllerClient

    filters = SampleFilters(device, site, label or [], version, since, until)
    with ControllerClient.from_env() as api:
        answer = api.samples(sample_params(filters, limit, include_rejected=True))
    show_list(answer["data"], SAMPLE_COLUMNS, as_json)
    if not as_json:
        say(f"{answer['count']} sample(s)")


class ExportFormat(str, Enum):
    yolo = "yolo"


@samples_app.command(
    "export",
    epilog="Samples of rejected canaries (versions whose latest rollout failed, was rolled "
    "back or aborted) are left out unless --include-rejected.",
)
def samples_export(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="dataset folder")],
    export_format: Annotated[ExportFormat, typer.Option(
        "--format", help="dataset layout")] = ExportFormat.yolo,
    device: Device = None, site: Site = None, label: Label = None, version: Version = None,
    since: Since = None, until: Until = None,
    include_rejected: Annotated[bool, typer.Option(
        "--include-rejected", help="also export samples of rejected canaries")] = False,
    limit: Annotated[int, typer.Option("--limit", help="samples at most")] = 10000,
    val: Annotated[float, typer.Option("--val", help="share of images in val/")] = 0.2,
) -> None:  # fmt: skip
    """Write samples as a dataset for annotation/training."""
    from edgefleet.cli.client import ControllerClient
    from edgefleet.cli.output import count_progress
    from edgefleet.controller.samples import write_yolo_dataset

    filters = SampleFilters(device, site, label or [], version, since, until)
    with ControllerClient.from_env() as api:
        query = sample_params(filters, limit, include_rejected=include_rejected)
        rows: list[dict[str, Any]] = api.samples(query)["data"]
        images = {}
        with count_progress("downloading samples", len(rows)) as step:
            for s in rows:
                images[s["id"]] = api.sample_image(s["id"])
                step()
        names = _model_names(api, rows)
    data_yaml = write_yolo_dataset(out, rows, images, val_share=val, names=names)
    print(f"exported {len(images)} sample(s) to {data_yaml.parent} ({data_yaml.name})")


def _model_names(api: ControllerClient, samples: list[dict[str, Any]]) -> dict[int, str]:
    """Class names of the samples' model from its card, so ids line up with the model's."""
    for s in samples:
        if s.get("model") and s.get("version"):
            card = api.card(s["model"], s["version"])
            if card is not None:
                return {int(k): str(v) for k, v in card.get("names", {}).items()}
    return {}
