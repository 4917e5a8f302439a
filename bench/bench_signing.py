"""Director signing cost per device, one at a time vs in batches, in one run.

``python bench/bench_signing.py --devices 1000 [--batch 250] [--database-url URL]``: a
fresh data folder (with ``--database-url``: the metadata in that database, as
``--tuf-store database`` keeps it; give an empty one), one signed model target, then four
passes over the same devices, each timed:

* first assignment, one device per call (``assign``: creates the chain, then re-signs);
* re-assignment, one device per call;
* first assignment in batches (``assign_many``, fresh devices);
* re-assignment in batches.

Prints ms per device for each and the batch / single ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgefleet.controller.db import make_engine
from edgefleet.controller.models.tuf import TufMetadata
from edgefleet.controller.signing import TargetInfo, TufRepositories
from edgefleet.controller.signing._chain import pruning_done
from edgefleet.controller.signing.storage import DatabaseStore
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col


def _timed(fn: Callable[..., object], *args: object) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def bench(devices: int, batch: int, database_url: str | None = None) -> dict[str, float]:
    engine = make_engine(database_url) if database_url else None
    with tempfile.TemporaryDirectory(prefix="edgefleet-sign-") as tmp:
        folder = Path(tmp)
        store = DatabaseStore(engine) if engine is not None else None
        repos = TufRepositories(folder / "data", store=store)
        artifact = folder / "model.onnx"
        artifact.write_bytes(b"x" * 4096)
        v1 = repos.image.add_model_target("m", "v1", 1, artifact)
        v2 = repos.image.add_model_target("m", "v2", 2, artifact)
        single = [f"one-{i:05d}" for i in range(devices)]
        many = [f"many-{i:05d}" for i in range(devices)]

        def one_by_one(ids: list[str], target: TargetInfo) -> None:
            for d in ids:
                repos.assign(d, [target])

        def batched(ids: list[str], target: TargetInfo) -> None:
            for i in range(0, len(ids), batch):
                repos.assign_many({d: [target] for d in ids[i : i + batch]})

        times = {
            "single_first": _timed(one_by_one, single, v1),
            "single_again": _timed(one_by_one, single, v2),
            "batch_first": _timed(batched, many, v1),
            "batch_again": _timed(batched, many, v2),
        }
        for d in many:  # a third assignment: without pruning each adds three files
            repos.assign_many({d: [v1]})
        pruning_done(timeout=120)
        files = _director_files(folder, engine)
    out = {f"{k}_ms_per_device": round(v * 1000 / devices, 3) for k, v in times.items()}
    out["first_batch_over_single"] = round(times["batch_first"] / times["single_first"], 3)
    out["again_batch_over_single"] = round(times["batch_again"] / times["single_again"], 3)
    # root, current and previous targets and snapshot, timestamp: 6 (10 without pruning)
    out["director_files_per_device"] = round(files / (2 * devices), 2)
    return out


def _director_files(folder: Path, engine: Engine | None) -> int:
    if engine is None:
        return sum(1 for _ in (folder / "data/tuf/director").rglob("*.json"))
    with engine.connect() as c:
        stmt = select(func.count()).where(col(TufMetadata.repo).like("director/%"))
        return int(c.execute(stmt).scalar_one())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--database-url", default=None, help="keep the metadata in this database")
    args = p.parse_args(argv)
    if args.devices < 1 or args.batch < 1:
        print("error: --devices and --batch must be at least 1", file=sys.stderr)
        return 2
    print(json.dumps({"devices": args.devices, "batch": args.batch,
                      **bench(args.devices, args.batch, args.database_url)}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
