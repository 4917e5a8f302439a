"""``edgefleet rollout create|list|status|pause|resume|abort|rollback|promote|window``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import Column, JsonFlag, hhmm, labels, print_json, print_table, show_list
from edgefleet.cli.params import numeric_id, parse_selector, parse_target
from edgefleet.shared.errors import ConfigError

app = group("roll a model version out to devices")
RolloutId = Annotated[str, typer.Argument(metavar="ID", help="rollout id")]
Selector = Annotated[list[str] | None, typer.Option(
    "--selector", metavar="KEY=VALUE", help="label selector; repeat to AND several")]  # fmt: skip
Timezone = Annotated[str | None, typer.Option(
    "--timezone", metavar="TZ", help="the --window crons' zone (default UTC)")]  # fmt: skip


class OnFailure(str, Enum):
    pause = "pause"
    rollback = "rollback"


@dataclass(frozen=True)
class RolloutFlags:
    """``rollout create``'s flags; None and empty: not given (the spec file's value holds)."""

    target: str | None = None
    file: str | None = None
    selector: list[str] = field(default_factory=list)
    stages: str | None = None
    soak: str | None = None
    install_timeout: str | None = None
    on_failure: str | None = None
    gate: list[str] = field(default_factory=list)
    max_concurrent: int | None = None
    stratify_by: str | None = None
    priority: int | None = None
    window: list[str] = field(default_factory=list)
    timezone: str | None = None
    shadow_frames: int | None = None
    shadow_stages: str | None = None
    shadow_min_match: float | None = None


def parse_gate(text: str) -> dict[str, Any] | str:
    """``METRIC:THRESHOLD[:MIN_SAMPLES]`` or ``ml`` (the default ML gates)."""
    if text == "ml":
        return "ml"
    parts = text.split(":")
    bad = ConfigError(f"bad gate {text!r}: expected METRIC:THRESHOLD[:MIN_SAMPLES] or ml")
    if len(parts) not in (2, 3):
        raise bad
    try:
        gate: dict[str, Any] = {"metric": parts[0], "threshold": float(parts[1])}
        if len(parts) == 3:
            gate["min_samples"] = int(parts[2])
    except ValueError:
        raise bad from None
    return gate


def _read_spec_file(path: str) -> dict[str, Any]:
    from edgefleet.shared.yaml_file import read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def rollout_body(flags: RolloutFlags) -> dict[str, Any]:
    """The spec from --file, then NAME:VERSION and the flags on top; validated here so a
    mistake is one line before anything is sent."""
    from pydantic import ValidationError

    from edgefleet.controller.rollouts.spec import RolloutSpec

    body: dict[str, Any] = _read_spec_file(flags.file) if flags.file else {}
    if flags.target:
        body["model"], body["version"] = parse_target(flags.target)
    elif not flags.file:
        raise ConfigError("give NAME:VERSION or --file SPEC.yaml")
    if flags.selector:
        body["selector"] = {**body.get("selector", {}), **parse_selector(flags.selector)}
    given = {"stages": flags.stages, "soak_s": flags.soak, "on_failure": flags.on_failure,
             "max_concurrent": flags.max_concurrent, "stratify_by": flags.stratify_by,
             "priority": flags.priority, "install_timeout_s": flags.install_timeout}  # fmt: skip
    body.update({k: v for k, v in given.items() if v is not None})
    if flags.gate:
        body["gates"] = _expand_gates([parse_gate(g) for g in flags.gate])
    if flags.window:
        body["maintenance_windows"] = _windows(flags.window, flags.timezone)
    elif flags.timezone:
        raise ConfigError("--timezone is the --window crons' zone: give --window CRON too")
    shadow = {"frames": flags.shadow_frames, "min_match_rate": flags.shadow_min_match,
              "stages": _numbers(flags.shadow_stages)}  # fmt: skip
    if any(v is not None for v in shadow.values()):
        body["shadow"] = {**(body.get("shadow") or {}),
                          **{k: v for k, v in shadow.items() if v is not None}}  # fmt: skip
    try:
        return RolloutSpec.model_validate(body).model_dump(mode="json")
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        raise ConfigError(f"bad rollout spec: {where}: {err['msg']}") from e


def _windows(crons: list[str], tz: str | None) -> list[dict[str, Any]]:
    return [{"cron": c, **({"timezone": tz} if tz else {})} for c in crons]


def _numbers(text: str | None) -> list[int] | None:
    """``"1,2"`` -> ``[1, 2]`` (stage numbers)."""
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"bad stage numbers {text!r}: expected e.g. 1,2") from None


def _expand_gates(gates: list[dict[str, Any] | str]) -> list[Any]:
    from edgefleet.controller.rollouts.spec import ML_GATES

    out: list[Any] = []
    for g in gates:
        if g == "ml":
            out.extend(x.model_dump(mode="json") for x in ML_GATES)
        else:
            out.append(g)
    return out


def print_rollout(r: dict[str, Any]) -> None:
    sel = labels(r["selector"]) if r["selector"] else "(all devices)"
    print(f"rollout {r['id']}: {r['model']}:{r['version']} to {sel}")
    reason = f" ({r['reason']})" if r.get("reason") else ""
    print(f"state {r['state']}{reason}: {r['done']}/{r['total']} done, {r['failed']} failed"
          f" of {r.get('matching', r['total'])} matching")  # fmt: skip
    if r.get("rollback_version"):
        print(f"rolled back to {r['rollback_version']}")
    if r.get("waiting_for_window"):
        print(f"waiting for window (opens {hhmm(r['waiting_for_window'])})")
    for st in r.get("stages", []):
        _print_stage(r, st)
    rows = [
        [d["device_id"], str(d["stage_number"]), d["phase"] or "-",
         f"{d['model'] or '-'}:{d['version'] or '-'}", _result(d)]
        for d in r["devices"]
    ]  # fmt: skip
    if rows:
        print_table(["DEVICE", "STAGE", "PHASE", "RUNNING", "RESULT"], rows)
    for d in r["devices"]:
        if d.get("refused"):
            print(f"{d['device_id']} refused its assignment: {d['refused']}")
    for d in r.get("skipped", []):
        print(f"{d['device_id']} skipped: {d['reason']}")


def _print_stage(r: dict[str, Any], st: dict[str, Any]) -> None:
    from edgefleet.controller.rollouts.lifecycle import RolloutState

    current = st["index"] == r.get("stage") and r["state"] == RolloutState.RUNNING.value
    # Director metadata is signed in batches in the background: show how far it got.
    # (Not while a closed maintenance window, not the signing, holds the rest.)
    signing = f", signed {r['total']}/{st['devices']}" if current and (
        r["total"] < st["devices"]) and not r.get("waiting_for_window") else ""  # fmt: skip
    print(f"{'>' if current else ' '} stage {st['number']} ({st['stage']}, "
          f"{st['devices']} device(s)): {st['outcome']}{signing}")  # fmt: skip
    for g in st["gates"]:
        value = "-" if g["value"] is None else f"{g['value']:.3g}"
        print(f"    {g['verdict']:<6} {g['metric']:<22} value {value:<8} threshold "
              f"{g['threshold']:<6g} samples {g['samples']}/{g['min_samples']}"
              + (f"  {g['detail']}" if g.get("detail") else ""))  # fmt: skip


def _result(d: dict[str, Any]) -> str:
    if d.get("refused"):
        return "refused"
    return "failed" if d.get("failed") else ("done" if d["done"] else "pending")


@app.command("create")
def create(
    target: Annotated[str | None, typer.Argument(
        metavar="NAME:VERSION", help="model version (optional with --file)")] = None,
    selector: Selector = None,
    file: Annotated[str | None, typer.Option(
        "--file", help="rollout spec (YAML); flags given here override it")] = None,
    stages: Annotated[str | None, typer.Option(
        "--stages", help='counts or percents, e.g. "1,10%,50%,100%"')] = None,
    soak: Annotated[str | None, typer.Option(
        "--soak", help="soak per stage after its devices committed: 30s, 5m")] = None,
    install_timeout: Annotated[str | None, typer.Option(
        "--install-timeout", metavar="DURATION",
        help="time an assigned device has to commit or refuse before the stage is "
        "Inconclusive (default 30m)")] = None,
    on_failure: Annotated[OnFailure | None, typer.Option(
        "--on-failure", help="what a failed stage does")] = None,
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", metavar="METRIC:THRESHOLD[:MIN_SAMPLES]",
        help='a gate; repeat for several; "ml" adds the default ML gates')] = None,
    max_concurrent: Annotated[int | None, typer.Option(
        "--max-concurrent", help="downloads at once")] = None,
    stratify_by: Annotated[str | None, typer.Option(
        "--stratify-by", metavar="LABEL", help="first stages span this label")] = None,
    priority: Annotated[int | None, typer.Option(
        "--priority", help="higher goes first when rollouts compete")] = None,
    override_gate: Annotated[bool, typer.Option(
        "--override-gate",
        help="roll out a version the validation gate rejected (admin)")] = False,
    window: Annotated[list[str] | None, typer.Option(
        "--window", metavar="CRON",
        help='maintenance window: devices install only in the minutes this cron names, '
        'e.g. "* 2 * * *" (02:00-02:59); repeat for several')] = None,
    timezone: Timezone = None,
    shadow_frames: Annotated[int | None, typer.Option(
        "--shadow-frames", metavar="N",
        help="shadow the new model beside the running one on N sampled frames before the "
        "swap")] = None,
    shadow_stages: Annotated[str | None, typer.Option(
        "--shadow-stages", metavar="1,2",
        help="stages (1-based) that shadow (default: all)")] = None,
    shadow_min_match: Annotated[float | None, typer.Option(
        "--shadow-min-match", metavar="RATE",
        help="refuse a model whose boxes match below this share (0-1)")] = None,
) -> None:  # fmt: skip
    """Roll NAME:VERSION out to matching devices, in stages."""
    from edgefleet.cli.client import ControllerClient

    flags = RolloutFlags(
        target=target, file=file, selector=selector or [], stages=stages, soak=soak,
        install_timeout=install_timeout, on_failure=on_failure.value if on_failure else None,
        gate=gate or [], max_concurrent=max_concurrent, stratify_by=stratify_by,
        priority=priority, window=window or [], timezone=timezone,
        shadow_frames=shadow_frames, shadow_stages=shadow_stages,
        shadow_min_match=shadow_min_match,
    )  # fmt: skip
    body = rollout_body(flags)
    with ControllerClient.from_env() as api:
        print_rollout(api.create_rollout(body, override_gate=override_gate))


ROLLOUT_COLUMNS = (
    Column("ID", lambda r: str(r["id"])),
    Column("TARGET", lambda r: f"{r['model']}:{r['version']}"),
    Column("STATE", lambda r: r["state"]),
    Column("STAGE", lambda r: f"{r['stage_number']}/{len(r['stages']) or 1}"),
    Column("DONE", lambda r: f"{r['done']}/{r['total']}"),
    Column("SELECTOR", lambda r: labels(r["selector"])),
    Column("REASON", lambda r: r.get("reason") or ""),
)


@app.command("list")
def list_rollouts(as_json: JsonFlag = False) -> None:
    """Every rollout with its state and stage."""
    from edgefleet.cli.client import ControllerClient

    with ControllerClient.from_env() as api:
        show_list(api.rollouts(), ROLLOUT_COLUMNS, as_json)


@app.command("status")
def status(
    rollout_id: RolloutId,
    as_json: JsonFlag = False,
    watch: Annotated[bool, typer.Option("--watch", help="live view until it ends")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", help="seconds between refreshes")] = 1.0,
) -> None:  # fmt: skip
    """Progress of one rollout, per stage and gate."""
    from edgefleet.cli.client import ControllerClient

    rid = numeric_id(rollout_id, "rollout")
    with ControllerClient.from_env() as api:
        if watch:
            from edgefleet.cli.rollout_watch import watch as live

            code = live(lambda: api.rollout(rid), interval, as_json)
            if code:
                raise typer.Exit(code)
            return
        answer = api.rollout(rid)
    if as_json:
        print_json(answer)
    else:
        print_rollout(answer)


def _act(rollout_id: str, action: str) -> None:
    from edgefleet.cli.client import ControllerClient

    rid = numeric_id(rollout_id, "rollout")
    with ControllerClient.from_env() as api:
        answer = api.act_on_rollout(rid, action)
    print(f"rollout {rid}: {action} done, now {answer['state']}")


@app.command("pause")
def pause(rollout_id: RolloutId) -> None:
    """Stop advancing (devices keep what they run)."""
    _act(rollout_id, "pause")


@app.command("resume")
def resume(rollout_id: RolloutId) -> None:
    """Continue a paused or failed rollout."""
    _act(rollout_id, "resume")


@app.command("abort")
def abort(rollout_id: RolloutId) -> None:
    """End the rollout; devices keep what they run."""
    _act(rollout_id, "abort")


@app.command("rollback")
def rollback(rollout_id: RolloutId) -> None:
    """Send the rollout's devices back to their previous version."""
    _act(rollout_id, "rollback")


