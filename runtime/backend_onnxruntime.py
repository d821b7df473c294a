"""ONNX Runtime backend: the two graphs on the CPU, CUDA or TensorRT execution provider.

IO binding keeps a scene's video, keys and values where the encoder left them (on the GPU for CUDA / TensorRT):
each query batch binds only its own uv and t and copies only its outputs back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.manifest import (
    DEFAULT_QUERY_PROFILE,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    EXPORT_HINT,
    EXPORT_ID_KEY,
    Manifest,
    TensorSpec,
    check_export_ids,
    check_graph_files,
)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int32)": "int32",
             "tensor(int64)": "int64"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "the onnxruntime backends need ONNX Runtime: `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (CUDA / TensorRT execution providers)"
        ) from e
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers of the installed ONNX Runtime ([] when it is not installed)."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except ImportError:
        return []


@dataclass
class OrtSceneState:
    """A scene's device-resident tensors (ort.OrtValue): video, and the encoder's keys and values."""

    video: Any
    keys: Any
    values: Any


class OnnxRuntimeBackend:
    """encoder.onnx / decoder.onnx in ONNX Runtime on one execution provider ("cpu" | "cuda" | "tensorrt")."""

    max_queries = None  # ONNX Runtime takes any N (its TensorRT provider: its profile's max, set in _providers)

    def __init__(
        self,
        directory: str | Path,
        manifest: Manifest,
        provider: str = "cpu",
        threads: int | None = None,
        verify_checksums: bool = True,
        device_id: int = 0,
    ):
        ort = import_onnxruntime()
        if provider not in PROVIDERS:
            raise ValueError(f"unknown ONNX Runtime provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise ValueError(
                f"ONNX Runtime has no {PROVIDERS[provider]} here (available: {available}); install "
                f"`onnxruntime-gpu` with a matching CUDA for 'cuda' / 'tensorrt', or use backend='onnxruntime-cpu'"
            )
        directory = Path(directory)
        check_graph_files(manifest, directory, verify_checksums)
        self.name = f"onnxruntime-{provider}"
        self.manifest = manifest
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.device_id = device_id
        self._ort = ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        providers = self._providers(provider, directory)
        self.encoder = self._session(directory / manifest.graphs["encoder"]["file"], options, providers)
        self.decoder = self._session(directory / manifest.graphs["decoder"]["file"], options, providers)
        self._check_io(self.encoder, "encoder", ENCODER_INPUTS, ENCODER_OUTPUTS)
        self._check_io(self.decoder, "decoder", DECODER_INPUTS, DECODER_OUTPUTS)
        check_export_ids(manifest, {
            graph: session.get_modelmeta().custom_metadata_map.get(EXPORT_ID_KEY)
            for graph, session in (("encoder", self.encoder), ("decoder", self.decoder))
        }, str(directory))

    def _providers(self, provider: str, directory: Path) -> list:
        if provider == "cpu":
            return ["CPUExecutionProvider"]
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_id})
        if provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        # TensorRT execution provider: engines are built by ONNX Runtime on first use and cached beside the graphs,
        # with the same query profile as `d4rt build-engine`'s defaults; the runtime splits batches above its max.
        self.max_queries = DEFAULT_QUERY_PROFILE[2]
        profile = {
            f"trt_profile_{level}_shapes": f"uv:1x{n}x2,t:1x{n}x3"
            for level, n in zip(("min", "opt", "max"), DEFAULT_QUERY_PROFILE)
        }
        trt_options = {
            "device_id": self.device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(directory / "ort_trt_cache"),
            "trt_timing_cache_enable": True,
            **profile,
        }
        return [("TensorrtExecutionProvider", trt_options), cuda, "CPUExecutionProvider"]

    def _session(self, path: Path, options, providers):
        try:
            return self._ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"ONNX Runtime cannot load {path} ({type(e).__name__}: {e}); {EXPORT_HINT}") from e

    def _check_io(self, session, graph: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        expected = {s.name: s for s in self.manifest.tensors(graph, "inputs") + self.manifest.tensors(graph, "outputs")}
        found = {a.name: a for a in list(session.get_inputs()) + list(session.get_outputs())}
        names_in = tuple(a.name for a in session.get_inputs())
        names_out = tuple(a.name for a in session.get_outputs())
        if names_in != inputs or names_out != outputs:
            raise ValueError(
                f"{graph}.onnx has inputs {names_in} and outputs {names_out}, expected {inputs} and {outputs}; "
                f"{EXPORT_HINT}"
            )
        for name, spec in expected.items():
            arg = found[name]
            shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)  # "N", "T", "M" by name
            dtype = ORT_TYPES.get(arg.type, arg.type)
            if TensorSpec(name, shape, dtype) != spec:
                raise ValueError(
                    f"{graph}.onnx tensor {name} is {list(shape)} {dtype} but the manifest says {list(spec.shape)} "
                    f"{spec.dtype}; the graph and its manifest do not belong together: {EXPORT_HINT}"
                )

    # ----- the two steps ----------------------------------------------------------------------------------------
    def encode(self, video: np.ndarray, aspect_ratio: np.ndarray) -> OrtSceneState:
        """video [1, T, 3, S, S] float32, aspect_ratio [1] float32 -> the scene's device-resident tensors."""
        ort = self._ort
        video_value = ort.OrtValue.ortvalue_from_numpy(video, self.device, self.device_id)
        binding = self.encoder.io_binding()
        binding.bind_ortvalue_input("video", video_value)
        binding.bind_cpu_input("aspect_ratio", aspect_ratio)
        for name in ENCODER_OUTPUTS:
            binding.bind_output(name, self.device, self.device_id)
        self.encoder.run_with_iobinding(binding)
        keys, values = binding.get_outputs()
        return OrtSceneState(video=video_value, keys=keys, values=values)

    def decode(self, state: OrtSceneState, uv: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """uv [1, n, 2] float32, t [1, n, 3] int32 -> the six raw outputs (logits for visibility / confidence)."""
        binding = self.decoder.io_binding()
        binding.bind_ortvalue_input("video", state.video)
        binding.bind_ortvalue_input("keys", state.keys)
        binding.bind_ortvalue_input("values", state.values)
        binding.bind_cpu_input("uv", uv)
        binding.bind_cpu_input("t", t)
        for name in DECODER_OUTPUTS:
            binding.bind_output(name, "cpu")
        self.decoder.run_with_iobinding(binding)
        return dict(zip(DECODER_OUTPUTS, binding.copy_outputs_to_cpu()))

    def keys_values(self, state: OrtSceneState) -> tuple[np.ndarray, np.ndarray]:
        """The scene's keys and values copied to the host (for checks and benchmarks)."""
        return state.keys.numpy(), state.values.numpy()
