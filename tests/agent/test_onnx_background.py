"""A background load (graph optimised in an idle-priority child process, then loaded with
optimisation off) serves exactly what a plain load serves, leaves the caller's priority
alone, fails a bad model as a plain load does, and loads the plain way when the child
cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest
from edgefleet.shared.errors import ArtifactError

from edgefleet.runtime.detector import Detector
from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend

MODELS = Path(__file__).resolve().parents[2] / "models"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread nice")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
@pytest.mark.parametrize("model", ["shapes/v2/model.onnx", "yolo11n-shapes/model.onnx"])
def test_background_load_detects_what_a_plain_load_does(
    model: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = _nice()
    plain = Detector.from_onnx(MODELS / model)
    quiet = Detector.from_backend(OnnxRuntimeBackend(background=True), MODELS / model)
    try:
        assert _nice() == before  # only the optimising child ran at idle priority
        assert "plain way" not in caplog.text  # the child did optimise it
        assert quiet.info == plain.info  # the model's metadata survives the optimised copy
        images = sorted((MODELS / "samples").glob("*.jpg"))[:3]
        for path in images:
            image = cv2.imread(str(path))
            assert image is not None
            assert quiet.detect(image) == plain.detect(image), path.name
    finally:
        plain.close()
        quiet.close()


@linux_only
def test_background_load_of_a_bad_model_is_an_artifact_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match=r"^broken\.onnx is not a valid ONNX model"):
        OnnxRuntimeBackend(background=True).load(bad)


@linux_only
def test_background_load_without_a_child_process_loads_the_plain_way(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    backend = OnnxRuntimeBackend(background=True)
    info = backend.load(MODELS / "shapes/v2/model.onnx")
    assert info.imgsz == (160, 160)
    backend.warm_up(1)
    backend.close()
    assert "loading it the plain way" in caplog.text


@linux_only
def test_an_optimised_copy_that_cannot_be_written_still_loads_the_model(tmp_path: Path) -> None:
    """A full disk (here a file size limit under the model's size, as the crash tests use)
    stops the optimised copy; the committed model must still load, the plain way."""
    model = MODELS / "shapes/v2/model.onnx"
    limit = model.stat().st_size // 2
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG, as ENOSPC, not a kill
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from edgefleet.runtime.onnx_backend import OnnxRuntimeBackend\n"
        "b = OnnxRuntimeBackend(background=True)\n"
        f"print(b.load(__import__('pathlib').Path({str(model)!r})).imgsz)\n"
        "b.warm_up(1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(160, 160)"
    assert "loading it the plain way" in done.stderr