@app.command("promote")
def promote(rollout_id: RolloutId) -> None:
    """Skip the rest of this stage's soak: next stage now."""
    _act(rollout_id, "promote")


@app.command("window")
def window(
    rollout_id: RolloutId,
    cron: Annotated[list[str] | None, typer.Argument(
        metavar="CRON", help='e.g. "* 2 * * *"')] = None,
    timezone: Annotated[str | None, typer.Option(
        "--timezone", metavar="TZ", help="the crons' zone (default UTC)")] = None,
    clear: Annotated[bool, typer.Option(
        "--clear", help="no window: devices it held install now")] = False,
) -> None:  # fmt: skip
    """Replace a rollout's maintenance windows (--clear: install now)."""
    from pydantic import ValidationError

    from edgefleet.cli.client import ControllerClient
    from edgefleet.controller.rollouts.spec import MaintenanceWindow

    rid = numeric_id(rollout_id, "rollout")
    if clear == bool(cron):
        raise ConfigError("give the window's CRON, or --clear for none")
    try:
        windows = [MaintenanceWindow.model_validate(w).model_dump(mode="json")
                   for w in _windows(cron or [], timezone)]  # fmt: skip
    except ValidationError as e:
        msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"bad window: {msg}") from e
    with ControllerClient.from_env() as api:
        answer = api.set_windows(rid, windows)
    shown = ", ".join(f"{w['cron']!r} {w['timezone']}" for w in windows) or "none"
    print(f"rollout {rid}: window {shown}, now {answer['state']}")
    if answer.get("waiting_for_window"):
        print(f"waiting for window (opens {hhmm(answer['waiting_for_window'])})")
