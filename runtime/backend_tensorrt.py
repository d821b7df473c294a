"""TensorRT backend: the two engines on one CUDA stream, through TensorRT's name-based tensor API.

- A scene's video, keys and values live on the device from ``encode`` until the scene is dropped.
- The query buffers (uv, t, six outputs) are allocated once, at the decoder profile's maximum N, and reused by
  every batch; a batch sets its input shapes, the tensor addresses, and runs ``execute_async_v3``.
- Optional CUDA graphs: one captured graph per (scene, batch size), each with its own execution context (a graph
  fixes the shapes and addresses it was captured with). Worth it for small batches, where launch overhead counts.

Written against the TensorRT 10 / 11 Python API and cuda-python's runtime bindings (docs.nvidia.com,
nvidia.github.io/cuda-python). It has not been run: the machines this project is built on have no TensorRT (see the
README). Version notes:
- cuda-python: ``cuda.bindings.runtime`` since 12.6; the old ``cuda.cudart`` path was deprecated then and removed in
  13.0 (cuda-bindings 13.0.0 release notes). Calls return ``(cudaError_t, value...)``. ``int(handle)`` for a
  stream's address is deprecated in 13.0 in favour of ``cuda.bindings.utils.get_cuda_native_handle``.
- TensorRT 10 and 11 share the name-based tensor API used here (num_io_tensors, get_tensor_name / mode / dtype /
  shape, get_tensor_profile_shape, set_input_shape, set_tensor_address, execute_async_v3; TensorRT 10.x -> 11.x
  migration guide). Every context of an engine starts on optimization profile 0 (IExecutionContext Python docs);
  several contexts may share it here because they all run on the one stream, never concurrently.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d4rt.runtime.manifest import (
    BUILD_HINT,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    Manifest,
    check_engine_compat,
    check_engines_match_graphs,
    check_files,
    engine_files,
)

INSTALL_HINT = (
    "install TensorRT and cuda-python (`pip install tensorrt cuda-python`, or `pip install d4rt[tensorrt]`; "
    "NVIDIA's wheels need an NVIDIA GPU and driver), or use backend='onnxruntime'"
)


def import_tensorrt():
    """``import tensorrt``, or an ImportError that says what to install."""
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError(f"TensorRT is not installed: {INSTALL_HINT}") from e
    return tensorrt


def import_cudart():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise ImportError(f"cuda-python is not installed: {INSTALL_HINT}") from e
    return cudart


def native_handle(cuda_object) -> int:
    """The address behind a cuda-python handle (a cudaStream_t), as TensorRT's ``execute_async_v3`` wants it."""
    if isinstance(cuda_object, int):
        return cuda_object
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # cuda-python >= 12.9 / 13
    except ImportError:
        return int(cuda_object)
    return int(get_cuda_native_handle(cuda_object))


# TensorRT DataType member name -> numpy dtype, for the types these engines use (and a few more). Read by name so
# the table works whether or not this TensorRT still has ``trt.nptype``; types numpy cannot hold (BF16, FP8, INT4)
# are refused with a clear error rather than guessed.
TENSORRT_NUMPY_DTYPES = {
    "FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
    "UINT8": np.uint8, "BOOL": np.bool_,
}


def numpy_dtype(trt_dtype) -> np.dtype:
    """numpy dtype of a ``tensorrt.DataType`` (or of its member name, e.g. "HALF")."""
    name = trt_dtype if isinstance(trt_dtype, str) else getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in TENSORRT_NUMPY_DTYPES:
        raise ValueError(
            f"engine tensor of TensorRT type {name} has no numpy equivalent (expected one of "
            f"{sorted(TENSORRT_NUMPY_DTYPES)}); re-export the graphs with `d4rt export` (float32 or float16)"
        )
    return np.dtype(TENSORRT_NUMPY_DTYPES[name])


