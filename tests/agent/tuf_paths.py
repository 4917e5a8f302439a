"""What a test TUF server answers for a URL path: the controller's layout, read from disk."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def metadata_file(data_dir: Path, path: str) -> bytes | None:
    """Bytes of ``/tuf/image/metadata/F`` or ``/tuf/director/<id>/metadata/F``, else None."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["tuf", "image", "metadata"] and len(parts) == 4:
        file = data_dir / "tuf" / "image" / "metadata" / parts[3]
    elif parts[:2] == ["tuf", "director"] and len(parts) == 5 and parts[3] == "metadata":
        file = data_dir / "tuf" / "director" / parts[2] / "metadata" / parts[4]
    else:
        return None
    return file.read_bytes() if file.is_file() else None


def artifact_url_path(target_path: str, sha256: str) -> str:
    """Where the controller serves a target's bytes (hash-prefixed file name)."""
    dirname, _, basename = target_path.rpartition("/")
    return f"/tuf/image/targets/{dirname}/{sha256}.{basename}"


class LocalServer:
    """A threaded HTTP server on a free loopback port, for ``with``; subclasses give the
    handler class. ``url`` is its base URL."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
