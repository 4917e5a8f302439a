"""ONNX Runtime implementation of :class:`~.backend.InferenceBackend`.

Execution providers come from the firmware profile's backends (:func:`providers_for`,
pure): ``onnxruntime-trt`` / ``-cuda`` / ``-cpu`` in the profile's order of preference,
keeping only what this onnxruntime build has, CPU always last as the fallback.
onnxruntime's own exceptions never leave this module: a file
that does not parse is an :class:`ArtifactError`, anything else a
:class:`RuntimeBackendError`, each with a one-line reason.

A model loaded while another one serves frames (the agent's installs) asks for a
``background`` load: ONNX Runtime's graph optimisation, most of a session's creation cost,
then runs in a child process at the lowest CPU priority (``SCHED_IDLE``, else ``nice``
19), on one thread, and writes the optimised graph to a temporary file; the session that
will serve is then created from that file with optimisation off (a few ms) in the caller's
thread, at normal priority. On a box with few cores the serving model thus keeps the CPU
while the next one is prepared: the kernel lets a normal thread that wakes up preempt a
``SCHED_IDLE`` one at once, whereas a nice-19 one may keep the core for the rest of its
time slice, and the serving model's pool threads wake up for every operator. Its idle pool
threads sleep rather than spin (they would take the cores from everything else on the
box). A process, not a thread: onnxruntime holds the GIL while it parses a model, and a
low-priority thread preempted with the GIL held stalls the frame loop for as long as it
waits for a core (measured: 75 to 110 ms on a loaded box, 20 ms for a plain load).
Idle priority alone still cost a paced source frames on an idle 2-core box (frames ran
slower while the child ran): with a ``foreground`` (the frame
loop's :class:`~.foreground.Foreground`) the child is also stopped while the loop has a
frame, and runs only while it waits for one.
Whenever the child leaves no whole optimised copy (the model is invalid, the child cannot
run, the disk is full) the model loads the plain way, which gives the verdict: a copy that
cannot be written never costs a device its model. CPU execution provider only: a compiled
provider (TensorRT, CUDA graphs) cannot save its graph, and loads on the GPU anyway.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.foreground import Foreground
from edgefleet.runtime.metadata import model_info
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
DEFAULT_PROVIDERS = (CPU,)
# firmware profile backend -> onnxruntime execution provider ("tensorrt" is the native backend)
PROVIDER_FOR = {
    "onnxruntime-trt": "TensorrtExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-cpu": CPU,
}
# Raised by onnxruntime when the bytes are not a valid model graph.
_CORRUPT = (ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile)
# Idle pool threads sleep instead of spinning: measured on the loaded 2-core box, a paced
# loop used half the CPU (2.5 s against 4.7 to 5.7 s for 300 frames) at a lower p50.
NO_SPINNING = ("session.intra_op.allow_spinning", "0")
OPTIMISE_TIMEOUT_S = 600.0  # seconds; at idle priority on a saturated box it gets little CPU
POLL_S = 0.25  # seconds between looks at a child paused for the frame loop (foreground.py)
# The child: SCHED_IDLE (or nice 19 where refused), one thread, no spinning; exit 3 invalid
# model, 4 unloadable, reason on stderr. Started with -S so that the interpreter's start-up
# (site-packages, about 40 ms of CPU) already runs at that priority. Inline, so it does not
# depend on where this package lives.
_OPTIMISE = """
import ctypes, os, sys
try:
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: never outlive the agent
except (AttributeError, OSError):
    pass
os.setpriority(os.PRIO_PROCESS, 0, 19)
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    pass
import site
site.main()
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as st
o = ort.SessionOptions()
o.log_severity_level = 3
o.intra_op_num_threads = o.inter_op_num_threads = 1
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
o.optimized_model_filepath = sys.argv[2]
try:
    ort.InferenceSession(sys.argv[1], sess_options=o, providers=["CPUExecutionProvider"])
except (st.InvalidProtobuf, st.InvalidGraph, st.NoSuchFile, st.Fail) as e:
    lines = str(e).strip().splitlines()
    print(lines[-1][:200] if lines else type(e).__name__, file=sys.stderr)
    sys.exit(4 if isinstance(e, st.Fail) else 3)
