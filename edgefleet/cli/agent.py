"""``edgefleet infer`` and ``edgefleet agent run|enroll``: the device side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.base import group
from edgefleet.cli.output import JsonFlag

app = group("the on-device agent")
ConfigFile = Annotated[Path, typer.Option("--config", help="agent YAML config file")]


def infer(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="image files")],
    model: Annotated[Path, typer.Option("--model", help="exported ONNX model")],
    as_json: JsonFlag = False,
    conf: Annotated[float, typer.Option("--conf", help="confidence threshold")] = 0.25,
    iou: Annotated[float, typer.Option("--iou", help="NMS IoU threshold")] = 0.7,
) -> None:
    """Run a model on images and print detections (--json: one JSON line per image)."""
    from edgefleet.agent.infer_cmd import run

    run(model, images, conf=conf, iou=iou, as_json=as_json)


@app.command("run")
def agent_run(config: ConfigFile) -> None:
    """Run the agent daemon."""
    from edgefleet.agent.daemon import run_from_file

    code = run_from_file(config)
    if code:
        raise typer.Exit(code)


@app.command("enroll")
def agent_enroll(
    config: ConfigFile,
    token: Annotated[str, typer.Option("--token", help="from `edgefleet device token ID`")],
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA bundle for an https controller URL")
    ] = None,
) -> None:
    """Get this device's certificate and trust roots."""
    from edgefleet.agent.config import load_config
    from edgefleet.agent.enroll import enroll
    from edgefleet.shared.errors import ConfigError

    loaded = load_config(config)
    if not token.strip():
        raise ConfigError("give the enrollment token from `edgefleet device token`")
    ident = enroll(loaded.controller_url, loaded.device_id, loaded.data_dir, token.strip(), ca)
    print(f"enrolled {loaded.device_id}: key, certificate and CA in {ident.key.parent}; "
          f"TUF roots pinned in {loaded.data_dir / 'trust'}")  # fmt: skip
    if ident.upload_token is not None:
        print(f"sample uploads: the device's upload credential in {ident.upload_token}")
    print(f"broker over mTLS: mqtt_url: mqtts://HOST:8883 and tls: {{ca: {ident.ca}, "
          f"cert: {ident.cert}, key: {ident.key}}}")  # fmt: skip
