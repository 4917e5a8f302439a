"""Handlers of ``edgefleet model|device|rollout ...``: httpx against $EDGEFLEET_URL.

Every failure becomes one EdgefleetError line: an unreachable controller, an HTTP error
(its ``detail``), a bad argument, a missing export extra.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx
from edgefleet.controller.cli_args import parse_target
from edgefleet.controller.cli_http import actor_header as _actor_header
from edgefleet.controller.cli_http import check_response as _check
from edgefleet.controller.cli_http import controller_client as _client
from edgefleet.controller.cli_http import request as _request
from edgefleet.controller.cli_output import hhmm
from edgefleet.controller.cli_output import pipe_safe as _pipe_safe
from edgefleet.controller.cli_output import print_json as _print_json
from edgefleet.controller.cli_output import print_table as _table
from edgefleet.controller.data_cmds import card_lines, push_card
from edgefleet.controller.gate_cmds import override_params, push_verdict
from edgefleet.controller.rollouts.lifecycle import RolloutState
from edgefleet.shared.errors import ArtifactError, ConfigError, EdgefleetError, TransportError
from edgefleet.shared.topics import validate_device_id

# --- model push ------------------------------------------------------------------------


class _Progress:
    """Wraps an upload file: counts bytes as httpx reads them and reports on stderr."""

    def __init__(self, f: BinaryIO, total: int, label: str) -> None:
        self._f, self.total, self.label, self.sent = f, total, label, 0
        self._tty = sys.stderr.isatty()
        self._last = -1
        self._finished = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self.sent += len(chunk)
        self._report(done=not chunk)
        return chunk

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell for the length
        return getattr(self._f, name)

    def _report(self, done: bool) -> None:
        pct = 100 * self.sent // self.total if self.total else 100
        if self._tty and (pct != self._last or done):
            end = "\n" if done else ""
            print(f"\ruploading {self.label}: {self.sent}/{self.total} bytes ({pct}%)", end=end,
                  file=sys.stderr, flush=True)  # fmt: skip
        elif not self._tty and done and not self._finished:
            print(f"uploaded {self.label}: {self.sent} bytes", file=sys.stderr)
        self._last = pct
        self._finished = self._finished or done


def export_pt(pt: Path, out_dir: Path, used: dict[str, Any] | None = None) -> Path:
    """Export an Ultralytics checkpoint to ONNX at the image size it was trained with;
    the export arguments go into ``used`` (for the lineage)."""
    # Ultralytics logs to stdout; keep ours for the result line.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ConfigError(
                "pushing a .pt needs the export extra: pip install 'edgefleet[export]' "
                "(or export to .onnx yourself and push that)"
            ) from e
        # Ultralytics writes the export beside the checkpoint: work on a copy of ours.
        local = out_dir / pt.name
        shutil.copyfile(pt, local)
        try:
            model = YOLO(str(local))
            imgsz = model.overrides.get("imgsz") or 640
            exported = model.export(format="onnx", imgsz=imgsz)
            if used is not None:
                used.update(format="onnx", imgsz=imgsz)
        except Exception as e:  # ultralytics raises anything from torch to its own errors
            raise ArtifactError(f"cannot export {pt.name} to ONNX: {e}".splitlines()[0]) from e
    return Path(exported)


def _upload(
    name: str, path: Path, version: str | None, lineage: bytes | None = None
) -> dict[str, Any]:
    data = {"version": version} if version else {}
    with path.open("rb") as f:
        progress = _Progress(f, path.stat().st_size, path.name)
        files: dict[str, Any] = {"file": (path.name, progress, "application/octet-stream")}
        if lineage is not None:
            files["lineage"] = ("lineage.json", lineage, "application/json")
        return _request("POST", f"/v1/models/{name}/versions", files=files, data=data)  # type: ignore[no-any-return]


def _fetch_models_metadata(client: httpx.Client) -> bytes:
    """The controller's current ``models`` metadata: timestamp -> snapshot -> models."""
    base = "/tuf/image/metadata"
    timestamp = _check(client.get(f"{base}/timestamp.json"))
    try:
        snap_version = int(timestamp["signed"]["meta"]["snapshot.json"]["version"])
        snapshot = _check(client.get(f"{base}/{snap_version}.snapshot.json"))
        models_version = int(snapshot["signed"]["meta"]["models.json"]["version"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgefleetError(f"the controller's image metadata is malformed: {e!r}") from e
    answer = client.get(f"{base}/{models_version}.models.json")
    if not answer.is_success:
        _check(answer)
    return answer.content


def _upload_signed(
    name: str, path: Path, version: str | None, key: Path, lineage: bytes | None = None
) -> dict[str, Any]:
    """Sign the ``models`` role here with the publisher's key; upload bytes + metadata."""
    from edgefleet.controller.signing.keys import load_signer
    from edgefleet.controller.signing.publisher import sign_models_update
    from edgefleet.shared.hashing import sha256_file

    if not key.is_file():
        raise ConfigError(f"no such key file: {key}")
    signer = load_signer(key, key.with_name(key.name.removesuffix(".pem") + ".pub.json"))
    length, sha = path.stat().st_size, sha256_file(path)
    with _client() as client:
        nxt = _check(client.get(f"/v1/models/{name}/next-release"))
        version = version or str(nxt["version"])
        signed = sign_models_update(
            _fetch_models_metadata(client), signer, name=name, version=version,
            release=int(nxt["release"]), length=length, sha256=sha,
        )  # fmt: skip
        with path.open("rb") as f:
            # _Progress reads like the file and hands httpx the rest (fileno, seek, tell) of it
            progress = cast(BinaryIO, _Progress(f, length, path.name))
            files: dict[str, tuple[str, BinaryIO | bytes, str]] = {
                "file": (path.name, progress, "application/octet-stream"),
                "metadata": ("models.json", signed, "application/json"),
            }
            if lineage is not None:
                files["lineage"] = ("lineage.json", lineage, "application/json")
            url = f"/v1/models/{name}/signed"
            answer = client.post(url, files=files, data={"version": version})
        return _check(answer)  # type: ignore[no-any-return]


def _lineage(
    args: argparse.Namespace,
    onnx_path: Path,
    pt: Path | None,
    export_args: dict[str, Any],
    mlflow: dict[str, Any] | None = None,
) -> bytes:
    """The lineage document of this push (controller/lineage.py), as the upload's JSON part."""
    import json

    from edgefleet.controller.lineage import collect

    def opt(flag: str) -> Path | None:
        value = getattr(args, flag, None)
        return Path(value) if value else None

    doc = collect(onnx=onnx_path, weights=opt("weights") or pt, run_dir=opt("run_dir"),
                  data=opt("data"), export_args=export_args, mlflow=mlflow)  # fmt: skip
    return json.dumps(doc).encode()


def _push_source(args: argparse.Namespace) -> Path | None:
    """FILE, checked; None when the version comes from ``--from-mlflow``."""
    from_mlflow = getattr(args, "from_mlflow", None)
    if args.file and from_mlflow:
        raise ConfigError("give FILE or --from-mlflow, not both")
    if from_mlflow:
        if getattr(args, "run_dir", None):
            raise ConfigError("--run-dir and --from-mlflow both name the training run; give one")
        return None
    if not args.file:
        raise ConfigError("model push needs FILE (.onnx or .pt) or --from-mlflow MODEL_URI")
    src = Path(args.file)
    if not src.is_file():
        raise ConfigError(f"no such file: {src}")
    if src.suffix.lower() not in (".onnx", ".pt"):
        raise ConfigError(f"cannot push {src.name}: expected a .onnx or .pt file")
    return src


def _from_mlflow(uri: str, dest: Path) -> tuple[Path, Path | None, dict[str, Any]]:
    """The registered version at $MLFLOW_TRACKING_URI, downloaded under ``dest``: the file
    to push, the ``.pt`` beside it and the lineage's ``mlflow`` section."""
    from edgefleet.controller.mlflow_import import fetch, parse_model_uri

    ref = parse_model_uri(uri)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not tracking_uri:
        raise ConfigError("--from-mlflow needs MLFLOW_TRACKING_URI: the tracking server or "
                          "store that holds the model registry")  # fmt: skip
    # MLflow retries a refused connection for minutes by default (its servers rate-limit);
    # a push fails within seconds unless the operator asks for more.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    print(f"fetching {ref} from MLflow ...", file=sys.stderr)
    got = fetch(ref, tracking_uri, dest)
    return got.file, got.weights, got.lineage


def _check_push_labels(name: str, version: str | None) -> None:
    """The controller's own name rules, checked here so a bad name costs no upload; an
    empty ``--version`` is refused rather than read as "the next vN"."""
    from edgefleet.controller.registry import check_label

    check_label("model name", name)
    if version is not None:
        check_label("version", version)


@_pipe_safe
def model_push(args: argparse.Namespace) -> int:
    given = _push_source(args)
    _check_push_labels(args.name, args.version)
    if getattr(args, "validation", None) and not Path(args.validation).is_dir():
        raise ConfigError(f"validation folder {args.validation} does not exist")
    for flag, what in (("run_dir", "run directory"), ("data", "dataset file"),
                       ("weights", "weights file")):  # fmt: skip
        value = getattr(args, flag, None)
        if value and not Path(value).exists():
            raise ConfigError(f"{what} {value} does not exist")
    with tempfile.TemporaryDirectory(prefix="edgefleet-export-") as tmp:
        src, beside, mlflow = (given, None, None) if given else _from_mlflow(
            args.from_mlflow, Path(tmp) / "mlflow")  # fmt: skip
        suffix = src.suffix.lower()
        if getattr(args, "weights", None) and suffix == ".pt":
            raise ConfigError(
                "--weights is for an ONNX exported elsewhere; a .pt is its own weights"
            )
        export_args: dict[str, Any] = {}
        onnx_path = export_pt(src, Path(tmp), export_args) if suffix == ".pt" else src
        pt = src if suffix == ".pt" else beside
        lineage = _lineage(args, onnx_path, pt, export_args, mlflow)
        key = getattr(args, "key", None)
        if key:
            version = _upload_signed(args.name, onnx_path, args.version, Path(key), lineage)
        else:
            version = _upload(args.name, onnx_path, args.version, lineage)
        print(f"pushed {version['name']}:{version['version']} (release {version['release']}, "
              f"sha256 {version['sha256'][:12]}, {version['length']} bytes)")  # fmt: skip
        if getattr(args, "validation", None):
            card = push_card(version["name"], version["version"], onnx_path, Path(args.validation))
            print("\n".join(card_lines(card)))
    return push_verdict(version)


@_pipe_safe
def model_list(args: argparse.Namespace) -> int:
    answer = _request("GET", "/v1/models")
    if args.json:
        _print_json(answer["data"])
        return 0
    rows = [
        [
            m["name"],
            v["version"],
            v.get("stage") or "-",
            str(v["release"]),
            v["sha256"][:12],
            str(v["length"]),
            v["created_at"],
            v.get("gate_status") or "-",
        ]
        for m in answer["data"]
        for v in m["versions"]
    ]
    _table(["MODEL", "VERSION", "STAGE", "RELEASE", "SHA256", "BYTES", "CREATED", "GATE"], rows)
    return 0


# --- devices ---------------------------------------------------------------------------


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _desired(d: dict[str, Any]) -> str:
    """What the controller wants the device to run, beside what it reports running."""
    if not d.get("desired_model"):
        return "-"
    return f"{d['desired_model']}:{d.get('desired_version') or '-'}"


DEVICE_HEADERS = ["DEVICE", "ONLINE", "MODEL", "VERSION", "DESIRED", "BY", "RELEASE", "PHASE",
                  "SINCE", "LABELS", "WAITING", "ERROR"]  # fmt: skip
ERROR_WIDTH = 60  # characters of a device's last error shown in the table; --json has it all


def device_rows(devices: list[dict[str, Any]]) -> list[list[str]]:
    """The ``device list`` table: a device's last error is shown, not hidden behind --json."""
    return [
        [d["device_id"], "yes" if d["online"] else "no", d["model"] or "-", d["version"] or "-",
         _desired(d), d.get("desired_by") or "-", _or_dash(d.get("release")),
         d["phase"] or "-", _since(d.get("since")), _labels(d["labels"]),
         _short(d.get("waiting")), _short(d.get("error"))]
        for d in devices
    ]  # fmt: skip


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _since(iso: str | None) -> str:
    """When the device last reported its phase, without spaces: ``13:05:09`` today,
    ``11-23T13:05`` another day."""
    if not iso:
        return "-"
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    if at.date() == datetime.now(timezone.utc).date():
        return f"{at:%H:%M:%S}"
    return f"{at:%m-%dT%H:%M}"


def _short(error: str | None) -> str:
    if not error:
        return "-"
    line = " ".join(error.split())
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 3] + "..."


@_pipe_safe
def device_list(args: argparse.Namespace) -> int:
    answer = _request("GET", "/v1/devices")
    if args.json:
        _print_json(answer["data"])
        return 0
    _table(DEVICE_HEADERS, device_rows(answer["data"]))
    return 0


def device_refresh(args: argparse.Namespace) -> int:
    validate_device_id(args.device_id)
    _request("POST", f"/v1/devices/{args.device_id}/refresh", headers=_actor_header())
    print(f"refresh sent to {args.device_id}: it polls now and retries what it refused")
    return 0


def device_wait(args: argparse.Namespace) -> int:
    """Poll ``/v1/devices`` until the device is online (and committed on ``--runs``)."""
    validate_device_id(args.device_id)
    want = parse_target(args.runs) if args.runs else None
    if not 0 < args.timeout <= 86400:
        raise ConfigError(f"bad --timeout {args.timeout}: expected 0 < seconds <= 86400")
    deadline = time.monotonic() + args.timeout
    seen: dict[str, Any] | None = None
    while True:
        found = [d for d in _request("GET", "/v1/devices")["data"]
                 if d["device_id"] == args.device_id]  # fmt: skip
        seen = found[0] if found else None
        if seen is not None and _arrived(seen, want):
            print(f"{args.device_id}: online, {seen['model'] or '-'}:{seen['version'] or '-'} "
                  f"{seen['phase'] or '-'}")  # fmt: skip
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    now = "never seen" if seen is None else (
        f"{'online' if seen['online'] else 'offline'}, {seen['model'] or '-'}:"
        f"{seen['version'] or '-'} {seen['phase'] or '-'}"
        + (f", error: {_short(seen.get('error'))}" if seen.get("error") else "")
    )  # fmt: skip
    raise TransportError(f"{args.device_id} did not arrive in {args.timeout:g} s: {now}")


def _arrived(device: dict[str, Any], want: tuple[str, str] | None) -> bool:
    if not device["online"]:
        return False
    if want is None:
        return True
    name, version = want
    # A version rolled back to is re-signed as VERSION-rbN (controller/rollouts/releases.py).
    same = device["version"] == version or re.fullmatch(
        re.escape(version) + r"-rb\d+", device["version"] or ""
    )
    return device["model"] == name and bool(same) and device["phase"] == "COMMITTED"


# --- rollouts --------------------------------------------------------------------------


def parse_selector(items: list[str]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad selector {item!r}: expected KEY=VALUE")
        selector[key] = value
    return selector


def _rollout_id(value: str) -> str:
    if not str(value).isdigit():
        raise ConfigError(f"bad rollout id {value!r}: expected a number")
    return str(value)


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


def rollout_body(args: argparse.Namespace) -> dict[str, Any]:
    """The spec from --file, then NAME:VERSION and the flags on top; validated here so a
    mistake is one line before anything is sent."""
    from edgefleet.controller.rollouts.spec import RolloutSpec
    from pydantic import ValidationError

    body: dict[str, Any] = _read_spec_file(args.file) if args.file else {}
    if args.target:
        body["model"], body["version"] = parse_target(args.target)
    elif not args.file:
        raise ConfigError("give NAME:VERSION or --file SPEC.yaml")
    if args.selector:
        body["selector"] = {**body.get("selector", {}), **parse_selector(args.selector)}
    flags = {"stages": args.stages, "soak_s": args.soak, "on_failure": args.on_failure,
             "max_concurrent": args.max_concurrent, "stratify_by": args.stratify_by,
             "priority": args.priority,
             "install_timeout_s": args.install_timeout}  # fmt: skip
    body.update({k: v for k, v in flags.items() if v is not None})
    if args.gate:
        body["gates"] = _expand_gates([parse_gate(g) for g in args.gate])
    if args.window:
        body["maintenance_windows"] = _windows(args.window, args.timezone)
    elif args.timezone:
        raise ConfigError("--timezone is the --window crons' zone: give --window CRON too")
    shadow = {"frames": args.shadow_frames, "min_match_rate": args.shadow_min_match,
              "stages": _numbers(args.shadow_stages)}  # fmt: skip
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


def _print_rollout(r: dict[str, Any]) -> None:
    sel = _labels(r["selector"]) if r["selector"] else "(all devices)"
    print(f"rollout {r['id']}: {r['model']}:{r['version']} to {sel}")
    reason = f" ({r['reason']})" if r.get("reason") else ""
    print(f"state {r['state']}{reason}: {r['done']}/{r['total']} done, {r['failed']} failed"
          f" of {r.get('matching', r['total'])} matching")  # fmt: skip
    if r.get("rollback_version"):
        print(f"rolled back to {r['rollback_version']}")
    if r.get("waiting_for_window"):
        print(f"waiting for window (opens {hhmm(r['waiting_for_window'])})")
    for st in r.get("stages", []):
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
    rows = [
        [d["device_id"], str(d["stage_number"]), d["phase"] or "-",
         f"{d['model'] or '-'}:{d['version'] or '-'}", _result(d)]
        for d in r["devices"]
    ]  # fmt: skip
    if rows:
        _table(["DEVICE", "STAGE", "PHASE", "RUNNING", "RESULT"], rows)
    for d in r["devices"]:
        if d.get("refused"):
            print(f"{d['device_id']} refused its assignment: {d['refused']}")
    for d in r.get("skipped", []):
        print(f"{d['device_id']} skipped: {d['reason']}")


def _result(d: dict[str, Any]) -> str:
    if d.get("refused"):
        return "refused"
    return "failed" if d.get("failed") else ("done" if d["done"] else "pending")


@_pipe_safe
def rollout_create(args: argparse.Namespace) -> int:
    body = rollout_body(args)
    _print_rollout(_request("POST", "/v1/rollouts", json=body, headers=_actor_header(),
                            params=override_params(args)))  # fmt: skip
    return 0


@_pipe_safe
def rollout_status(args: argparse.Namespace) -> int:
    rid = _rollout_id(args.id)
    if args.watch:
        from edgefleet.controller.rollouts.watch import watch

        return watch(lambda: _request("GET", f"/v1/rollouts/{rid}"), args.interval, args.json)
    answer = _request("GET", f"/v1/rollouts/{rid}")
    if args.json:
        _print_json(answer)
    else:
        _print_rollout(answer)
    return 0


@_pipe_safe
def rollout_list(args: argparse.Namespace) -> int:
    answer = _request("GET", "/v1/rollouts")
    if args.json:
        _print_json(answer["data"])
        return 0
    rows = [
        [str(r["id"]), f"{r['model']}:{r['version']}", r["state"],
         f"{r['stage_number']}/{len(r['stages']) or 1}", f"{r['done']}/{r['total']}",
         _labels(r["selector"]), r.get("reason") or ""]
        for r in answer["data"]
    ]  # fmt: skip
    _table(["ID", "TARGET", "STATE", "STAGE", "DONE", "SELECTOR", "REASON"], rows)
    return 0


@_pipe_safe
def rollout_action(args: argparse.Namespace) -> int:
    rid = _rollout_id(args.id)
    answer = _request("POST", f"/v1/rollouts/{rid}/{args.action}", headers=_actor_header())
    print(f"rollout {rid}: {args.action} done, now {answer['state']}")
    return 0


@_pipe_safe
def rollout_window(args: argparse.Namespace) -> int:
    """Replace a rollout's maintenance windows; ``--clear`` lets the devices install now."""
    from edgefleet.controller.rollouts.spec import MaintenanceWindow
    from pydantic import ValidationError

    rid = _rollout_id(args.id)
    if args.clear == bool(args.cron):
        raise ConfigError("give the window's CRON, or --clear for none")
    try:
        windows = [MaintenanceWindow.model_validate(w).model_dump(mode="json")
                   for w in _windows(args.cron, args.timezone)]  # fmt: skip
    except ValidationError as e:
        msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"bad window: {msg}") from e
    answer = _request("PUT", f"/v1/rollouts/{rid}/windows",
                      json={"maintenance_windows": windows}, headers=_actor_header())  # fmt: skip
    shown = ", ".join(f"{w['cron']!r} {w['timezone']}" for w in windows) or "none"
    print(f"rollout {rid}: window {shown}, now {answer['state']}")
    if answer.get("waiting_for_window"):
        print(f"waiting for window (opens {hhmm(answer['waiting_for_window'])})")
    return 0


# --- pins and channels -----------------------------------------------------------------


@_pipe_safe
def pin_create(args: argparse.Namespace) -> int:
    selector = parse_selector(args.selector)
    if args.device:
        selector["device_id"] = args.device
    if bool(args.target) == bool(args.channel):
        raise ConfigError("give either NAME:VERSION or --channel NAME")
    body: dict[str, Any] = {"selector": selector, "channel": args.channel}
    if args.target:
        body["model"], body["version"] = parse_target(args.target)
    pin = _request("POST", "/v1/pins", json=body, headers=_actor_header())
    held = ", ".join(pin["devices"]) or "no device yet"
    print(f"pin {pin['id']}: {_labels(selector)} -> {_pin_target(pin)} (holds {held})")
    return 0


def _pin_target(pin: dict[str, Any]) -> str:
    return f"channel {pin['channel']}" if pin["channel"] else f"{pin['model']}:{pin['version']}"


@_pipe_safe
def pin_list(args: argparse.Namespace) -> int:
    answer = _request("GET", "/v1/pins")
    if args.json:
        _print_json(answer["data"])
        return 0
    rows = [
        [str(p["id"]), _labels(p["selector"]), _pin_target(p).replace(" ", ":"),
         ",".join(p["devices"]) or "-", p["created_by"]]
        for p in answer["data"]
    ]  # fmt: skip
    _table(["ID", "SELECTOR", "TARGET", "DEVICES", "BY"], rows)
    return 0


@_pipe_safe
def pin_delete(args: argparse.Namespace) -> int:
    if not str(args.id).isdigit():
        raise ConfigError(f"bad pin id {args.id!r}: expected a number")
    _request("DELETE", f"/v1/pins/{args.id}", headers=_actor_header())
    print(f"pin {args.id} deleted")
    return 0


@_pipe_safe
def channel_list(args: argparse.Namespace) -> int:
    answer = _request("GET", "/v1/channels")
    if args.json:
        _print_json(answer["data"])
        return 0
    rows = [[c["name"], c["model"], _follows(c), c["resolved"] or "-"] for c in answer["data"]]
    _table(["CHANNEL", "MODEL", "VERSION", "NOW"], rows)
    return 0


def _follows(channel: dict[str, Any]) -> str:
    stage = channel.get("stage")
    return str(channel["version"] or (f"({stage})" if stage else "(newest)"))


@_pipe_safe
def channel_delete(args: argparse.Namespace) -> int:
    _request("DELETE", f"/v1/channels/{args.name}", headers=_actor_header())
    print(f"channel {args.name} deleted")
    return 0
