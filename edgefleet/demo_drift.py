"""The demo's drift scene and ``edgefleet demo --retrain``: for edgefleet/demo_run.py.

How the demo wires it (demo_run.py owns the fleet):

1. ``frames = prepare_frames(work, "store-south")`` before the agents start, and give the
   agents of that site ``source.path = frames`` (the others keep ``models/samples``). The
   folder source rereads its files every loop, so changing them changes what the camera sees.
2. After the rollouts, ``data_yaml = drift_scene(client, say, env=env, frames=frames,
   model_path=MODELS / "shapes/v2/model.onnx", export_dir=work / "dataset")``: makes sure
   the running version has a model card (baseline), darkens the store's light, waits for
   its drift alert, for low-confidence samples, and exports them as a YOLO dataset.
3. With ``--retrain``: ``retrain_scene(client, say, env=env, data_yaml=data_yaml,
   base_pt=MODELS / "shapes/v2/model.pt", frames=frames, work=work)`` fine-tunes on the
   export with Ultralytics, pushes the result (its card measured on the dark frames) and
   canaries it to the dark store, then prints the drift of both versions.

Every wait has a timeout that becomes an :class:`EdgefleetError` with one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

from edgefleet.shared.errors import ArtifactError, ConfigError, EdgefleetError

if TYPE_CHECKING:
    from ultralytics.engine.trainer import BaseTrainer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "models" / "samples"
Say = Callable[[str], None]


def prepare_frames(work: Path, site: str) -> Path:
    """A copy of the shipped sample images that the scene can relight: ``work/frames/site``."""
    frames = work / "frames" / site
    frames.mkdir(parents=True, exist_ok=True)
    for src in sorted(SAMPLES.glob("*.jpg")):
        shutil.copyfile(src, frames / src.name)
    return frames


def set_light(frames: Path, factor: float) -> None:
    """Every frame at ``factor`` of the original brightness, each replaced atomically."""
    import cv2
    import numpy as np

    for src in sorted(SAMPLES.glob("*.jpg")):
        img = cv2.imread(str(src))
        if img is None:
            raise ArtifactError(f"cannot read image {src}")
        dark = np.clip(img.astype(np.float32) * factor, 0, 255).astype(np.uint8)
        tmp = frames / f".{src.stem}.tmp.jpg"
        cv2.imwrite(str(tmp), dark)
        tmp.replace(frames / src.name)


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if value := check():
                return value
        time.sleep(1.0)
    raise EdgefleetError(f"demo: timed out after {timeout:.0f} s waiting for {what}")


def _cli(env: dict[str, str], say: Say, *args: str) -> str:
    say(f"$ edgefleet {' '.join(args)}")
    argv = [sys.executable, "-m", "edgefleet", *args]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise EdgefleetError(f"edgefleet {' '.join(args[:2])} failed: {out.stderr.strip()}")
    if out.stdout.strip():
        say(out.stdout.rstrip())
    return out.stdout


def ensure_card(
    client: httpx.Client, say: Say, *, model: str, version: str, model_path: Path, frames: Path
) -> None:
    """The running version's model card (the drift baseline), measured on ``frames``."""
    if client.get(f"/v1/models/{model}/versions/{version}/card").status_code == 200:
        return
    from edgefleet.controller.cards import build_card

    say(f"model card for {model}:{version}: validating on {frames}")
    card = build_card(model_path, frames, model, version)
    r = client.put(f"/v1/models/{model}/versions/{version}/card",
                   json=card.model_dump(mode="json", by_alias=True))  # fmt: skip
    if r.status_code != 200:
        raise EdgefleetError(f"storing the model card failed: {r.text}")


