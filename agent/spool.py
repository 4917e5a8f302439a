"""A bounded on-disk spool: what must survive a broker outage or a restart until it is sent.

Each entry is one or more files named by a growing sequence number, ``<seq>.<ext>``; its
index file (``<seq>.json``) is written last and durably (temp file, fsync, rename, fsync
the folder), so an entry either exists whole or not at all. When the bound is reached the
oldest entries make room and are counted as dropped: within the bound nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgefleet.shared.durable import write_bytes

log = logging.getLogger(__name__)
INDEX = "json"


@dataclass(frozen=True)
class Entry:
    folder: Path
    seq: int

    @property
    def name(self) -> str:
        return f"{self.seq:012d}"

    def path(self, ext: str = INDEX) -> Path:
        return self.folder / f"{self.name}.{ext}"

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}.*"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files() if p.is_file())


class DiskSpool:
    def __init__(
        self, folder: Path, *, max_entries: int = 1000, max_bytes: int | None = None
    ) -> None:
        self.folder = folder
        self.max_entries = max_entries  # entries kept; the oldest go first
        self.max_bytes = max_bytes  # bytes for all entries together; None: no byte cap
        self.dropped = 0  # entries removed to make room
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        self._clean_partial()
        self._next = max((e.seq for e in self.entries()), default=0) + 1

    def _clean_partial(self) -> None:
        """Files of an entry whose index was never written (a crash mid-put)."""
        indexed = {p.stem for p in self.folder.glob(f"*.{INDEX}")}
        for p in self.folder.iterdir():
            if p.is_file() and (p.name.startswith(".") or p.stem not in indexed):
                with contextlib.suppress(OSError):
                    p.unlink()

    def entries(self) -> list[Entry]:
        """Oldest first."""
        seqs = sorted(int(p.stem) for p in self.folder.glob(f"*.{INDEX}") if p.stem.isdigit())
        return [Entry(self.folder, s) for s in seqs]

    def __len__(self) -> int:
        return len(self.entries())

    def put(self, index: bytes, extras: Mapping[str, bytes] | None = None) -> Entry:
        with self._lock:
            entry = Entry(self.folder, self._next)
            self._next += 1
            for ext, data in (extras or {}).items():
                write_bytes(entry.path(ext), data)
            write_bytes(entry.path(INDEX), index)  # last: the entry now exists
            self._enforce(len(index) + sum(len(d) for d in (extras or {}).values()))
        return entry

    def _enforce(self, _added: int) -> None:
        entries = self.entries()
        while len(entries) > self.max_entries:
            self._drop(entries.pop(0))
        if self.max_bytes is not None:
            sizes = [e.size() for e in entries]
            while len(entries) > 1 and sum(sizes) > self.max_bytes:
                self._drop(entries.pop(0))
                sizes.pop(0)

    def _drop(self, entry: Entry) -> None:
        self.remove(entry)
        self.dropped += 1
        log.warning("spool %s full: dropped its oldest entry %s", self.folder.name, entry.name)

    def remove(self, entry: Entry) -> None:
        # The index goes first: a crash half-way leaves extras that start-up cleans.
        with contextlib.suppress(FileNotFoundError):
            entry.path(INDEX).unlink()
        for p in entry.files():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
