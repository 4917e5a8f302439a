"""``edgefleet bench infer|swap|rollout|idle|ingest|gates|canary|drift|faults``: benchmarks.

Only the standard library is imported here. The measuring code lives in the source
checkout's ``bench/`` folder (it compares against Ultralytics, which never ships on a
device); the handlers load it from there and say so in one line when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench", help="benchmarks: per-frame cost, hot swaps, rollout convergence"
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHICH", required=True)

    infer = bench_sub.add_parser("infer", help="agent per-frame time vs bare run vs Ultralytics")
    infer.add_argument("--model", required=True, type=Path, help="exported ONNX model")
    infer.add_argument("--source", required=True, type=Path, help="folder of images")
    infer.add_argument("--frames", type=int, default=300, help="timed frames per way")
    infer.add_argument("--no-ultralytics", action="store_true", help="skip Ultralytics")
    infer.add_argument("--json", action="store_true", help="one JSON document")
    infer.set_defaults(handler="edgefleet.agent.bench_cli:run_infer")

    swap = bench_sub.add_parser("swap", help="frames dropped and p99 latency during hot swaps")
    swap.add_argument("--models", required=True, type=Path, nargs="+", help="ONNX models")
    swap.add_argument("--source", type=Path, default=Path("models/samples"), help="images")
    swap.add_argument("--swaps", type=int, default=20)
    swap.add_argument(
        "--load", type=float, default=0.0, help="0: saturating source; else fraction of capacity"
    )
    swap.add_argument(
        "--fps", type=float, default=0.0, help="pace at this rate instead (0: use --load)"
    )
    swap.add_argument("--gap-s", type=float, default=1.0, help="steady seconds between swaps")
    swap.add_argument("--settle-s", type=float, default=0.5, help="seconds after a swap")
    swap.add_argument("--plain-load", action="store_true", help="load, warm up as before")
    swap.add_argument("--json", action="store_true", help="one JSON document")
    swap.set_defaults(handler="edgefleet.agent.bench_cli:run_swap")

    rollout = bench_sub.add_parser(
        "rollout", help="time for a fleet to converge on a new version (needs the controller)"
    )
    rollout.add_argument("--devices", type=int, default=20, help="simulated agent stacks")
    rollout.add_argument(
        "--sizes", default=None, metavar="N,N,...",
        help="protocol-level fleets of these sizes instead (bench/bench_fleet.py)",
    )  # fmt: skip
    rollout.add_argument("--procs", type=int, default=2, help="simulator processes (--sizes)")
    rollout.add_argument("--workers", type=int, default=8, help="threads per process (--sizes)")
    rollout.add_argument("--database-url", default=None, help="controller DB (--sizes)")
    rollout.add_argument("--poll-s", type=float, default=30.0, help="director poll interval")
    rollout.add_argument("--fps", type=float, default=2.0, help="frames per second per device")
    rollout.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    rollout.add_argument("--json", action="store_true", help="one JSON document")
    rollout.set_defaults(handler="edgefleet.agent.bench_cli:run_rollout")

    _register_fleet_benches(bench_sub)


def _register_fleet_benches(bench_sub: Any) -> None:
    """The benchmarks that start a controller or simulate a fleet."""
    idle = bench_sub.add_parser(
        "idle", help="requests/s and controller CPU of an idle fleet (starts a controller)"
    )
    idle.add_argument("--devices", type=int, default=1000, help="simulated idle devices")
    idle.add_argument("--speedup", type=float, default=3.0, help="device seconds per wall s")
    idle.add_argument("--duration", type=float, default=30.0, help="wall seconds per phase")
    idle.add_argument("--threads", type=int, default=16, help="client threads polling")
    idle.add_argument("--json", action="store_true", help="one JSON document")
    idle.set_defaults(handler="edgefleet.agent.bench_cli:run_idle")

    ingest = bench_sub.add_parser(
        "ingest", help="a telemetry burst: controller vs a plain subscriber (needs Mosquitto)"
    )
    ingest.add_argument("--windows", type=int, default=20000, help="windows in the burst")
    ingest.add_argument("--devices", type=int, default=1000, help="device ids they come from")
    ingest.add_argument("--register", type=int, default=10000, help="new devices (0: skip)")
    ingest.add_argument("--json", action="store_true", help="one JSON document")
    ingest.set_defaults(handler="edgefleet.agent.bench_cli:run_ingest")

    gates = bench_sub.add_parser(
        "gates", help="canary gates: false-alarm rate, power, time to decision (simulated)"
    )
    gates.add_argument("--seeds", type=int, default=20, help="runs per variant")
    gates.add_argument("--sites", type=int, default=3)
    gates.add_argument("--canaries", type=int, default=1, help="canary devices per site")
    gates.add_argument("--controls", type=int, default=1, help="control devices per site")
    gates.add_argument("--window-s", type=float, default=10.0, help="telemetry window")
    gates.add_argument("--soak-s", type=float, default=600.0, help="stage soak")
    gates.add_argument("--alpha", type=float, default=0.01, help="stage false-alarm rate")
    gates.add_argument(
        "--calibrate", action="store_true", help="false alarms of a canary at the threshold"
    )
    gates.add_argument("--json", action="store_true", help="one JSON document")
    gates.set_defaults(handler="edgefleet.agent.bench_cli:run_gates")

    canary = bench_sub.add_parser(
        "canary", help="canary verdicts: real model variants, real inference, staged rollouts"
    )
    canary.add_argument("--seeds", type=int, default=5, help="rollouts per variant")
    canary.add_argument("--frames", type=int, default=60, help="synthetic frames inferred")
    canary.add_argument("--sites", type=int, default=3)
    canary.add_argument("--devices", type=int, default=4, help="devices per site")
    canary.add_argument("--stages", default="25%,50%", help="rollout stages")
    canary.add_argument("--soak-s", type=float, default=300.0, help="stage soak")
    canary.add_argument("--window-s", type=float, default=10.0, help="telemetry window")
    canary.add_argument("--json", action="store_true", help="one JSON document")
    canary.set_defaults(handler="edgefleet.agent.bench_cli:run_canary")

    drift = bench_sub.add_parser(
        "drift", help="drift alerts: real scene changes at one site each, the real watcher"
    )
    drift.add_argument("--seeds", type=int, default=5, help="fleets per scene")
    drift.add_argument("--frames", type=int, default=60, help="synthetic frames inferred")
    drift.add_argument("--devices", type=int, default=2, help="devices per site")
    drift.add_argument("--json", action="store_true", help="one JSON document")
    drift.set_defaults(handler="edgefleet.agent.bench_cli:run_drift")

    faults = bench_sub.add_parser(
        "faults", help="controller/broker/agent kills and a full disk: a table of outcomes"
    )
    faults.add_argument(
        "--scenarios", default=None, metavar="NAME,NAME,...",
        help="controller-kill, broker-outage, agent-kill:PHASE, disk-full (default: all)",
    )  # fmt: skip
    faults.add_argument("--outage-s", type=float, default=5.0, help="broker outage seconds")
    faults.add_argument("--json", action="store_true", help="one JSON document")
    faults.set_defaults(handler="edgefleet.agent.bench_cli:run_faults")


def _bench_module(name: str) -> ModuleType:
    from edgefleet.shared.errors import ConfigError

    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"edgefleet bench needs a source checkout: {path} not found")
    spec = importlib.util.spec_from_file_location(f"edgefleet_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _positive(value: int, what: str) -> None:
    from edgefleet.shared.errors import ConfigError

    if value < 1:
        raise ConfigError(f"{what} must be at least 1")


def _emit(result: dict[str, Any], as_json: bool, module: ModuleType) -> int:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        module.print_table(result)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    _positive(args.frames, "--frames")
    mod = _bench_module("bench_infer")
    result = mod.bench(
        args.model, args.source, args.frames, with_ultralytics=not args.no_ultralytics
    )
    return _emit(result, args.json, mod)


def run_swap(args: argparse.Namespace) -> int:
    _positive(args.swaps, "--swaps")
    if len(args.models) < 2:
        from edgefleet.shared.errors import ConfigError

        raise ConfigError("--models needs at least two models to swap between")
    if args.fps < 0:
        from edgefleet.shared.errors import ConfigError

        raise ConfigError("--fps must be 0 (use --load) or more")
    mod = _bench_module("bench_swap")
    result = mod.bench(
        args.models,
        args.source,
        args.swaps,
        load=args.load,
        gap_s=args.gap_s,
        settle_s=args.settle_s,
        plain_load=args.plain_load,
        fps=args.fps,
    )
    return _emit(result, args.json, mod)


def run_rollout(args: argparse.Namespace) -> int:
    if args.sizes:
        return _run_fleet(args)
    _positive(args.devices, "--devices")
    mod = _bench_module("bench_rollout")
    result = mod.bench(args.devices, poll_s=args.poll_s, fps=args.fps, timeout=args.timeout)
    return _emit(result, args.json, mod)


def run_idle(args: argparse.Namespace) -> int:
    _positive(args.devices, "--devices")
    _positive(args.threads, "--threads")
    if not (args.speedup > 0 and args.duration > 0):
        from edgefleet.shared.errors import ConfigError

        raise ConfigError("--speedup and --duration must be above 0")
    mod = _bench_module("bench_idle")
    result = mod.bench(
        args.devices, speedup=args.speedup, duration_s=args.duration, threads=args.threads
    )
    return _emit(result, args.json, mod)


def run_ingest(args: argparse.Namespace) -> int:
    _positive(args.windows, "--windows")
    _positive(args.devices, "--devices")
    if args.register < 0:
        from edgefleet.shared.errors import ConfigError

        raise ConfigError("--register must be 0 or more")
    mod = _bench_module("bench_ingest")
    result = mod.bench(args.windows, args.devices, args.register)
    return _emit(result, args.json, mod)


def run_gates(args: argparse.Namespace) -> int:
    from edgefleet.shared.errors import ConfigError

    for value, what in ((args.seeds, "--seeds"), (args.sites, "--sites"),
                        (args.canaries, "--canaries"), (args.controls, "--controls")):  # fmt: skip
        _positive(value, what)
    if args.window_s <= 0 or args.soak_s < args.window_s or not 0 < args.alpha < 0.5:
        raise ConfigError("need --window-s > 0, --soak-s >= --window-s, 0 < --alpha < 0.5")
    mod = _bench_module("bench_gates")
    run = mod.calibrate if args.calibrate else mod.bench
    result = run(
        args.seeds, sites=args.sites, canaries=args.canaries, controls=args.controls,
        window_s=args.window_s, soak_s=args.soak_s, alpha=args.alpha,
    )  # fmt: skip
    return _emit(result, args.json, mod)


def run_canary(args: argparse.Namespace) -> int:
    from edgefleet.shared.errors import ConfigError

    for value, what in ((args.seeds, "--seeds"), (args.frames, "--frames"),
                        (args.sites, "--sites"), (args.devices, "--devices")):  # fmt: skip
        _positive(value, what)
    if args.window_s <= 0 or args.soak_s < args.window_s:
        raise ConfigError("need --window-s > 0 and --soak-s >= --window-s")
    mod = _bench_module("bench_canary")
    mod.check_stages(args.stages)  # the controller's own spec rules (bench/ may import them)
    result = mod.bench(
        args.seeds, frames_n=args.frames, sites=args.sites, per_site=args.devices,
        stages=args.stages, soak_s=args.soak_s, window_s=args.window_s,
    )  # fmt: skip
    return _emit(result, args.json, mod)


def run_drift(args: argparse.Namespace) -> int:
    for value, what in ((args.seeds, "--seeds"), (args.frames, "--frames"),
                        (args.devices, "--devices")):  # fmt: skip
        _positive(value, what)
    mod = _bench_module("bench_drift")
    result = mod.bench(args.seeds, frames_n=args.frames, devices=args.devices)
    return _emit(result, args.json, mod)


def _run_fleet(args: argparse.Namespace) -> int:
    from edgefleet.shared.errors import ConfigError

    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bad --sizes {args.sizes!r}: expected N,N,...") from None
    for n in sizes:
        _positive(n, "each of --sizes")
    _positive(args.procs, "--procs")
    _positive(args.workers, "--workers")
    mod = _bench_module("bench_fleet")
    result = mod.bench(
        sizes, procs=args.procs, workers=args.workers, timeout=args.timeout, db=args.database_url
    )
    return _emit(result, args.json, mod)


def run_faults(args: argparse.Namespace) -> int:
    from edgefleet.shared.errors import ConfigError

    if not 0 < args.outage_s <= 600:
        raise ConfigError("--outage-s must be above 0 and at most 600")
    mod = _bench_module("bench_faults")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()] if args.scenarios else None
    result = mod.bench(mod.check_scenarios(names) if names else None, outage_s=args.outage_s)
    _emit(result, args.json, mod)
    return 0 if result["passed"] == result["total"] else 1