def drift_scene(
    client: httpx.Client,
    say: Say,
    *,
    env: dict[str, str],  # environment for the CLI (EDGEFLEET_URL set)
    frames: Path,  # the folder some agents read (prepare_frames)
    model_path: Path,  # ONNX of the version those agents run, for its card
    export_dir: Path,  # where `samples export` writes the dataset
    model: str = "shapes",
    version: str = "v2",
    factor: float = 0.35,  # brightness after the change
    timeout: float = 180.0,  # seconds per wait
) -> Path:
    """Darken one store; show its alert, its samples, and export them. Returns data.yaml."""
    ensure_card(client, say, model=model, version=version, model_path=model_path, frames=frames)
    say(f"\n== drift: the light in {frames.name} drops to {factor:.0%} ==")
    seen = {a["id"] for a in client.get("/v1/alerts").json()["data"]}

    def new_alert() -> dict[str, Any] | None:
        firing = client.get("/v1/alerts", params={"state": "firing"}).json()["data"]
        return next((a for a in firing if a["id"] not in seen), None)

    set_light(frames, factor)
    alert = _wait("a drift alert", new_alert, timeout)
    say(f"alert: {alert['scope']} {alert['metric']}={alert['value']:.2f} "
        f"(fires above {alert['threshold']}) labels {alert['labels']}")  # fmt: skip
    _cli(env, say, "alerts", "list")
    device = alert["device_id"]
    _wait(f"low-confidence frames from {device}", lambda: client.get(
        "/v1/samples", params={"device_id": device}).json()["count"] >= 3, timeout)  # fmt: skip
    _cli(env, say, "samples", "list", "--device", device, "--limit", "5")
    _cli(env, say, "samples", "export", "--format", "yolo", "--out", str(export_dir))
    return export_dir / "data.yaml"


def retrain(data_yaml: Path, base_pt: Path, out_dir: Path, *, epochs: int = 5) -> Path:
    """Fine-tune ``base_pt`` on the exported samples with Ultralytics; returns the ONNX.

    Runs in a child process (``python -m edgefleet.demo_drift``): torch and Ultralytics
    stay out of the caller, and their output goes to ``out_dir/train.log``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "train.log"
    argv = [sys.executable, "-m", "edgefleet.demo_drift", str(data_yaml), str(base_pt),
            str(out_dir), str(epochs)]  # fmt: skip
    with log.open("wb") as f:
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=False)
    final = out_dir / "model.onnx"
    if done.returncode != 0 or not final.is_file():
        lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
        raise EdgefleetError(f"fine-tuning failed: {lines[-1]} (log: {log})")
    return final


def annotated_set(exported: Path, out: Path, *, factor: float, n_train: int = 160,
                  n_val: int = 40, seed: int = 11) -> Path:  # fmt: skip
    """The exported samples plus a stand-in for the annotator's work, as one data.yaml.

    The device's detections on dark frames are weak pseudo-labels (the model barely sees
    there); in real life an annotator corrects them. Here the repository's synthetic
    generator stands in: labelled images in the store's new light (``factor``).
    """
    import importlib.util

    import cv2
    import numpy as np
    import yaml

    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "models/make_dataset.py")
    if spec is None or spec.loader is None:
        raise ConfigError("models/make_dataset.py not found: run the demo from a clone")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(out, n_train, n_val, seed)
    for img_path in (out / "images").rglob("*.jpg"):
        img = cv2.imread(str(img_path))
        if img is None:
            raise ArtifactError(f"cannot read image {img_path}")
        dark = np.clip(img.astype(np.float32) * factor, 0, 255).astype(np.uint8)
        cv2.imwrite(str(img_path), dark)
    names = yaml.safe_load(exported.read_text())["names"]
    base = exported.parent.resolve()
    data = {
        "path": str(out.resolve()),
        "train": [str(out.resolve() / "images/train"), str(base / "images/train")],
        "val": str(out.resolve() / "images/val"),
        "names": names,
    }
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data))
    return data_yaml


def _train(data_yaml: Path, base_pt: Path, out_dir: Path, epochs: int) -> Path:
    """The child's work. Offline on purpose: no AMP check, no plots (they download).
    ``pretrained=True`` loads ``base_pt``'s own weights (local; with False Ultralytics
    starts the network from scratch and a few epochs leave it detecting nothing)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise ConfigError(
            "--retrain needs the export extra: pip install 'edgefleet[export]'"
        ) from e
    model = YOLO(str(base_pt))
    model.train(
        data=str(data_yaml), epochs=epochs, imgsz=160, batch=16, device="cpu", workers=0,
        plots=False, pretrained=True, amp=False, val=False, seed=0, deterministic=True,
        exist_ok=True, project=str(out_dir), name="finetune", warmup_epochs=0.5, verbose=False,
        optimizer="SGD", lr0=0.002,  # a gentle fine-tune of a trained model
    )  # fmt: skip
    # ultralytics declares Model.trainer as None until train() has set it
    trainer = cast("BaseTrainer", model.trainer)
    best = Path(trainer.best)
    if not best.is_file():  # val=False on a tiny set: no "best" was chosen
        best = Path(trainer.last)
    onnx = Path(YOLO(str(best)).export(format="onnx", imgsz=160, opset=17, dynamic=False,
                                       nms=False))  # fmt: skip
    final = out_dir / "model.onnx"
    shutil.move(str(onnx), final)
    return final


