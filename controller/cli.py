"""``edgefleet controller serve``. Only the standard library is imported here."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    ctl = sub.add_parser("controller", help="the central controller service")
    ctl_sub = ctl.add_subparsers(dest="controller_command", metavar="ACTION", required=True)
    serve = ctl_sub.add_parser("serve", help="run the controller (REST, TUF, MQTT ingest)")
    serve.add_argument("--data", required=True, help="data folder (SQLite, artifacts, TUF)")
    serve.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL")
    serve.add_argument("--listen", default="127.0.0.1:8600", help="HOST:PORT")
    serve.add_argument("--database-url", default=None, help="SQLAlchemy URL (default SQLite)")
    serve.add_argument(
        "--auth", action="store_true", help="write endpoints need an API token (edgefleet token)"
    )
    serve.add_argument(
        "--telemetry-max-age-days", type=float, default=7.0,
        help="raw telemetry windows kept this long, then summed per device and hour",
    )  # fmt: skip
    serve.set_defaults(handler="edgefleet.controller.serve:run_from_args")
