"""ONNX Runtime implementation of :class:`~.backend.InferenceBackend`.

Execution providers come from the firmware profile's backends (:func:`providers_for`,
pure): ``onnxruntime-trt`` / ``-cuda`` / ``-cpu`` in the profile's order of preference,
keeping only what this onnxruntime build has, CPU always last as the fallback.
onnxruntime's own exceptions never leave this module: a file
that does not parse is an :class:`ArtifactError`, anything else a
:class:`RuntimeBackendError`, each with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.metadata import model_info
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError

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


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self.intra_op_threads = intra_op_threads  # 0: onnxruntime decides
        self.provider_options = dict(provider_options or {})  # provider -> its options
        self._session: ort.InferenceSession | None = None
        self._input_name = ""
        self._input_shape: tuple[int, ...] = ()

    def load(self, path: Path) -> ModelInfo:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"model file not found: {path}")
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeBackendError(f"onnxruntime has no {', '.join(missing)} on this machine")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only; warnings would go to stderr of the CLI
        opts.intra_op_num_threads = self.intra_op_threads
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=opts,
                providers=[(p, dict(self.provider_options.get(p, {}))) for p in self.providers],
            )
        except _CORRUPT as e:
            raise ArtifactError(f"{path.name} is not a valid ONNX model: {_one_line(e)}") from e
        except ort_state.Fail as e:
            raise ArtifactError(f"{path.name} could not be loaded: {_one_line(e)}") from e
        except Exception as e:  # onnxruntime raises many unrelated types
            raise RuntimeBackendError(
                f"onnxruntime could not load {path.name}: {_one_line(e)}"
            ) from e
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        props = dict(session.get_modelmeta().custom_metadata_map)
        info = model_info(props, list(inp.shape), list(out.shape))
        self._session, self._input_name = session, inp.name
        self._input_shape = (1, 3, *info.imgsz)
        return info

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
