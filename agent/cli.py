"""Agent-side commands: ``edgefleet infer`` and ``edgefleet agent run``.

Only the standard library is imported here; handlers live in their own modules.
"""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    infer = sub.add_parser("infer", help="run a model on images and print detections")
    infer.add_argument("--model", required=True, help="exported ONNX model")
    infer.add_argument("images", nargs="+", metavar="IMAGE")
    infer.add_argument("--json", action="store_true", help="one JSON line per image")
    infer.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    infer.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    infer.set_defaults(handler="edgefleet.agent.infer_cmd:run")

    agent = sub.add_parser("agent", help="the on-device agent")
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    run = agent_sub.add_parser("run", help="run the agent daemon")
    run.add_argument("--config", required=True, help="agent YAML config file")
    run.set_defaults(handler="edgefleet.agent.daemon:run_from_args")
    enroll = agent_sub.add_parser("enroll", help="get this device's certificate and trust roots")
    enroll.add_argument("--config", required=True, help="agent YAML config file")
    enroll.add_argument("--token", required=True, help="from `edgefleet device token ID`")
    enroll.add_argument("--ca", default=None, help="CA bundle for an https controller URL")
    enroll.set_defaults(handler="edgefleet.agent.enroll:run_from_args")