def cuda_call(cudart, result):
    """cuda-python calls return (error, value...): raise on error, return the value(s)."""
    err, *values = result
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name} ({err})")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of a CUDA device."""
    cudart = import_cudart()
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name=name.rstrip("\x00").strip(), compute_capability=f"{prop.major}.{prop.minor}")


class DeviceBuffer:
    """cudaMalloc'd memory, freed when the object is collected."""

    def __init__(self, cudart, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(cudart, cudart.cudaMalloc(max(self.nbytes, 1))))
        self._finalizer = weakref.finalize(self, cudart.cudaFree, self.ptr)


class PinnedArray:
    """A numpy array in page-locked host memory (cudaMallocHost), so copies to and from the device are async."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype: np.dtype):
        import ctypes

        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        ptr = int(cuda_call(cudart, cudart.cudaMallocHost(max(count * dtype.itemsize, 1))))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        self.ptr = ptr
        self._finalizer = weakref.finalize(self, cudart.cudaFreeHost, ptr)


class TrtSceneState:
    """A scene's device buffers: video (encoder and decoder input), keys and values (encoder output)."""

    def __init__(self, buffers: dict[str, DeviceBuffer], shapes: dict[str, tuple[int, ...]]):
        self.buffers = buffers
        self.shapes = shapes  # video [1, T, 3, S, S], keys / values [L, 1, H, M, Dh] of this clip's T
        self.token = object()  # identity for CUDA-graph caching


