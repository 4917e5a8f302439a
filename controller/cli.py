"""``edgefleet controller serve``. Only the standard library is imported here.

Every flag defaults to None ("not given"), so that ``EDGEFLEET_*`` and the settings file
can set it; controller/settings.py's ServeConfig holds the defaults (docs/SETTINGS.md).
"""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    ctl = sub.add_parser("controller", help="the central controller service")
    ctl_sub = ctl.add_subparsers(dest="controller_command", metavar="ACTION", required=True)
    serve = ctl_sub.add_parser("serve", help="run the controller (REST, TUF, MQTT ingest)")
    serve.add_argument(
        "--config", default=None, metavar="FILE",
        help="YAML settings file; flags override $EDGEFLEET_* override it (docs/SETTINGS.md)",
    )  # fmt: skip
    serve.add_argument("--data", default=None, help="data folder (SQLite, artifacts, TUF)")
    serve.add_argument("--mqtt", default=None, help="broker URL (default mqtt://127.0.0.1:1883)")
    serve.add_argument("--listen", default=None, help="HOST:PORT (default 127.0.0.1:8600)")
    serve.add_argument(
        "--replica", default=None, metavar="NAME",
        help="connect to an mqtts:// broker as replica NAME (DATA/pki/controller-NAME.pem, "
        "from `edgefleet pki replica`); each replica needs its own",
    )  # fmt: skip
    serve.add_argument("--database-url", default=None, help="SQLAlchemy URL (default SQLite)")
    serve.add_argument(
        "--auth", action="store_true", help="API tokens required (the default; kept for scripts)"
    )
    serve.add_argument(
        "--insecure-dev",
        action="store_true",
        help="no API tokens: anyone who reaches the port is admin; loopback only (demo, tests)",
    )
    serve.add_argument(
        "--public-mirror",
        action="store_true",
        help="serve the TUF image repository (/tuf/image: metadata and models) without "
        "credentials, like a public mirror; director metadata still needs the device's own",
    )
    serve.add_argument(
        "--max-downloads", type=int, default=None,
        help="artifact downloads sent at once; more get 503 + Retry-After (default 256)",
    )  # fmt: skip
    serve.add_argument(
        "--offload-prefix", default=None,
        help="let a reverse proxy send /tuf files: X-Accel-Redirect under this internal "
        "prefix (deploy/nginx/)",
    )  # fmt: skip
    serve.add_argument(
        "--artifact-store", default=None, metavar="URL",
        help="where artifacts live: s3://BUCKET/PREFIX[?endpoint=URL&presign=SECONDS] "
        "(credentials from AWS_* env), file:///PATH; default DATA/artifacts",
    )  # fmt: skip
    serve.add_argument(
        "--tuf-store", default=None, choices=("folder", "database"),
        help="where TUF metadata lives and what serialises signing: files under DATA/tuf "
        "(default) or the database, so replicas on one database need no shared folder",
    )  # fmt: skip
    serve.add_argument(
        "--telemetry-max-age-days", type=float, default=None,
        help="raw telemetry windows kept this long, then summed per device and hour "
        "(default 7)",
    )  # fmt: skip
    serve.set_defaults(handler="edgefleet.controller.serve:run_from_args")
