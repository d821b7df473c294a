"""The TensorRT engine builder and the engine checks, everything that can be tested without TensorRT (which
cannot be installed where this project is built): options, the missing-library error, the query profile, the
engine manifest and its round trip through the runtime's compatibility checks."""

import sys
import warnings
from pathlib import Path

import pytest

from d4rt.export.tensorrt import (
    EngineBuildOptions,
    build_engines,
    engine_section,
    query_profile,
    rebase_graphs,
)
from d4rt.runtime.backend_tensorrt import GpuInfo
from d4rt.runtime.manifest import check_engine_compat, check_engines_match_graphs, read_manifest
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
    _, directory = exported("tiny", 4, "fp32")
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
    profile = query_profile(read_manifest(directory), options)
    assert profile == {
        "uv": ((1, 2, 2), (1, 300, 2), (1, 5000, 2)),
        "t": ((1, 2, 3), (1, 300, 3), (1, 5000, 3)),
    }


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
                                  "onnx_sha256": manifest.graphs["decoder"]["sha256"]}
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
    with pytest.raises(ValueError, match="runs on that version or newer"):
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
