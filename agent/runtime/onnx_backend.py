"""ONNX Runtime implementation of :class:`~.backend.InferenceBackend`.

Execution providers come from the firmware profile's backends (:func:`providers_for`,
pure): ``onnxruntime-trt`` / ``-cuda`` / ``-cpu`` in the profile's order of preference,
keeping only what this onnxruntime build has, CPU always last as the fallback.
onnxruntime's own exceptions never leave this module: a file
that does not parse is an :class:`ArtifactError`, anything else a
:class:`RuntimeBackendError`, each with a one-line reason.

A model loaded while another one serves frames (the agent's installs) asks for a
``background`` load: ONNX Runtime's graph optimisation, most of a session's creation cost,
then runs in a thread of its own at the lowest CPU priority (Linux ``nice`` 19), on one
thread, and writes the optimised graph to a temporary file; the session that will serve is
then created from that file with optimisation off (a few ms) in the caller's thread, so its
thread pool keeps the normal priority. On a box with few cores the serving model thus
keeps the CPU while the next one is prepared. CPU execution provider only: a compiled
provider (TensorRT, CUDA graphs) cannot save its graph, and loads on the GPU anyway.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from edgefleet.agent.runtime.backend import ModelInfo
from edgefleet.agent.runtime.metadata import model_info
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

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
BACKGROUND_NICE = 19  # the lowest CPU priority on Linux: only idle CPU time
NO_SPINNING = ("session.intra_op.allow_spinning", "0")  # idle pool threads sleep


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


def _optimise_at_low_priority(path: Path, out: Path) -> None:
    """ONNX Runtime's graph optimisation of ``path`` into ``out``, on one thread of its own
    at nice 19 with no pool threads: a thread's priority cannot be raised back without
    CAP_SYS_NICE, so it ends with the optimisation and serves nothing."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1  # no pool threads: all the work on the low-priority thread
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry(*NO_SPINNING)
    opts.optimized_model_filepath = str(out)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except OSError as e:  # still correct, only less polite to the serving model
            log.warning("could not lower the model loader's priority: %s", e)
        try:
            _create(path, opts, [(CPU, {})], name=path.name)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=work, name="onnx-optimise", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
        *,
        background: bool = False,
    ) -> None:
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self.intra_op_threads = intra_op_threads  # 0: onnxruntime decides
        self.provider_options = dict(provider_options or {})  # provider -> its options
        self.background = background  # optimise at the lowest priority (see the module doc)
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
        with tempfile.TemporaryDirectory(prefix="edgefleet-ort-") as tmp:
            optimised = Path(tmp) / path.name
            _optimise_at_low_priority(path, optimised)
            opts = self._options()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return _create(optimised, opts, self._provider_list(), name=path.name)

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
