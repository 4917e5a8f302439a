"""``edgefleet sim``: simulated devices (edgefleet/sim.py, edgefleet/simproto.py)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Mode(str, Enum):
    agent = "agent"
    proto = "proto"


def sim(
    mode: Annotated[Mode, typer.Option(
        "--mode", help="agent: the whole agent stack per device (small fleets); proto: "
        "MQTT + TUF + downloads only (edgefleet/simproto.py)")] = Mode.agent,
    procs: Annotated[int, typer.Option(
        "--procs", help="processes to split --mode proto over")] = 1,
    first: Annotated[int, typer.Option("--first", help="index of the first device id")] = 0,
    workers: Annotated[int, typer.Option(
        "--workers", help="refresh/install threads per process (--mode proto)")] = 8,
    phase_delay: Annotated[float, typer.Option(
        "--phase-delay", help="seconds each install phase takes (--mode proto)")] = 0.0,
    stats: Annotated[str | None, typer.Option(
        "--stats", help="write a JSON summary here at exit (--mode proto; .N per process)",
    )] = None,
    devices: Annotated[int, typer.Option("--devices", help="simulated devices")] = 10,
    controller: Annotated[str, typer.Option(
        "--controller", help="controller URL")] = "http://127.0.0.1:8600",
    mqtt: Annotated[str, typer.Option("--mqtt", help="broker URL")] = "mqtt://127.0.0.1:1883",
    data: Annotated[str, typer.Option(
        "--data", help="folder for the devices' data")] = "sim-data",
    source: Annotated[str, typer.Option(
        "--source", help="folder of frames")] = "models/samples",
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY=V1,V2",
        help="label values dealt round-robin; repeat for several labels")] = None,
    prefix: Annotated[str, typer.Option(
        "--prefix", help="device ids are PREFIX-0000, ...")] = "sim",
    fps: Annotated[float, typer.Option("--fps", help="frames per second per device")] = 2.0,
    window: Annotated[float, typer.Option(
        "--window", help="seconds per telemetry window")] = 5.0,
    poll: Annotated[float, typer.Option(
        "--poll", help="seconds between director polls")] = 10.0,
    token: Annotated[str | None, typer.Option(
        "--token",
        help="operator API token (default $EDGEFLEET_TOKEN) for a controller with auth on: "
        "--mode agent enrolls each device not enrolled yet, as `agent enroll` does; "
        "--mode proto fetches /tuf with it")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="warnings only")] = False,
) -> None:  # fmt: skip
    """Simulated devices: N real agent stacks (--mode agent) or thousands of protocol-level
    devices over several processes (--mode proto)."""
    from edgefleet.sim import SimOptions, run

    opts = SimOptions(
        mode=mode.value, procs=procs, first=first, workers=workers, phase_delay=phase_delay,
        stats=stats, devices=devices, controller=controller, mqtt=mqtt, data=data,
        source=source, label=tuple(label or ()), prefix=prefix, fps=fps, window=window,
        poll=poll, token=token, quiet=quiet,
    )  # fmt: skip
    code = run(opts)
    if code:
        raise typer.Exit(code)
