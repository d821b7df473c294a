"""The TensorRT engine builder and the engine checks, everything that can be tested without TensorRT (which
cannot be installed where this project is built): options, the missing-library error, the query profile, the
engine manifest and its round trip through the runtime's compatibility checks, version parsing, the dtype table,
and that the exported graphs only use ONNX ops and types TensorRT's parser takes."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from d4rt.export.tensorrt import (
    EngineBuildOptions,
    build_engines,
    engine_section,
    network_flags,
    query_profile,
    rebase_graphs,
    tensorrt_unsupported_nodes,
)
from d4rt.runtime.backend_tensorrt import GpuInfo, numpy_dtype
from d4rt.runtime.manifest import (
    check_engine_compat,
    check_engines_match_graphs,
    major_minor,
    read_manifest,
    version_compatible_runs,
)
from tests.exported import exported


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(min_queries=0), "positive integers"),
        (dict(min_queries=64, opt_queries=16), "min <= opt <= max"),
        (dict(opt_queries=100000), "min <= opt <= max"),
        (dict(workspace_gb=0), "workspace_gb must be > 0"),
        (dict(hardware_compat="turing+"), "hardware_compat must be one of"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        EngineBuildOptions(**options).validate()


def test_timing_cache_must_be_a_file(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        EngineBuildOptions(timing_cache=str(tmp_path)).validate()


def test_missing_tensorrt_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    _, directory = exported("tiny", 4, "fp32", attention="standard")
    with pytest.raises(ImportError, match=r"TensorRT is not installed: install TensorRT and cuda-python"):
        build_engines(directory, tmp_path / "engines", EngineBuildOptions())
    assert not (tmp_path / "engines").exists()  # nothing written before the build can run
    with pytest.raises(ValueError, match="min <= opt <= max"):  # options are checked before anything else
        build_engines(directory, tmp_path, EngineBuildOptions(min_queries=9, opt_queries=8))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        build_engines(tmp_path, tmp_path / "engines")


def test_query_profile_follows_the_manifest():
    _, directory = exported("tiny", 4, "fp32")
    options = EngineBuildOptions(min_queries=2, opt_queries=300, max_queries=5000)
    manifest = read_manifest(directory)
    S, M = manifest.image_size, manifest.memory_tokens
    kv = manifest.tensors("encoder", "outputs")[0].shape
    frames = ((1, 2, 3, S, S), (1, 4, 3, S, S), (1, 4, 3, S, S))  # min 2, opt = max = T
    memory = tuple((*kv[:3], m, kv[4]) for m in ((M - 1) // 2 + 1, M, M))
    assert query_profile(manifest, options) == {
        "video": frames, "keys": memory, "values": memory,
        "uv": ((1, 2, 2), (1, 300, 2), (1, 5000, 2)),
        "t": ((1, 2, 3), (1, 300, 3), (1, 5000, 3)),
    }
    assert query_profile(manifest, options, "encoder") == {"video": frames}


def test_engine_manifest_round_trip():
    """An engine section written for this machine passes the runtime's checks; another machine's does not."""
    _, directory = exported("tiny", 4, "fp32")
    manifest = read_manifest(directory)
    options = EngineBuildOptions(opt_queries=1024, max_queries=8192, workspace_gb=4)
    gpu = GpuInfo("NVIDIA H200", "9.0")
    section = engine_section(manifest, options, "10.9.0.34", gpu, {"encoder": "a" * 64, "decoder": "b" * 64})
    assert section["profile"] == {"min": 1, "opt": 1024, "max": 8192}
    assert section["precision"].startswith("fp32 (strongly typed")
    assert section["decoder"] == {"file": "decoder.engine", "sha256": "b" * 64,
                                  "onnx_sha256": manifest.graphs["decoder"]["sha256"], "export_id": manifest.export_id}
    assert section["frame_profile"] == {"min": 2, "opt": 4, "max": 4}
    manifest.engines = section
    check_engines_match_graphs(manifest)
    assert check_engine_compat(section, "10.9.0.34", "NVIDIA H200", "9.0") == []

    with pytest.raises(ValueError, match=r"TensorRT 10.9.0.34, this machine has TensorRT 10.13.0.*build-engine"):
        check_engine_compat(section, "10.13.0", "NVIDIA H200", "9.0")
    with pytest.raises(ValueError, match=r"compute capability 9.0 \(NVIDIA H200\), this GPU \(Orin\) has 8.7"):
        check_engine_compat(section, "10.9.0.34", "Orin", "8.7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notes = check_engine_compat(section, "10.9.0.34", "NVIDIA H100", "9.0")
    assert "built on a NVIDIA H200 and run on a NVIDIA H100" in notes[0]

    portable = engine_section(manifest, EngineBuildOptions(hardware_compat="ampere+", version_compat=True),
                              "10.9.0.34", gpu, {"encoder": "a" * 64, "decoder": "b" * 64})
    assert check_engine_compat(portable, "10.13.0", "RTX 3090", "8.6") == []  # newer TensorRT, another Ampere+
    with pytest.raises(ValueError, match="ampere\\+ engines need compute capability >= 8.0"):
        check_engine_compat(portable, "10.9.0.34", "T4", "7.5")
    with pytest.raises(ValueError, match="runs on that version or a newer one"):
        check_engine_compat(portable, "10.8.0", "NVIDIA H200", "9.0")

    digests = {"encoder": "", "decoder": ""}
    fp16 = engine_section(manifest, EngineBuildOptions(fp16_flag=True), "10.9.0.34", gpu, digests)
    assert "FP16 builder flag" in fp16["precision"]


def test_engines_elsewhere_point_back_at_the_graphs(tmp_path):
    _, directory = exported("tiny", 4, "fp32")
    manifest = read_manifest(directory)
    out = tmp_path / "deploy" / "engines"
    out.mkdir(parents=True)
    rebased = rebase_graphs(manifest, directory, out)
    for graph in ("encoder", "decoder"):
        assert (out / rebased.graphs[graph]["file"]).resolve() == (directory / f"{graph}.onnx").resolve()
    assert (out / rebased.checkpoint["path"]).resolve() == (directory / "checkpoint").resolve()
    assert manifest.graphs["encoder"]["file"] == "encoder.onnx"  # the original is untouched
    assert Path(rebased.graphs["encoder"]["file"]).name == "encoder.onnx"


@pytest.mark.parametrize(
    "version, expected",
    [("10.9.0.34", (10, 9)), ("10.0.0b6", (10, 0)), ("11.4.1", (11, 4)), ("9.0", (9, 0)), ("8", (8, 0)),
     ("12.10", (12, 10))],
)
def test_major_minor(version, expected):
    assert major_minor(version) == expected


def test_major_minor_refuses_garbage():
    with pytest.raises(ValueError, match="cannot read a version number from 'unknown'"):
        major_minor("unknown")


@pytest.mark.parametrize(
    "built, runtime, runs",
    [
        ("10.9.0.34", "10.9.0.34", True), ("10.9.0.34", "10.13.0.35", True), ("10.9.0.34", "10.8.0.43", False),
        ("10.9.0.34", "11.0.0.114", True), ("11.0.0", "10.13.0", False), ("8.6.1", "10.0.1", True),
        ("8.6.1", "11.0.0", False), ("11.1.0", "12.0.0", False), ("11.2.0", "11.1.0", False),
    ],
)
def test_version_compatible_engines_follow_the_support_matrix(built, runtime, runs):
    assert version_compatible_runs(built, runtime) is runs
    section = {"tensorrt_version": built, "compute_capability": "9.0", "gpu_name": "NVIDIA H200",
               "version_compatible": True, "hardware_compatibility": "none"}
    if runs:
        assert check_engine_compat(section, runtime, "NVIDIA H200", "9.0") == []
    else:
        with pytest.raises(ValueError, match=f"this machine has TensorRT {runtime}"):
            check_engine_compat(section, runtime, "NVIDIA H200", "9.0")


def test_numpy_dtypes_of_engine_tensors():
    assert numpy_dtype("FLOAT") == np.float32 and numpy_dtype("HALF") == np.float16
    assert numpy_dtype("INT32") == np.int32 and numpy_dtype("INT64") == np.int64
    with pytest.raises(ValueError, match="TensorRT type BF16 has no numpy equivalent"):
        numpy_dtype("BF16")
    # every dtype the graph contract uses (fp32 and fp16 exports) has a TensorRT name in the table
    for precision in ("fp32", "fp16"):
        _, directory = exported("tiny", 4, precision)
        manifest = read_manifest(directory)
        for graph in ("encoder", "decoder"):
            for kind in ("inputs", "outputs"):
                for spec in manifest.tensors(graph, kind):
                    assert np.dtype(spec.dtype) in {numpy_dtype(n) for n in ("FLOAT", "HALF", "INT32")}, spec


def test_network_flags_for_tensorrt_11_and_weak_typing():
    # TensorRT 11 is strongly typed only (its STRONGLY_TYPED flag is deprecated and ignored): no flag is passed;
    # nor with weak typing (the FP16 builder flag) on TensorRT 10. Neither case reads the tensorrt module.
    assert network_flags(None, 11, weak_typing=False) == 0
    assert network_flags(None, 10, weak_typing=True) == 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_graphs_use_only_what_tensorrt_parses(precision):
    import onnx

    _, directory = exported("tiny", 4, precision, attention="standard")
    for graph in ("encoder", "decoder"):
        assert tensorrt_unsupported_nodes(onnx.load(str(directory / f"{graph}.onnx"))) == []


def test_fused_attention_export_is_refused_before_tensorrt_is_needed():
    """The default fp32 export writes com.microsoft.MultiHeadAttention: build_engines says how to re-export (and
    says it before it needs TensorRT, so this holds here)."""
    from d4rt.export.tensorrt import build_engines

    _, directory = exported("tiny", 4, "fp32")
    with pytest.raises(ValueError, match="--attention standard"):
        build_engines(directory)


def test_tensorrt_support_check_catches_an_int64_clip():
    """The check that guards the export: an int64 Clip (what an integer clamp exports to) and an op outside the
    table are reported, a float Clip is not."""
    import onnx
    from onnx import TensorProto, helper

    def model(dtype, op="Clip"):
        inputs = ["x", "lo"] if op == "Clip" else ["x"]
        graph = helper.make_graph(
            [helper.make_node(op, inputs, ["y"], name=f"{op.lower()}_node")], "g",
            [helper.make_tensor_value_info("x", dtype, [4])],
            [helper.make_tensor_value_info("y", dtype, [4]) if op == "Clip"
             else helper.make_tensor_value_info("y", TensorProto.INT64, [1, "n"])],
            initializer=[helper.make_tensor("lo", dtype, [], [0])] if op == "Clip" else [],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    assert tensorrt_unsupported_nodes(model(TensorProto.FLOAT)) == []
    problems = tensorrt_unsupported_nodes(model(TensorProto.INT64))
    assert len(problems) == 1 and "clip_node: Clip on int64" in problems[0]
    assert "NonZero is not in the TensorRT support table" in tensorrt_unsupported_nodes(
        model(TensorProto.FLOAT, "NonZero"))[0]
    onnx.checker.check_model(model(TensorProto.INT64))  # a valid ONNX model: only TensorRT would refuse it

    # build_engines warns about such graphs, naming the node, before TensorRT is even imported
    import tempfile
    import types

    from d4rt.export.tensorrt import warn_unsupported_nodes

    directory = exported("tiny", 4, "fp32", attention="standard")[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unsupported_nodes(directory, read_manifest(directory))  # our export: silent
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model(TensorProto.INT64), f"{tmp}/decoder.onnx")
        with pytest.warns(UserWarning, match="clip_node: Clip on int64"):
            warn_unsupported_nodes(Path(tmp), types.SimpleNamespace(graphs={"decoder": {"file": "decoder.onnx"}}))
