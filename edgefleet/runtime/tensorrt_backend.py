"""Native TensorRT implementation of :class:`~.backend.InferenceBackend` (tensorrt + pycuda).

One CUDA stream, page-locked (pinned) host buffers and device buffers allocated once at
load, asynchronous host->device and device->host copies around ``execute_async_v3``, one
synchronize per frame. ``tensorrt`` and ``pycuda`` are imported when a plan is loaded, never
at import time, so this module costs nothing on a CPU-only device.

The CUDA context is the device's primary context, pushed around every call: the plan is
loaded in the reconcile thread and run in the frame-loop thread, and a pycuda context is
current on one thread at a time. A plan carries no Ultralytics metadata; its ModelInfo is
the JSON file written beside it when it was built (``engine_cache.write_info``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.backend import ModelInfo
from edgefleet.runtime.engine_cache import read_info
from edgefleet.shared.errors import ArtifactError, RuntimeBackendError


def _import_gpu() -> tuple[Any, Any]:
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeBackendError(
            f"the tensorrt backend needs tensorrt and pycuda ({e.name} is missing)"
        ) from e
    return trt, cuda


class TensorRTBackend:  # pragma: no cover - needs an NVIDIA GPU with TensorRT
    name = "tensorrt"

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._trt: Any = None
        self._cuda: Any = None
        self._ctx: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._input = ""
        self._host: dict[str, Any] = {}  # tensor name -> pinned numpy array
        self._dev: dict[str, Any] = {}  # tensor name -> device allocation
        self._outputs: list[str] = []
        self._input_shape: tuple[int, ...] = ()

    def load(self, path: Path) -> ModelInfo:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"engine file not found: {path}")
        info = read_info(path)
        trt, cuda = _import_gpu()
        self._trt, self._cuda = trt, cuda
        cuda.init()
        self._ctx = cuda.Device(self.device).retain_primary_context()
        self._ctx.push()
        try:
            self._deserialize(path)
            self._allocate()
        finally:
            self._ctx.pop()
        self._input_shape = tuple(self._host[self._input].shape)
        return info

    def _deserialize(self, path: Path) -> None:
        trt = self._trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:  # built for another GPU or TensorRT version, or not a plan
            raise ArtifactError(f"{path.name} is not a TensorRT engine this device can run")
        self._engine, self._context = engine, engine.create_execution_context()
        self._stream = self._cuda.Stream()

    def _allocate(self) -> None:
        trt, cuda, engine = self._trt, self._cuda, self._engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            host = cuda.pagelocked_empty(shape, dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self._host[name], self._dev[name] = host, dev
            self._context.set_tensor_address(name, int(dev))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._input = name
            else:
                self._outputs.append(name)

    def warm_up(self, runs: int = 2) -> None:
        dummy = np.zeros(self._input_shape, dtype=np.float32)
        for _ in range(runs):
            self.run(dummy)

    def run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        if self._engine is None:
            raise RuntimeBackendError("backend has no engine loaded")
        cuda, stream = self._cuda, self._stream
        self._ctx.push()
        try:
            np.copyto(self._host[self._input], tensor, casting="same_kind")
            cuda.memcpy_htod_async(self._dev[self._input], self._host[self._input], stream)
            if not self._context.execute_async_v3(stream.handle):
                raise RuntimeBackendError("TensorRT inference failed")
            for name in self._outputs:
                cuda.memcpy_dtoh_async(self._host[name], self._dev[name], stream)
            stream.synchronize()
        except cuda.Error as e:
            raise RuntimeBackendError(f"CUDA error during inference: {e}") from e
        finally:
            self._ctx.pop()
        # copies: the pinned buffers are overwritten by the next frame
        return [np.array(self._host[n], dtype=np.float32) for n in self._outputs]

    def close(self) -> None:
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            for dev in self._dev.values():
                dev.free()
            self._dev.clear()
            self._context = self._engine = self._stream = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
