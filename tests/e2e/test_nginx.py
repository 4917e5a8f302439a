"""deploy/nginx/edgefleet.conf in front of a real controller (``--offload-prefix``): nginx
sends the /tuf files (Range, ETag / 304, its download limit's 503 + Retry-After) and
still only the files the controller picks. Skipped when nginx is not installed."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.settings import Settings

from edgefleet.devbroker import free_port
from edgefleet.tiny_models import big_onnx
from tests.controller.fleet import (
    production_server,
    production_services,
    read_head,
    stalled_get,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "nginx" / "edgefleet.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
PREFIX = "/_edgefleet_files"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")


def _site(controller_port: int, port: int, data: Path, limit: int) -> str:
    """The shipped config with only its ports, data folder and download limit changed."""
    text = CONF.read_text()
    for old, new in [("server 127.0.0.1:8601;", f"server 127.0.0.1:{controller_port};"),
                     ("listen 8600;", f"listen 127.0.0.1:{port};"),
                     ("alias /var/lib/edgefleet-controller/;", f"alias {data}/;"),
                     ("edgefleet_downloads 256;", f"edgefleet_downloads {limit};")]:  # fmt: skip
        assert text.count(old) == 1, f"deploy/nginx/edgefleet.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@contextmanager
def nginx(tmp: Path, site: str, port: int) -> Iterator[None]:
    tmp.mkdir()
    (tmp / "edgefleet.conf").write_text(site)
    temps = " ".join(f"{k}_temp_path {tmp}/{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    (tmp / "nginx.conf").write_text(
        f"user {getpass.getuser()};\nworker_processes 1;\ndaemon off;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\nevents {{ worker_connections 512; }}\n"
        f"http {{ access_log off; {temps} include {tmp}/edgefleet.conf; }}\n"
    )
    proc = subprocess.Popen([str(NGINX), "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, what="nginx")
        assert proc.poll() is None, (tmp / "error.log").read_text()
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_nginx_sends_the_registered_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    services = production_services(Settings(data_dir=data, offload_prefix=PREFIX))
    model = big_onnx(tmp_path / "m.onnx", 8 * 1024 * 1024)
    with production_server(services) as (ctl_port, _app):
        port = free_port()
        site = _site(ctl_port, port, data.resolve(), limit=1)
        with (
            nginx(tmp_path / "nginx", site, port),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
        ):
            with model.open("rb") as f:  # a push through the proxy
                r = client.post("/v1/models/m/versions", files={"file": ("m.onnx", f)})
            assert r.status_code == 200, r.text
            target = f"/tuf/image/targets/models/m/v1/{r.json()['sha256']}.model.onnx"
            body = model.read_bytes()

            full = client.get(target)
            assert full.status_code == 200 and full.content == body
            assert full.headers["server"].startswith("nginx")
            assert "x-accel-redirect" not in full.headers
            part = client.get(target, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == body[100:200]
            same = client.get(target, headers={"If-None-Match": full.headers["etag"]})
            assert same.status_code == 304

            meta = client.get("/tuf/image/metadata/timestamp.json")
            assert meta.status_code == 200 and meta.json()["signed"]["_type"] == "timestamp"
            assert meta.headers["content-type"] == "application/json"
            assert meta.headers["cache-control"] == "no-cache"
            poll = client.get("/tuf/image/metadata/timestamp.json",
                              headers={"If-None-Match": meta.headers["etag"]})  # fmt: skip
            assert poll.status_code == 304

            # Still only what the controller picks: no other version, no internal path.
            assert client.get(target.replace("/m/v1/", "/m/v2/")).status_code == 404
            assert client.get(f"{PREFIX}/edgefleet.db").status_code == 404
            assert client.get(f"{PREFIX}/keys/").status_code == 404

            slow = stalled_get(port, target)  # holds the one download slot (limit=1)
            try:
                assert read_head(slow) == "HTTP/1.1 200 OK"
                busy = client.get(target)
                assert busy.status_code == 503 and busy.headers["retry-after"] == "10"
            finally:
                slow.close()
            wait_until(lambda: client.get(target).status_code == 200, what="a free slot")
    services.engine.dispose()