class TensorRTBackend:
    """encoder.engine / decoder.engine from ``d4rt build-engine``, checked against this machine first."""

    def __init__(
        self,
        directory: str | Path,
        manifest: Manifest,
        cuda_graphs: bool = False,
        device: int = 0,
        verify_checksums: bool = True,
    ):
        import warnings

        directory = Path(directory)
        files = engine_files(manifest, directory)  # files first: a clear error even where TensorRT is missing
        check_files(files, "TensorRT engine", BUILD_HINT, verify_checksums)
        check_engines_match_graphs(manifest)
        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        cuda_call(cudart, cudart.cudaSetDevice(device))
        gpu = gpu_info(device)
        for message in check_engine_compat(manifest.engines, trt.__version__, gpu.name, gpu.compute_capability):
            warnings.warn(message, stacklevel=3)
        self.name = "tensorrt"
        self.manifest = manifest
        self.cuda_graphs = cuda_graphs

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if manifest.engines.get("version_compatible"):
            # Version-compatible plans embed the lean runtime (host code); allowed only for engines we built.
            self._runtime.engine_host_code_allowed = True
        self.encoder = self._deserialize(files[0][0])
        self.decoder = self._deserialize(files[1][0])
        self._check_io(self.encoder, "encoder", ENCODER_INPUTS, ENCODER_OUTPUTS)
        self._check_io(self.decoder, "decoder", DECODER_INPUTS, DECODER_OUTPUTS)
        self.encoder_context = self.encoder.create_execution_context()
        self.decoder_context = self.decoder.create_execution_context()
        self.stream = cuda_call(cudart, cudart.cudaStreamCreate())
        self._stream_handle = native_handle(self.stream)

        # The decoder profile's N range: batches above max_queries are split by the runtime.
        min_shape, _, max_shape = self.decoder.get_tensor_profile_shape("uv", 0)
        self.min_queries, self.max_queries = int(min_shape[1]), int(max_shape[1])

        # Query buffers, allocated once for the largest batch and reused.
        self._host: dict[str, PinnedArray] = {}
        self._device: dict[str, DeviceBuffer] = {}
        for name in ("uv", "t", *DECODER_OUTPUTS):
            shape = tuple(self.decoder.get_tensor_shape(name))
            shape = tuple(self.max_queries if d < 0 else d for d in shape)
            dtype = numpy_dtype(self.decoder.get_tensor_dtype(name))
            self._host[name] = PinnedArray(cudart, shape, dtype)
            self._device[name] = DeviceBuffer(cudart, self._host[name].array.nbytes)
        self._graphs: dict[int, tuple[object, object, object]] = {}  # n -> (context, graph exec, scene token)

    # ----- set-up helpers ----------------------------------------------------------------------------------------
    def _deserialize(self, path: Path):
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ValueError(
                f"TensorRT could not deserialize {path} (built by another TensorRT version or for another GPU, or "
                f"corrupt); {BUILD_HINT}"
            )
        return engine

    def _check_io(self, engine, graph: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        found_in = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        found_out = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        if set(found_in) != set(inputs) or set(found_out) != set(outputs):
            raise ValueError(
                f"the {graph} engine has inputs {found_in} and outputs {found_out}, expected {inputs} and {outputs}; "
                f"{BUILD_HINT}"
            )

    @staticmethod
    def _set_address(context, name: str, ptr: int) -> None:
        if not context.set_tensor_address(name, ptr):
            raise RuntimeError(f"TensorRT refused the address of tensor {name!r} (see the TensorRT log above)")

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        cuda_call(self._cudart, self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream))

    def _synchronize(self) -> None:
        cuda_call(self._cudart, self._cudart.cudaStreamSynchronize(self.stream))

    # ----- the two steps ----------------------------------------------------------------------------------------
    def encode(self, video: np.ndarray, aspect_ratio: np.ndarray) -> TrtSceneState:
        cudart, engine, context = self._cudart, self.encoder, self.encoder_context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        host = {"video": np.ascontiguousarray(video), "aspect_ratio": np.ascontiguousarray(aspect_ratio)}
        # The frame axis is dynamic (profile T in [min_frames, num_frames]): set this clip's input shape first;
        # the context then knows every output shape (keys / values with M = T / tt * tokens per slice + 1).
        if not context.set_input_shape("video", host["video"].shape):
            raise ValueError(
                f"TensorRT refused a video of shape {list(host['video'].shape)} (encoder profile: frames in "
                f"{list(self.manifest.frame_range)}); {BUILD_HINT}"
            )
        buffers, shapes = {}, {}
        for name in (*ENCODER_INPUTS, *ENCODER_OUTPUTS):
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            shapes[name] = shape
            dtype = numpy_dtype(engine.get_tensor_dtype(name))
            if name in host and (host[name].shape != shape or host[name].dtype != dtype):
                # A copy of the wrong size would overrun the device buffer: refuse before copying.
                raise ValueError(
                    f"encoder input {name!r} is {host[name].dtype}{list(host[name].shape)}, the engine takes "
                    f"{dtype}{list(shape)}"
                )
            buffers[name] = DeviceBuffer(cudart, int(np.prod(shape)) * dtype.itemsize)
            self._set_address(context, name, buffers[name].ptr)
        for name, array in host.items():
            self._copy(buffers[name].ptr, array.ctypes.data, array.nbytes, h2d)
        if not context.execute_async_v3(self._stream_handle):
            raise RuntimeError("TensorRT failed to run the encoder engine (see the TensorRT log above)")
        self._synchronize()  # the host arrays must outlive their copies
        del buffers["aspect_ratio"]
        return TrtSceneState(buffers, shapes)

    def decode(self, state: TrtSceneState, uv: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        cudart = self._cudart
        n = uv.shape[1]
        if not self.min_queries <= n <= self.max_queries:
            raise ValueError(
                f"a batch of {n} queries is outside the engine profile [{self.min_queries}, {self.max_queries}]"
            )
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in (("uv", uv), ("t", t)):
            staged = self._host[name].array[:, :n]
            staged[...] = array
            self._copy(self._device[name].ptr, self._host[name].ptr, staged.nbytes, h2d)

        if self.cuda_graphs:
            self._launch_graph(state, n)
        else:
            self._bind_decoder(self.decoder_context, state, n)
            if not self.decoder_context.execute_async_v3(self._stream_handle):
                raise RuntimeError("TensorRT failed to run the decoder engine (see the TensorRT log above)")

        out = {}
        for name in DECODER_OUTPUTS:
            host = self._host[name].array[:, :n]
            self._copy(self._host[name].ptr, self._device[name].ptr, host.nbytes, d2h)
            out[name] = host
        self._synchronize()
        return out  # views of the pinned buffers: valid until the next decode (Runtime.query copies them at once)

    def _bind_decoder(self, context, state: TrtSceneState, n: int) -> None:
        shapes = [(name, state.shapes[name]) for name in ("video", "keys", "values")]
        for name, shape in (*shapes, ("uv", (1, n, 2)), ("t", (1, n, 3))):
            if not context.set_input_shape(name, shape):
                raise ValueError(
                    f"TensorRT refused input {name!r} of shape {shape} (decoder profile: N in "
                    f"[{self.min_queries}, {self.max_queries}], frames in {list(self.manifest.frame_range)})"
                )
        for name in ("video", "keys", "values"):
            self._set_address(context, name, state.buffers[name].ptr)
        for name in ("uv", "t", *DECODER_OUTPUTS):
            self._set_address(context, name, self._device[name].ptr)

    def _launch_graph(self, state: TrtSceneState, n: int) -> None:
        """Replay the CUDA graph for (scene, n), capturing it first when needed.

        A graph fixes the input shapes and tensor addresses it was captured with, so each batch size has its own
        execution context, and a graph is captured again when a new scene (new video / keys / values buffers) comes.
        """
        cudart = self._cudart
        context, graph_exec, token = self._graphs.get(n, (None, None, None))
        if context is None:
            context = self.decoder.create_execution_context()
        if graph_exec is None or token is not state.token:
            if graph_exec is not None:
                cuda_call(cudart, cudart.cudaGraphExecDestroy(graph_exec))
            self._bind_decoder(context, state, n)
            # One plain run first: it lets TensorRT do its shape-dependent set-up outside the capture.
            if not context.execute_async_v3(self._stream_handle):
                raise RuntimeError("TensorRT failed to run the decoder engine (see the TensorRT log above)")
            self._synchronize()
            # Capture as in TensorRT's developer guide (CUDA Graphs): global capture mode, one execute_async_v3.
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
            cuda_call(cudart, cudart.cudaStreamBeginCapture(self.stream, mode))
            try:
                captured = context.execute_async_v3(self._stream_handle)
            finally:  # always end the capture, or the stream stays unusable
                graph = cuda_call(cudart, cudart.cudaStreamEndCapture(self.stream))
            if not captured:
                cuda_call(cudart, cudart.cudaGraphDestroy(graph))
                raise RuntimeError("TensorRT could not run the decoder inside a CUDA graph capture; use "
                                   "cuda_graphs=False")
            # cudaGraphInstantiateWithFlags(graph, flags): one signature in cuda-python 11.4 to 13, unlike
            # cudaGraphInstantiate, whose arguments changed with CUDA 12.
            graph_exec = cuda_call(cudart, cudart.cudaGraphInstantiateWithFlags(graph, 0))
            cuda_call(cudart, cudart.cudaGraphDestroy(graph))
            self._graphs[n] = (context, graph_exec, state.token)
        cuda_call(cudart, cudart.cudaGraphLaunch(graph_exec, self.stream))

    def keys_values(self, state: TrtSceneState) -> tuple[np.ndarray, np.ndarray]:
        d2h = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        out = []
        for name in ENCODER_OUTPUTS:
            shape = state.shapes[name]
            host = np.empty(shape, numpy_dtype(self.encoder.get_tensor_dtype(name)))
            self._copy(host.ctypes.data, state.buffers[name].ptr, host.nbytes, d2h)
            out.append(host)
        self._synchronize()
        return out[0], out[1]

    def synchronize(self) -> None:
        self._synchronize()
