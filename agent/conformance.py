"""``edgefleet-tuf-client``: the agent's TUF client behind tuf-conformance's CLIENT-CLI.

The protocol (theupdateframework/tuf-conformance, CLIENT-CLI.md)::

    edgefleet-tuf-client --metadata-dir DIR init TRUSTED_ROOT
    edgefleet-tuf-client --metadata-dir DIR --metadata-url URL refresh
    edgefleet-tuf-client --metadata-dir DIR --metadata-url URL --target-name PATH
        [--target-name PATH ...] --target-base-url URL --target-dir DIR download

It runs the agent's own pieces: :class:`edgefleet.agent.updater.Repository` (ngclient
with durable, fsync'd metadata writes), the :class:`DeadlineFetcher` with the agent's
deadlines, and the same updater file lock. Only the transport differs: the suite serves
plain HTTP on loopback, which this mode allows. Exit 0 on success, 1 on any failure, with
one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.updater import Repository
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import EdgefleetError
from tuf.api import exceptions

log = logging.getLogger("edgefleet-tuf-client")

LOCK_TIMEOUT_S = 60.0  # seconds to wait for another client on the same metadata dir


def init(metadata_dir: Path, trusted_root: Path) -> None:
    """Pin ``trusted_root`` as the trusted root; no network (the protocol asks none)."""
    write_bytes(metadata_dir / "root.json", trusted_root.read_bytes())


def refresh(metadata_dir: Path, metadata_url: str, fetcher: DeadlineFetcher) -> None:
    Repository(metadata_dir, _dir_url(metadata_url), fetcher, bootstrap=None).refresh()


def download(
    metadata_dir: Path,
    metadata_url: str,
    *,
    target_names: Sequence[str],
    target_dir: Path,
    target_base_url: str,
    fetcher: DeadlineFetcher,
) -> None:
    """Download each target in order with one updater; stop at the first failure."""
    target_dir.mkdir(parents=True, exist_ok=True)
    updater = Repository(
        metadata_dir,
        _dir_url(metadata_url),
        fetcher,
        bootstrap=None,
        target_dir=target_dir,
        target_base_url=_dir_url(target_base_url),
    )
    for name in target_names:
        info = updater.get_targetinfo(name)
        if info is None:
            raise LookupError(f"{name} is not a signed target")
        if updater.find_cached_target(info) is None:
            updater.download_target(info)


def _dir_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


@contextlib.contextmanager
def _locked(metadata_dir: Path) -> Iterator[None]:
    from edgefleet.agent.updater import lock_exclusive

    metadata_dir.mkdir(parents=True, exist_ok=True)
    with (metadata_dir / ".lock").open("a") as f:
        lock_exclusive(f.fileno(), LOCK_TIMEOUT_S, metadata_dir)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgefleet-tuf-client",
        description="edgefleet's TUF client, speaking tuf-conformance's CLIENT-CLI protocol",
    )
    p.add_argument("--metadata-dir", required=True, type=Path)
    p.add_argument("--metadata-url")
    p.add_argument("--target-name", action="append", default=[])
    p.add_argument("--target-dir", type=Path)
    p.add_argument("--target-base-url")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="trust the given root").add_argument("trusted_root", type=Path)
    sub.add_parser("refresh", help="update top-level metadata")
    sub.add_parser("download", help="refresh, then download and verify targets")
    return p


def _run(args: argparse.Namespace) -> None:
    if args.command == "init":
        init(args.metadata_dir, args.trusted_root)
        return
    if not args.metadata_url:
        raise ValueError("--metadata-url is required")
    fetcher = DeadlineFetcher(FetcherConfig(deadline_s=60.0, timeout_s=10.0))
    try:
        with _locked(args.metadata_dir):
            if args.command == "refresh":
                refresh(args.metadata_dir, args.metadata_url, fetcher)
            elif not (args.target_name and args.target_dir and args.target_base_url):
                raise ValueError("download needs --target-name, --target-dir, --target-base-url")
            else:
                download(
                    args.metadata_dir,
                    args.metadata_url,
                    target_names=args.target_name,
                    target_dir=args.target_dir,
                    target_base_url=args.target_base_url,
                    fetcher=fetcher,
                )
    finally:
        fetcher.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    try:
        _run(args)
    except (exceptions.RepositoryError, exceptions.DownloadError, EdgefleetError) as e:
        print(f"edgefleet-tuf-client: refused: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, LookupError) as e:
        print(f"edgefleet-tuf-client: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
