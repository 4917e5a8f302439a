"""The operator CLI as a user runs it: subprocesses against a real controller process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgefleet.shared.hashing import sha256_file

from edgefleet.devbroker import free_port

START_TIMEOUT = 30.0  # seconds
SERVE = [sys.executable, "-m", "edgefleet", "controller", "serve", "--insecure-dev"]


def run_cli(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    # Upload progress may precede the error; the error itself is one line.
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("upload")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgefleet: error: ")
    for n in needles:
        assert n in lines[0]


def start_controller(data: Path, port: int) -> subprocess.Popen[str]:
    # A broker port nobody listens on: the controller must serve REST regardless.
    mqtt = f"mqtt://127.0.0.1:{free_port()}"
    argv = [*SERVE, "--data", str(data), "--mqtt", mqtt, "--listen", f"127.0.0.1:{port}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_healthy(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0]
            pytest.fail(f"controller did not start:\n{out}")
        time.sleep(0.1)


@pytest.fixture
def controller_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_controller(tmp_path / "data", port)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("controller ignored SIGTERM")
        assert proc.returncode == 0, out
        assert "Traceback" not in out


def _register_device(data: Path, device_id: str, **labels: str) -> None:
    """Write a device row into the running controller's database, as its MQTT ingest would
    on the device's first status message (there is no broker in these tests)."""
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.models.devices import Device
    from edgefleet.controller.settings import Settings
    from sqlmodel import Session

    engine = make_engine(Settings(data_dir=data).db_url)
    with Session(engine) as s:
        s.add(Device(device_id=device_id, labels=labels))
        s.commit()
    engine.dispose()


