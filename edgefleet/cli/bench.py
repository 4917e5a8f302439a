"""``edgefleet bench infer|swap|rollout|idle|ingest|gates|canary|drift|faults``.

The measuring code lives in the source checkout's ``bench/`` folder (it compares against
Ultralytics, which never ships on a device); each command loads it from there and says so
in one line when it is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import JsonFlag, print_json
from edgefleet.shared.errors import ConfigError

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"

app = group("benchmarks: per-frame cost, hot swaps, rollout convergence")

Seeds = Annotated[int, typer.Option("--seeds", help="runs per variant")]
Frames = Annotated[int, typer.Option("--frames", help="synthetic frames inferred")]
WindowS = Annotated[float, typer.Option("--window-s", help="telemetry window")]
SoakS = Annotated[float, typer.Option("--soak-s", help="stage soak")]
Sites = Annotated[int, typer.Option("--sites", help="sites of the simulated fleet")]


def _bench_module(name: str) -> ModuleType:
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


def _positive(*checks: tuple[int, str]) -> None:
    for value, what in checks:
        if value < 1:
            raise ConfigError(f"{what} must be at least 1")


def _emit(result: dict[str, Any], as_json: bool, module: ModuleType) -> None:
    if as_json:
        print_json(result)
    else:
        module.print_table(result)


@app.command("infer")
def infer(
    model: Annotated[Path, typer.Option("--model", help="exported ONNX model")],
    source: Annotated[Path, typer.Option("--source", help="folder of images")],
    frames: Annotated[int, typer.Option("--frames", help="timed frames per way")] = 300,
    no_ultralytics: Annotated[bool, typer.Option(
        "--no-ultralytics", help="skip Ultralytics")] = False,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Agent per-frame time vs bare run vs Ultralytics."""
    _positive((frames, "--frames"))
    mod = _bench_module("bench_infer")
    _emit(mod.bench(model, source, frames, with_ultralytics=not no_ultralytics), as_json, mod)