def retrain_scene(
    client: httpx.Client,
    say: Say,
    *,
    env: dict[str, str],
    data_yaml: Path,  # what drift_scene exported
    base_pt: Path,  # the running version's checkpoint (models/shapes/v2/model.pt)
    frames: Path,  # the dark store's frames: the new card is measured on them
    work: Path,  # scratch folder for the training run
    model: str = "shapes",
    version: str = "v3",
    selector: dict[str, str] | None = None,  # canary cohort; default: the dark store's site
    epochs: int = 5,
    factor: float = 0.35,  # the store's light, as drift_scene set it
    timeout: float = 300.0,
) -> None:
    say(f"\n== retrain: fine-tune {base_pt.name} on the exported samples ({epochs} epochs) ==")
    say("(an annotator would correct the pseudo-labels; the synthetic generator stands in)")
    train_yaml = annotated_set(data_yaml, work / "annotated", factor=factor)
    onnx = retrain(train_yaml, base_pt, work / "retrain", epochs=epochs)
    _cli(env, say, "model", "push", model, str(onnx), "--version", version, "--validation",
         str(frames))  # fmt: skip
    sel = selector or {"site": frames.name}
    args = ["rollout", "create", f"{model}:{version}", "--stages", "1,100%"]
    for k, v in sel.items():
        args += ["--selector", f"{k}={v}"]
    _cli(env, say, *args)
    rid = max(r["id"] for r in client.get("/v1/rollouts").json()["data"])

    def ended() -> bool:
        state = client.get(f"/v1/rollouts/{rid}").json()["state"]
        return state in ("succeeded", "failed", "paused", "aborted", "rolled_back")

    _wait(f"rollout {rid} of {model}:{version}", ended, timeout)
    _cli(env, say, "rollout", "status", str(rid))
    time.sleep(15)  # a few telemetry windows on the new version
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    params: dict[str, str | int] = {
        "group_by": "site",
        "bucket_s": 0,
        "model": model,
        "since": since,
    }
    drift = [d for d in client.get("/v1/drift", params=params).json()["data"]
             if d["group"] == frames.name]  # fmt: skip
    say("drift in the dark store, each version against its own card:")
    for d in drift:
        psi = "-" if d["psi"] is None else f"{d['psi']:.2f}"
        say(f"  {d['model']}:{d['version']:<6} windows {d['windows']:>4}  PSI {psi}  "
            f"detections/frame {d['detections_per_frame']:.2f}  "
            f"low-confidence {d['low_share']:.0%}")  # fmt: skip


if __name__ == "__main__":  # the child process of retrain()
    try:
        _train(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    except EdgefleetError as err:
        print(f"edgefleet: error: {err.reason}", file=sys.stderr)
        sys.exit(1)