def test_push_list_rollout_status(controller_url: str, onnx_model: Path, tmp_path: Path) -> None:
    pushed = run_cli("model", "push", "shapes", str(onnx_model), url=controller_url)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed shapes:v1 (release 1" in pushed.stdout
    assert "bytes" in pushed.stderr  # upload progress

    listed = run_cli("model", "list", url=controller_url)
    assert listed.returncode == 0 and "shapes" in listed.stdout and "v1" in listed.stdout
    as_json = json.loads(run_cli("model", "list", "--json", url=controller_url).stdout)
    assert as_json[0]["name"] == "shapes" and as_json[0]["versions"][0]["release"] == 1

    devices = run_cli("device", "list", "--json", url=controller_url)
    assert devices.returncode == 0 and json.loads(devices.stdout) == []
    table = run_cli("device", "list", url=controller_url)
    headers = ["DEVICE", "ONLINE", "MODEL", "VERSION", "DESIRED", "BY", "RELEASE", "PHASE",
               "SINCE", "LABELS", "WAITING", "ERROR"]  # fmt: skip
    assert table.stdout.split()[:12] == headers

    # A rollout to nobody is refused at creation, not reported as done.
    create = ("rollout", "create", "shapes:v1", "--selector", "site=a")
    assert_one_line_error(run_cli(*create, url=controller_url), "no device is registered yet")
    _register_device(tmp_path / "data", "cam-b", site="b")
    assert_one_line_error(
        run_cli(*create, url=controller_url), "selector site=a matches none of the 1 registered"
    )
    _register_device(tmp_path / "data", "cam-a", site="a")

    created = run_cli(*create, url=controller_url)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("rollout 1: shapes:v1 to site=a")
    status = json.loads(run_cli("rollout", "status", "1", "--json", url=controller_url).stdout)
    assert (status["id"], status["selector"], status["matching"]) == (1, {"site": "a"}, 1)


def test_errors_are_one_line(controller_url: str, onnx_model: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("rollout", "create", "nope:v1", url=controller_url), "unknown model 'nope'"
    )
    assert_one_line_error(run_cli("rollout", "create", "nope", url=controller_url), "NAME:VERSION")
    assert_one_line_error(run_cli("rollout", "status", "99", url=controller_url), "unknown rollout")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a model")
    assert_one_line_error(
        run_cli("model", "push", "shapes", str(bad), url=controller_url), "not a valid ONNX model"
    )
    assert_one_line_error(
        run_cli("model", "push", "shapes", str(tmp_path / "missing.onnx"), url=controller_url),
        "no such file",
    )
    assert run_cli("model", "push", "shapes", str(onnx_model), url=controller_url).returncode == 0
    assert_one_line_error(
        run_cli("model", "push", "shapes", str(onnx_model), "--version", "v1", url=controller_url),
        "already has version 'v1'",
    )


def test_unreachable_controller(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("model", "list"), ("device", "list", "--json"), ("rollout", "status", "1")):
        assert_one_line_error(run_cli(*args, url=url), f"cannot reach the controller at {url}")


def test_serve_port_in_use_is_one_line(controller_url: str, tmp_path: Path) -> None:
    port = controller_url.rsplit(":", 1)[1]
    argv = [*SERVE, "--data", str(tmp_path / "d2"), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert_one_line_error(proc, f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--mqtt", "http://x"], "bad --mqtt 'http://x': expected mqtt://"),
        (["--listen", "nonsense"], "bad --listen"),
        (["--database-url", "nosuchdb://x"], "bad database URL"),
        (["--listen", "0.0.0.0:8600"], "loopback only"),
    ],
)
def test_serve_bad_settings_are_one_line(tmp_path: Path, extra: list[str], needle: str) -> None:
    argv = [*SERVE, "--data", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert_one_line_error(proc, needle)


@pytest.mark.export
@pytest.mark.slow
def test_push_pt_exports_onnx_first(controller_url: str, tmp_path: Path, repo_root: Path) -> None:
    pytest.importorskip("ultralytics", reason="needs the export extra")
    pt = repo_root / "models" / "shapes" / "v1" / "model.pt"
    if not pt.is_file():
        pytest.skip("models/shapes/v1/model.pt is not in this checkout")
    before = {p.name for p in pt.parent.iterdir()}
    pushed = run_cli("model", "push", "shapes", str(pt), url=controller_url, timeout=300)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed shapes:v1" in pushed.stdout
    assert {p.name for p in pt.parent.iterdir()} == before  # nothing written beside the .pt
    versions = httpx.get(f"{controller_url}/v1/models/shapes/versions").json()["data"]
    assert versions[0]["format"] == "onnx" and versions[0]["length"] > 0
    lineage = httpx.get(f"{controller_url}/v1/models/shapes/versions/v1/lineage").json()["lineage"]
    assert lineage["weights"] == {"file": "model.pt", "sha256": sha256_file(pt)}
    assert lineage["export"]["format"] == "onnx" and lineage["export"]["imgsz"]
    assert lineage["onnx"]["sha256"] == versions[0]["sha256"] and lineage["versions"]["ultralytics"]


def test_plan_push_list_approve(controller_url: str, onnx_model: Path, tmp_path: Path) -> None:
    """A publisher's plan is signed at once; a device's shared plan waits for `approve`."""
    url = controller_url
    assert run_cli("model", "push", "shapes", str(onnx_model), "--version", "v1",
                   url=url).returncode == 0  # fmt: skip
    plan = tmp_path / "orin.plan"
    plan.write_bytes(os.urandom(4096))
    flags = ["--compute-capability", "8.7", "--tensorrt", "8.6.2", "--precision", "fp16"]
    proc = run_cli("model", "plan", "push", "shapes:v1", str(plan), *flags, url=url)
    assert proc.returncode == 0, proc.stderr
    assert "signed models/shapes/v1/plan-sm87-trt8.6.2-fp16.plan" in proc.stdout
    with plan.open("rb") as f:  # what an agent's PlanSharer sends after building an engine
        shared = httpx.post(f"{url}/v1/devices/orin-9/plans", files={"file": ("p", f)},
                            data={"compute_capability": "7.5", "tensorrt": "10.3.0",
                                  "precision": "fp16", "model": "shapes", "version": "v1",
                                  "onnx_sha256": "0" * 64}).json()  # fmt: skip
    assert "built from ONNX" in shared["detail"]
    with plan.open("rb") as f:
        shared = httpx.post(f"{url}/v1/devices/orin-9/plans", files={"file": ("p", f)},
                            data={"compute_capability": "7.5", "tensorrt": "10.3.0",
                                  "precision": "fp16",
                                  "onnx_sha256": sha256_file(onnx_model)}).json()  # fmt: skip
    assert shared["state"] == "pending", shared
    proc = run_cli("model", "plan", "approve", str(shared["id"]), url=url)
    assert proc.returncode == 0, proc.stderr
    assert "devices of sm 7.5 with TensorRT 10.3.0 (fp16) get it from now on" in proc.stdout
    listed = json.loads(run_cli("model", "plan", "list", "shapes:v1", "--json", url=url).stdout)
    assert [(p["state"], p["source"]) for p in listed] == [
        ("signed", "publisher"), ("signed", "device:orin-9")]  # fmt: skip
    table = run_cli("model", "plan", "list", url=url).stdout
    assert "sm 8.7" in table and "signed" in table
    assert_one_line_error(run_cli("model", "plan", "approve", "99", url=url), "unknown plan 99")
    assert_one_line_error(
        run_cli("model", "plan", "push", "shapes:v1", str(plan), *flags, url=url),
        "already has a signed plan for sm87-trt8.6.2-fp16",
    )
    assert_one_line_error(
        run_cli("model", "plan", "push", "shapes:v1", str(tmp_path / "nope.plan"), *flags,
                url=url),
        "no such plan file",
    )  # fmt: skip


def test_device_list_shows_the_error() -> None:
    from edgefleet.cli.devices import DEVICE_COLUMNS, ERROR_WIDTH

    base = {"device_id": "d1", "online": True, "model": "m", "version": "v1", "phase": "FAILED",
            "labels": {}, "desired_model": "m", "desired_version": "v2"}  # fmt: skip
    long = "release 1 is lower than installed release 2; " * 5
    rows = [
        [c.cell(d) for c in DEVICE_COLUMNS]
        for d in ({**base, "error": long}, {**base, "error": None})
    ]
    assert rows[0][-1].startswith("release 1 is lower") and len(rows[0][-1]) == ERROR_WIDTH
    assert rows[1][-1] == "-"


def test_serve_requires_tokens_by_default(tmp_path: Path) -> None:
    """As shipped, nobody without a token may write, mint a token or read the audit log."""
    port = free_port()
    plain = [sys.executable, "-m", "edgefleet", "controller", "serve"]
    argv = [*plain, "--data", str(tmp_path / "d"), "--mqtt", "mqtt://127.0.0.1:9",
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=10) as client:
            admin = client.post("/v1/tokens", json={"name": "me", "role": "admin"},
                                headers={"X-Edgefleet-Actor": "admin"})  # fmt: skip
            assert admin.status_code == 401
            rollout = client.post("/v1/rollouts", json={"model": "m", "version": "v1"})
            assert rollout.status_code == 401
            assert client.get("/v1/audit").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert "INSECURE" not in (tmp_path / "serve.log").read_text()


def test_push_of_a_classifier_fails_with_one_line(controller_url: str, tmp_path: Path) -> None:
    """The controller runs the upload and refuses what the agent cannot decode (422)."""
    from tests.controller.test_detector_check import make_bad_module

    classifier = make_bad_module().make_classifier(tmp_path / "classifier.onnx")
    proc = run_cli("model", "push", "m", str(classifier), url=controller_url)
    assert_one_line_error(proc, "not a detector the agent can run", "task is 'classify'")