@app.command("swap")
def swap(
    models: Annotated[list[Path], typer.Option("--models", help="ONNX models (repeat)")],
    source: Annotated[Path, typer.Option("--source", help="images")] = Path("models/samples"),
    swaps: Annotated[int, typer.Option("--swaps", help="hot swaps")] = 20,
    load: Annotated[float, typer.Option(
        "--load", help="0: saturating source; else fraction of capacity")] = 0.0,
    fps: Annotated[float, typer.Option(
        "--fps", help="pace at this rate instead (0: use --load)")] = 0.0,
    gap_s: Annotated[float, typer.Option(
        "--gap-s", help="steady seconds between swaps")] = 1.0,
    settle_s: Annotated[float, typer.Option("--settle-s", help="seconds after a swap")] = 0.5,
    plain_load: Annotated[bool, typer.Option(
        "--plain-load", help="load, warm up as before")] = False,
    ungated: Annotated[bool, typer.Option(
        "--ungated", help="prepare models without pausing for frames, as before")] = False,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Frames dropped and p99 latency during hot swaps."""
    _positive((swaps, "--swaps"))
    if len(models) < 2:
        raise ConfigError("--models needs at least two models to swap between")
    if fps < 0:
        raise ConfigError("--fps must be 0 (use --load) or more")
    mod = _bench_module("bench_swap")
    result = mod.bench(models, source, swaps, load=load, gap_s=gap_s, settle_s=settle_s,
                       plain_load=plain_load, fps=fps, ungated=ungated)  # fmt: skip
    _emit(result, as_json, mod)


@app.command("rollout")
def rollout(
    devices: Annotated[int, typer.Option("--devices", help="simulated agent stacks")] = 20,
    sizes: Annotated[str | None, typer.Option(
        "--sizes", metavar="N,N,...",
        help="protocol-level fleets of these sizes instead (bench/bench_fleet.py)")] = None,
    procs: Annotated[int, typer.Option(
        "--procs", help="simulator processes (--sizes)")] = 2,
    workers: Annotated[int, typer.Option(
        "--workers", help="threads per process (--sizes)")] = 8,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="controller DB (--sizes)")] = None,
    poll_s: Annotated[float, typer.Option("--poll-s", help="director poll interval")] = 30.0,
    fps: Annotated[float, typer.Option("--fps", help="frames per second per device")] = 2.0,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds per phase")] = 600.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Time for a fleet to converge on a new version (needs the controller)."""
    if sizes:
        counts = _sizes(sizes)
        _positive((procs, "--procs"), (workers, "--workers"))
        mod = _bench_module("bench_fleet")
        result = mod.bench(counts, procs=procs, workers=workers, timeout=timeout, db=database_url)
        _emit(result, as_json, mod)
        return
    _positive((devices, "--devices"))
    mod = _bench_module("bench_rollout")
    _emit(mod.bench(devices, poll_s=poll_s, fps=fps, timeout=timeout), as_json, mod)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bad --sizes {text!r}: expected N,N,...") from None
    _positive(*((n, "each of --sizes") for n in sizes))
    return sizes


@app.command("idle")
def idle(
    devices: Annotated[int, typer.Option("--devices", help="simulated idle devices")] = 1000,
    speedup: Annotated[float, typer.Option(
        "--speedup", help="device seconds per wall s")] = 3.0,
    duration: Annotated[float, typer.Option(
        "--duration", help="wall seconds per phase")] = 30.0,
    threads: Annotated[int, typer.Option("--threads", help="client threads polling")] = 16,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Requests/s and controller CPU of an idle fleet (starts a controller)."""
    _positive((devices, "--devices"), (threads, "--threads"))
    if not (speedup > 0 and duration > 0):
        raise ConfigError("--speedup and --duration must be above 0")
    mod = _bench_module("bench_idle")
    result = mod.bench(devices, speedup=speedup, duration_s=duration, threads=threads)
    _emit(result, as_json, mod)


@app.command("ingest")
def ingest(
    windows: Annotated[int, typer.Option("--windows", help="windows in the burst")] = 20000,
    devices: Annotated[int, typer.Option(
        "--devices", help="device ids they come from")] = 1000,
    register: Annotated[int, typer.Option(
        "--register", help="new devices (0: skip)")] = 10000,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """A telemetry burst: controller vs a plain subscriber (needs Mosquitto)."""
    _positive((windows, "--windows"), (devices, "--devices"))
    if register < 0:
        raise ConfigError("--register must be 0 or more")
    mod = _bench_module("bench_ingest")
    _emit(mod.bench(windows, devices, register), as_json, mod)


@app.command("gates")
def gates(
    seeds: Seeds = 20,
    sites: Sites = 3,
    canaries: Annotated[int, typer.Option("--canaries", help="canary devices per site")] = 1,
    controls: Annotated[int, typer.Option("--controls", help="control devices per site")] = 1,
    window_s: WindowS = 10.0,
    soak_s: SoakS = 600.0,
    alpha: Annotated[float, typer.Option("--alpha", help="stage false-alarm rate")] = 0.01,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="false alarms of a canary at the threshold")] = False,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Canary gates: false-alarm rate, power, time to decision (simulated)."""
    _positive((seeds, "--seeds"), (sites, "--sites"), (canaries, "--canaries"),
              (controls, "--controls"))  # fmt: skip
    if window_s <= 0 or soak_s < window_s or not 0 < alpha < 0.5:
        raise ConfigError("need --window-s > 0, --soak-s >= --window-s, 0 < --alpha < 0.5")
    mod = _bench_module("bench_gates")
    run = mod.calibrate if calibrate else mod.bench
    result = run(seeds, sites=sites, canaries=canaries, controls=controls, window_s=window_s,
                 soak_s=soak_s, alpha=alpha)  # fmt: skip
    _emit(result, as_json, mod)


@app.command("canary")
def canary(
    seeds: Annotated[int, typer.Option("--seeds", help="rollouts per variant")] = 5,
    frames: Frames = 60,
    sites: Sites = 3,
    devices: Annotated[int, typer.Option("--devices", help="devices per site")] = 4,
    stages: Annotated[str, typer.Option("--stages", help="rollout stages")] = "25%,50%",
    soak_s: SoakS = 300.0,
    window_s: WindowS = 10.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Canary verdicts: real model variants, real inference, staged rollouts."""
    _positive((seeds, "--seeds"), (frames, "--frames"), (sites, "--sites"),
              (devices, "--devices"))  # fmt: skip
    if window_s <= 0 or soak_s < window_s:
        raise ConfigError("need --window-s > 0 and --soak-s >= --window-s")
    mod = _bench_module("bench_canary")
    mod.check_stages(stages)  # the controller's own spec rules (bench/ may import them)
    result = mod.bench(seeds, frames_n=frames, sites=sites, per_site=devices, stages=stages,
                       soak_s=soak_s, window_s=window_s)  # fmt: skip
    _emit(result, as_json, mod)


@app.command("drift")
def drift(
    seeds: Annotated[int, typer.Option("--seeds", help="fleets per scene")] = 5,
    frames: Frames = 60,
    devices: Annotated[int, typer.Option("--devices", help="devices per site")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Drift alerts: real scene changes at one site each, the real watcher."""
    _positive((seeds, "--seeds"), (frames, "--frames"), (devices, "--devices"))
    mod = _bench_module("bench_drift")
    _emit(mod.bench(seeds, frames_n=frames, devices=devices), as_json, mod)


@app.command("faults")
def faults(
    scenarios: Annotated[str | None, typer.Option(
        "--scenarios", metavar="NAME,NAME,...",
        help="controller-kill, broker-outage, agent-kill:PHASE, disk-full (default: all)",
    )] = None,
    outage_s: Annotated[float, typer.Option(
        "--outage-s", help="broker outage seconds")] = 5.0,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Controller/broker/agent kills and a full disk: a table of outcomes (exit 1 if any
    scenario failed)."""
    if not 0 < outage_s <= 600:
        raise ConfigError("--outage-s must be above 0 and at most 600")
    mod = _bench_module("bench_faults")
    names = [n.strip() for n in scenarios.split(",") if n.strip()] if scenarios else None
    result = mod.bench(mod.check_scenarios(names) if names else None, outage_s=outage_s)
    _emit(result, as_json, mod)
    if result["passed"] != result["total"]:
        raise typer.Exit(1)
