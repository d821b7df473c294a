"""Reduced precision (docs/precision.md): bf16 on the torch backend against fp32, int8 graphs for ONNX Runtime
(export, manifest, load, parity), the default on a CPU with AMX, and the refusals (one line each)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from d4rt.cli import main
from d4rt.runtime import load
from tests.exported import exported

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-synthetic"
BF16_BUDGET, INT8_BUDGET = 1.5e-2, 3e-2  # xyz relative error against fp32 (issue #23)


def relative_error(found, reference) -> float:
    f, r = np.asarray(found, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(f - r) / np.linalg.norm(r))


def random_clip(T: int, S: int, n: int):
    rng = np.random.default_rng(np.random.randint(2**31))
    frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    uv = rng.random((n, 2), dtype=np.float32)
    return frames, uv, rng.integers(0, T, (3, n))


@pytest.fixture(scope="module")
def int8_export():
    """(model, directory): a random tiny model exported as int8 graphs (with its checkpoint beside them)."""
    return exported("tiny", 4, "int8")


def test_bf16_within_budget_of_fp32_on_the_bundled_model():
    fp32 = load(BUNDLED, backend="torch", precision="fp32")
    bf16 = load(BUNDLED, backend="torch", precision="bf16")
    assert (fp32.name, bf16.name) == ("torch", "torch-sdpa-bfloat16")
    assert next(bf16.backend.model.parameters()).dtype.__repr__() == "torch.bfloat16"
    frames, uv, t = random_clip(4, 128, 2000)
    a = fp32.query(fp32.encode(frames), uv, *t)
    b = bf16.query(bf16.encode(frames), uv, *t)
    err = relative_error(b["xyz"], a["xyz"])
    # bf16 keeps 8 mantissa bits (2^-9 = 2e-3 per rounding): an error of a few 1e-3 through the network, not 0
    assert 5e-4 < err <= BF16_BUDGET, err
    assert relative_error(b["uv_tgt"], a["uv_tgt"]) <= BF16_BUDGET


def test_int8_export_manifest_parity_and_load(int8_export):
    import onnx

    model, directory = int8_export
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    for graph in ("encoder", "decoder"):
        q = manifest["graphs"][graph]["quantization"]
        assert q["method"] == "onnxruntime.quantization.quantize_dynamic" and "per output channel" in q["weights"]
        ops = [n.op_type for n in onnx.load(str(directory / f"{graph}.onnx")).graph.node]
        assert ops.count("MatMulInteger") == q["quantized_nodes"] > 0
        assert "MultiHeadAttention" in ops and "Gemm" not in ops  # attention fp32; Gemms became int8 MatMuls
        # only the small layers stay fp32 (uv's Fourier features, the 13-column heads)
        assert ops.count("MatMul") == q["fp32_nodes"] <= 2
    from d4rt.export.parity import verify_export

    report = verify_export(model, directory, queries=512)  # raises ParityError above the budget
    assert report.gated == ("xyz",) and report.worst <= INT8_BUDGET
    assert 1e-4 < report.errors["end_to_end"]["xyz"]  # quantized for real: not the fp32 numbers
    rt = load(directory)  # no other change: the manifest says int8, ONNX Runtime runs it
    assert rt.name == "onnxruntime-cpu"
    torch_rt = load(directory, backend="torch", precision="fp32")  # the checkpoint beside the graphs
    frames, uv, t = random_clip(4, rt.image_size, 1000)
    a = torch_rt.query(torch_rt.encode(frames), uv, *t)
    b = rt.query(rt.encode(frames), uv, *t)
    assert relative_error(b["xyz"], a["xyz"]) <= INT8_BUDGET


def test_infer_int8_from_the_command_line(int8_export, tmp_path, capsys):
    frames, _, _ = random_clip(6, 40, 1)
    np.save(tmp_path / "clip.npy", frames)
    result = tmp_path / "result"
    assert main(["infer", str(tmp_path / "clip.npy"), "--export", str(int8_export[1]), "--out", str(result),
                 "--depth-size", "16", "--track-size", "4", "--precision", "int8"]) == 0
    summary = json.loads((result / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime-cpu" and summary["frames"] == 6
    depth = np.load(result / "depth.npz")["depth"]
    rt = load(int8_export[1], backend="torch", precision="fp32")
    reference = rt.depth(rt.encode(frames[:4]), size=16)  # window 0 (frames 0..3) is the world's frame
    assert relative_error(depth[:4], reference) <= INT8_BUDGET


def test_infer_bf16_from_the_command_line(tmp_path, capsys):
    frames, _, _ = random_clip(4, 40, 1)
    np.save(tmp_path / "clip.npy", frames)
    result = tmp_path / "result"
    assert main(["infer", str(tmp_path / "clip.npy"), "--export", str(BUNDLED), "--out", str(result),
                 "--depth-size", "16", "--track-size", "4", "--precision", "bf16"]) == 0
    summary = json.loads((result / "summary.json").read_text())
    assert summary["backend"] == "torch-sdpa-bfloat16"
    depth = np.load(result / "depth.npz")["depth"]
    rt = load(BUNDLED, backend="torch", precision="fp32")
    reference = rt.depth(rt.encode(frames), size=16)
    assert relative_error(depth, reference) <= BF16_BUDGET


def test_default_precision_from_cpu_flags(tmp_path, monkeypatch):
    from d4rt.runtime import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert {"amx_bf16", "avx512_bf16"} <= precision.cpu_flags(cpuinfo)
    assert precision.cpu_flags(tmp_path / "missing") == set()
    assert precision.default_precision({"amx_bf16", "avx512_bf16"}) == "bf16"
    assert precision.default_precision({"avx512_bf16"}) == "fp32"  # no AMX tiles: not measured, stays fp32
    assert precision.default_precision(set()) == "fp32"
    assert precision.default_precision({"amx_bf16"}, cuda=True) == "fp32"

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"amx_bf16"})
    rt = load(BUNDLED, precision="auto")  # backend "auto" on an AMX CPU: the checkpoint in bf16 on torch
    assert rt.name == "torch-sdpa-bfloat16"
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: set())
    assert load(BUNDLED, backend="torch", precision="auto").name == "torch"


def test_auto_keeps_an_int8_export_on_onnxruntime(int8_export, monkeypatch):
    from d4rt.runtime import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"amx_bf16"})
    assert load(int8_export[1], precision="auto").name == "onnxruntime-cpu"  # an int8 export is a choice of graphs


def test_dtype_is_a_deprecated_alias_of_precision():
    with pytest.warns(DeprecationWarning, match="use precision="):
        rt = load(BUNDLED, backend="torch", dtype="bfloat16")
    assert rt.name == "torch-sdpa-bfloat16"
    with pytest.raises(ValueError, match="disagree"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        load(BUNDLED, backend="torch", dtype="bfloat16", precision="fp32")


def test_failed_compilation_warns_once_and_runs_eagerly(monkeypatch):
    import torch

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("inductor: no C++ compiler found\nsecond line")
        return run

    eager = load(BUNDLED, backend="torch", precision="bf16")
    monkeypatch.setattr(torch, "compile", broken_compile)
    rt = load(BUNDLED, backend="torch", precision="bf16", compile_decoder=True)
    assert rt.name == "torch-sdpa-bfloat16-compiled"
    frames, uv, t = random_clip(2, 128, 300)
    scene, scene_eager = rt.encode(frames), eager.encode(frames)
    with pytest.warns(RuntimeWarning, match="torch.compile of the decoder failed .*no C\\+\\+ compiler.*runs eagerly"):
        first = rt.query(scene, uv, *t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        rt.query(scene, uv, *t)
    assert rt.name == "torch-sdpa-bfloat16" and not rt.backend.compiled
    np.testing.assert_array_equal(first["xyz"], eager.query(scene_eager, uv, *t)["xyz"])


# ----- refusals: one line, what to do instead, nothing written ---------------------------------------------------
def test_bf16_refused_on_onnxruntime(int8_export, tmp_path, capsys):
    _, directory = int8_export
    with pytest.raises(ValueError, match="ONNX Runtime has no bf16 path.*backend='torch'.*precision='bf16'"):
        load(directory, backend="onnxruntime-cpu", precision="bf16")
    frames, _, _ = random_clip(4, 32, 1)
    np.save(tmp_path / "clip.npy", frames)
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "clip.npy"), "--export", str(directory), "--out", str(out),
                 "--backend", "onnxruntime-cpu", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ONNX Runtime has no bf16 path" in err and "--backend torch" in err
    assert not out.exists()


def test_graph_precision_must_match_the_export(int8_export):
    with pytest.raises(ValueError, match="holds int8 graphs, not fp32: re-export with .*--precision fp32"):
        load(int8_export[1], precision="fp32")
    with pytest.raises(ValueError, match="the torch backend runs precision fp32, bf16 or fp16.*ONNX Runtime"):
        load(int8_export[1], backend="torch", precision="int8")


def test_export_refusals(tmp_path, capsys):
    cases = [
        (["--precision", "bf16"], "bf16 is not an export precision: it runs the checkpoint on the torch backend"),
        (["--precision", "int4"], "--precision 'int4' is not one of fp32, fp16, int8"),
        (["--precision", "int8", "--attention", "standard"], "int8 graphs are ONNX Runtime's"),
    ]
    for extra, message in cases:
        out = tmp_path / "x"
        assert main(["export", str(BUNDLED), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
        assert not out.exists()


def test_missing_quantization_package_refused_before_any_work(tmp_path, monkeypatch):
    import sys

    from d4rt.export import export_onnx
    from tests.exported import random_model

    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # import fails
    with pytest.raises(ImportError, match="int8 export needs ONNX Runtime's quantization package: `pip install"):
        export_onnx(random_model("tiny"), tmp_path / "out", precision="int8", num_frames=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_build_engine_refuses_dynamic_int8(int8_export, tmp_path, capsys):
    _, directory = int8_export
    before = sorted(p.name for p in directory.iterdir())
    assert main(["build-engine", str(directory), "--out", str(tmp_path / "engines")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "dynamically quantized int8 graphs" in err and "--precision int8-qdq" in err
    assert sorted(p.name for p in directory.iterdir()) == before and not (tmp_path / "engines").exists()
