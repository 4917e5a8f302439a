"""``edgefleet keys init|rotate``: the TUF repositories' key ceremonies
(controller/signing/ceremony.py)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.base import group

app = group("TUF signing keys: create the repositories, rotate keys")

DataDir = Annotated[Path, typer.Option("--data", help="controller data folder")]


class Role(str, Enum):
    root = "root"
    targets = "targets"
    snapshot = "snapshot"
    timestamp = "timestamp"
    models = "models"
    director_root = "director-root"
    director_targets = "director-targets"
    director_snapshot = "director-snapshot"
    director_timestamp = "director-timestamp"


@app.command("init")
def init(
    data: DataDir,
    offline_keys: Annotated[Path | None, typer.Option(
        "--offline-keys", metavar="DIR",
        help="where root, targets and models keys go (default DATA/offline-keys)")] = None,
    root_threshold: Annotated[int, typer.Option(
        "--root-threshold", help="root keys that must sign a new root")] = 2,
    root_keys: Annotated[int, typer.Option("--root-keys", help="root keys made")] = 3,
    models_key_online: Annotated[bool, typer.Option(
        "--models-key-online",
        help="keep the models key on the controller (plain `model push` signs)")] = False,
) -> None:  # fmt: skip
    """Image repository (root threshold) and director."""
    from edgefleet.controller.signing.ceremony import init_keys

    result = init_keys(
        data, offline_keys or data / "offline-keys", root_threshold=root_threshold,
        root_keys=root_keys, models_key_online=models_key_online,
    )  # fmt: skip
    print(f"image repository (root {root_threshold} of {root_keys}) and director "
          f"in {data / 'tuf'}")  # fmt: skip
    print(f"online keys (stay on the controller): {len(result.online_keys)} in {data / 'keys'}")
    print("OFFLINE KEYS: move these off this machine (root keys to separate holders, the "
          "models key to the publisher):")  # fmt: skip
    for pem in result.offline_keys:
        print(f"  {pem}")


@app.command("rotate")
def rotate(
    role: Annotated[Role, typer.Argument(metavar="ROLE", help="the role whose key is replaced")],
    data: Annotated[Path, typer.Option("--data", help="controller data folder (stopped)")],
    offline_keys: Annotated[Path | None, typer.Option(
        "--offline-keys", metavar="DIR",
        help="folder with the root (and targets) keys (default DATA/offline-keys)")] = None,
) -> None:  # fmt: skip
    """New key for ROLE; a new root trusts it."""
    from edgefleet.controller.signing.ceremony import DIRECTOR_ROTATABLE, rotate_key

    result = rotate_key(data, role.value, offline_keys or data / "offline-keys")
    if role.value in DIRECTOR_ROTATABLE:
        print(f"rotated the {role.value} key of every device's director repository "
              f"(root version {result.root_version or '-'}). Agents take the new key on "
              "their next refresh and refuse the old one.")  # fmt: skip
        return
    print(f"rotated the {role.value} key; root is now version {result.root_version}. "
          "Agents take the new key on their next refresh and refuse the old one.")  # fmt: skip
