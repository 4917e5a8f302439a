"""``edgefleet demo``: a private broker, a controller and three agents on this machine."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the whole system on this machine and roll out v1, v2")
    demo.add_argument("--keep", action="store_true", help="leave everything running")
    demo.add_argument("--agents", type=int, default=3)
    demo.add_argument("--dir", default=None, help="working folder (default: a temp folder)")
    demo.add_argument(
        "--plain",
        action="store_true",
        help="plain loopback MQTT instead of mTLS (by default: device CA, enrolled agents, "
        "a broker requiring client certificates)",
    )
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="after the drift scene, fine-tune on the returned frames (needs the export extra)",
    )
    demo.set_defaults(handler="edgefleet.demo_run:run_from_args")