"""


def providers_for(backends: Sequence[str], available: Sequence[str]) -> list[str]:
    """Execution providers for a profile's ``backends``, in its order, that ``available``
    (``ort.get_available_providers()``) has; CPU is always there as the last resort."""
    chosen = [PROVIDER_FOR[b] for b in backends if b in PROVIDER_FOR]
    out = [p for p in dict.fromkeys(chosen) if p in available]
    if CPU not in out:
        out.append(CPU)
    return out


def provider_options_for(
    precision: str, engine_cache_dir: Path | None
) -> dict[str, dict[str, str]]:
    """Options for the TensorRT execution provider: FP16 where the profile says so, and its
    engines cached on disk so a restart does not rebuild them."""
    trt: dict[str, str] = {"trt_fp16_enable": "True" if precision == "fp16" else "False"}
    if engine_cache_dir is not None:
        trt["trt_engine_cache_enable"] = "True"
        trt["trt_engine_cache_path"] = str(engine_cache_dir)
    return {"TensorrtExecutionProvider": trt}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[-1] if text else type(e).__name__
    return line[:200]


def _create(
    path: Path,
    opts: ort.SessionOptions,
    providers: Sequence[tuple[str, dict[str, str]]],
    *,
    name: str,
) -> ort.InferenceSession:
    """A session, onnxruntime's errors turned into ours (``name``: the model's file name)."""
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except _CORRUPT as e:
        raise ArtifactError(f"{name} is not a valid ONNX model: {_one_line(e)}") from e
    except ort_state.Fail as e:
        raise ArtifactError(f"{name} could not be loaded: {_one_line(e)}") from e
    except Exception as e:  # onnxruntime raises many unrelated types
        raise RuntimeBackendError(f"onnxruntime could not load {name}: {_one_line(e)}") from e


def _optimise_at_low_priority(path: Path, out: Path, foreground: Foreground | None) -> bool:
    """ONNX Runtime's graph optimisation of ``path`` into ``out`` in an idle-priority child,
    paused while ``foreground``'s frame loop has a frame; False when the child did not leave
    a whole optimised copy, whatever the reason: the model itself, or the copy's own write
    (a full disk, a file size limit). The plain load that follows then gives the model's
    verdict, so a copy that cannot be written never costs a device its model."""
    cmd = [sys.executable, "-S", "-c", _OPTIMISE, str(path), str(out)]
    try:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        log.warning("background load of %s failed (%s): loading it the plain way", path.name, e)
        return False
    with child, foreground.attached(child.pid) if foreground else nullcontext():
        stderr = _wait_for(child, foreground)
        if stderr is None:
            log.warning("background load of %s took over %.0f s: loading it the plain way",
                        path.name, OPTIMISE_TIMEOUT_S)  # fmt: skip
            return False
    if child.returncode != 0 or not out.is_file():
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        log.warning(
            "background load of %s failed (exit %s: %s): loading it the plain way",
            path.name, child.returncode, reason[:200],
        )  # fmt: skip
        return False
    return True


def _wait_for(child: subprocess.Popen[str], foreground: Foreground | None) -> str | None:
    """The child's stderr once it exits, or None (killed) after ``OPTIMISE_TIMEOUT_S``;
    meanwhile ``foreground`` lets a child stopped too long run on."""
    deadline = time.monotonic() + OPTIMISE_TIMEOUT_S
    while True:
        try:
            return child.communicate(timeout=POLL_S)[1]
        except subprocess.TimeoutExpired:
            if foreground is not None:
                foreground.poll()
            if time.monotonic() > deadline:
                child.kill()
                child.communicate()
                return None


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
        *,
        background: bool = False,
        foreground: Foreground | None = None,
    ) -> None:
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self.intra_op_threads = intra_op_threads  # 0: onnxruntime decides
        self.provider_options = dict(provider_options or {})  # provider -> its options
        self.background = background  # optimise at the lowest priority (see the module doc)
        self.foreground = foreground  # the frame loop that background work gives way to
        self._session: ort.InferenceSession | None = None
        self._input_name = ""
        self._input_shape: tuple[int, ...] = ()

    @property
    def cpu_only(self) -> bool:
        """Runs on the CPU alone (a warm-up between frames then takes no GPU time)."""
        return self.providers == [CPU]

    def load(self, path: Path) -> ModelInfo:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"model file not found: {path}")
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeBackendError(f"onnxruntime has no {', '.join(missing)} on this machine")
        if self.background and self.cpu_only and sys.platform.startswith("linux"):
            session = self._load_in_background(path)
        else:
            session = _create(path, self._options(), self._provider_list(), name=path.name)
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        props = dict(session.get_modelmeta().custom_metadata_map)
        info = model_info(props, list(inp.shape), list(out.shape))
        self._session, self._input_name = session, inp.name
        self._input_shape = (1, 3, *info.imgsz)
        return info

    def _options(self) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only; warnings would go to stderr of the CLI
        opts.intra_op_num_threads = self.intra_op_threads
        return opts

    def _provider_list(self) -> list[tuple[str, dict[str, str]]]:
        return [(p, dict(self.provider_options.get(p, {}))) for p in self.providers]

    def _load_in_background(self, path: Path) -> ort.InferenceSession:
        opts = self._options()
        opts.add_session_config_entry(*NO_SPINNING)
        with tempfile.TemporaryDirectory(prefix="edgefleet-ort-") as tmp:
            optimised = Path(tmp) / path.name
            if _optimise_at_low_priority(path, optimised, self.foreground):
                fast = self._options()
                fast.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                fast.add_session_config_entry(*NO_SPINNING)
                try:
                    return _create(optimised, fast, self._provider_list(), name=path.name)
                except (ArtifactError, RuntimeBackendError) as e:  # a torn copy, not the model
                    log.warning("optimised copy of %s did not load (%s): loading it the plain "
                                "way", path.name, e)  # fmt: skip
        return _create(path, opts, self._provider_list(), name=path.name)

    def _require(self) -> ort.InferenceSession:
        if self._session is None:
            raise RuntimeBackendError("backend has no model loaded")
        return self._session

    def warm_up(self, runs: int = 2) -> None:
        dummy = np.zeros(self._input_shape, dtype=np.float32)
        for _ in range(runs):
            self.run(dummy)

    def run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        session = self._require()
        try:
            outputs = session.run(None, {self._input_name: tensor})
        except Exception as e:
            raise RuntimeBackendError(f"onnxruntime inference failed: {_one_line(e)}") from e
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def close(self) -> None:
        self._session = None
