"""``edgefleet controller serve`` and ``edgefleet demo``.

Every serve flag defaults to None ("not given"), so that ``EDGEFLEET_*`` and the settings
file can set it; controller/settings.py's ServeConfig holds the defaults (docs/SETTINGS.md).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.base import group

app = group("the central controller service")


class TufStore(str, Enum):
    folder = "folder"
    database = "database"


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="FILE",
        help="YAML settings file; flags override $EDGEFLEET_* override it (docs/SETTINGS.md)",
    )] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="data folder (SQLite, artifacts, TUF)")] = None,
    mqtt: Annotated[str | None, typer.Option(
        "--mqtt", help="broker URL (default mqtt://127.0.0.1:1883)")] = None,
    listen: Annotated[str | None, typer.Option(
        "--listen", help="HOST:PORT (default 127.0.0.1:8600)")] = None,
    replica: Annotated[str | None, typer.Option(
        "--replica", metavar="NAME",
        help="connect to an mqtts:// broker as replica NAME (DATA/pki/controller-NAME.pem, "
        "from `edgefleet pki replica`); each replica needs its own",
    )] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="SQLAlchemy URL (default SQLite)")] = None,
    auth: Annotated[bool, typer.Option(
        "--auth", help="API tokens required (the default; kept for scripts)")] = False,
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev",
        help="no API tokens: anyone who reaches the port is admin; loopback only (demo, tests)",
    )] = False,
    public_mirror: Annotated[bool, typer.Option(
        "--public-mirror",
        help="serve the TUF image repository (/tuf/image: metadata and models) without "
        "credentials, like a public mirror; director metadata still needs the device's own",
    )] = False,
    max_downloads: Annotated[int | None, typer.Option(
        "--max-downloads",
        help="artifact downloads sent at once; more get 503 + Retry-After (default 256)",
    )] = None,
    offload_prefix: Annotated[str | None, typer.Option(
        "--offload-prefix",
        help="let a reverse proxy send /tuf files: X-Accel-Redirect under this internal "
        "prefix (deploy/nginx/)",
    )] = None,
    artifact_store: Annotated[str | None, typer.Option(
        "--artifact-store", metavar="URL",
        help="where artifacts live: s3://BUCKET/PREFIX[?endpoint=URL&presign=SECONDS] "
        "(credentials from AWS_* env), file:///PATH; default DATA/artifacts",
    )] = None,
    tuf_store: Annotated[TufStore | None, typer.Option(
        "--tuf-store",
        help="where TUF metadata lives and what serialises signing: files under DATA/tuf "
        "(default) or the database, so replicas on one database need no shared folder",
    )] = None,
    telemetry_max_age_days: Annotated[float | None, typer.Option(
        "--telemetry-max-age-days",
        help="raw telemetry windows kept this long, then summed per device and hour "
        "(default 7)",
    )] = None,
) -> None:  # fmt: skip
    """Run the controller (REST, TUF, MQTT ingest)."""
    from edgefleet.controller.serve import run

    flags = {
        "config": config, "data": data, "mqtt": mqtt, "listen": listen, "replica": replica,
        "database_url": database_url, "insecure_dev": insecure_dev,
        "public_mirror": public_mirror, "max_downloads": max_downloads,
        "offload_prefix": offload_prefix, "artifact_store": artifact_store,
        "tuf_store": tuf_store.value if tuf_store else None,
        "telemetry_max_age_days": telemetry_max_age_days,
    }  # fmt: skip
    code = run(flags)
    if code:
        raise typer.Exit(code)


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="leave everything running")] = False,
    agents: Annotated[int, typer.Option("--agents", help="agents to start")] = 3,
    work_dir: Annotated[Path | None, typer.Option(
        "--dir", help="working folder (default: a temp folder)")] = None,
    plain: Annotated[bool, typer.Option(
        "--plain",
        help="plain loopback MQTT instead of mTLS (by default: device CA, enrolled agents, "
        "a broker requiring client certificates)",
    )] = False,
    retrain: Annotated[bool, typer.Option(
        "--retrain",
        help="after the drift scene, fine-tune on the returned frames (needs the export extra)",
    )] = False,
) -> None:  # fmt: skip
    """Run the whole system on this machine and roll out v1, v2."""
    from edgefleet.demo_run import run_demo

    run_demo(agents=agents, keep=keep, work_dir=work_dir, plain=plain, retrain=retrain)
