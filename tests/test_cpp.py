"""The C++ runtime (cpp/, docs/cpp.md) against the Python runtime on the same export.

The session fixture runs docs/cpp.md's commands (the blocks marked "run by tests/test_cpp.py") in a scratch folder:
`make cpp` (CMake + g++ against the torch wheel's libtorch; a no-op when `make test` built it), `d4rt export
checkpoints/tiny-synthetic --aoti` (fp32 and bf16 AOTInductor packages, the one compile of the session), random
frames and queries, `d4rt-query` in fp32 and bf16, and the GoogleTest refusal suite (ctest) on that export. The
tests then hold the C++ answers against the Python runtime: ONNX Runtime (an independent engine) and the same
packages through torch's Python loader.

Tolerances (relative error ||a - b|| / ||b|| per output; docs/cpp.md has the measurements):
- fp32: 1e-5. The displacement of this checkpoint is ~1000x smaller than its xyz (nearly static scenes), so
  float32 rounding at the scene's scale is ~1e-5 of the displacement itself: it is judged against ||xyz||.
- fp32 / bf16 C++ against the same packages in Python: 1e-6 (the same kernels; only the sigmoid's libm differs).
- bf16 against the fp32 Python runtime: 2e-2 (bf16's unit roundoff is 2e-3; measured 1e-3 .. 7e-3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_docs import blocks, scratch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cpp.md"
BUILD = ROOT / "build" / "cpp"
RUN_HERE = "run by tests/test_cpp.py"
NAMES = ("xyz", "uv_tgt", "visibility", "displacement", "normal", "confidence")
FP32_TOL, SAME_PACKAGES_TOL, BF16_TOL = 1e-5, 1e-6, 2e-2


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="session")
def docs_run(tmp_path_factory) -> Path:
    """The scratch folder where docs/cpp.md's commands ran (tiny-export/, frames.npy, answers/, ...)."""
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install cmake g++ nlohmann-json3-dev libgtest-dev)")
    (ROOT / "build").mkdir(exist_ok=True)  # linked into the scratch folder, so build/cpp/... works there
    cwd = scratch(tmp_path_factory.mktemp("cpp-docs"))
    ran = 0
    for kind, code, line, skip in blocks(DOC):
        if skip is None or RUN_HERE not in skip:
            continue
        command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (
            f"the {kind} block at docs/cpp.md:{line} failed (exit {result.returncode}):\n{code}\n--- stderr ---\n"
            f"{result.stderr[-3000:]}\n--- stdout ---\n{result.stdout[-2000:]}"
        )
        ran += 1
    assert ran >= 4, f"docs/cpp.md has {ran} blocks marked '{RUN_HERE}'"
    return cwd


def rel(a: np.ndarray, b: np.ndarray, scale: np.ndarray | None = None) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b if scale is None else scale))


def python_answers(export: Path, frames, uv, t, backend: str, dtype: str = "float32", batch_size: int = 8192):
    from d4rt.runtime import load

    from d4rt.runtime.precision import precision_from_dtype

    rt = load(export, backend=backend, precision=precision_from_dtype(dtype))
    return rt.query(rt.encode(frames), uv, t[:, 0], t[:, 1], t[:, 2], batch_size=batch_size)


def cpp_answers(out: Path) -> dict[str, np.ndarray]:
    return {name: np.load(out / f"{name}.npy") for name in NAMES}


def check_close(got, ref, tol: float, what: str) -> None:
    errors = {n: rel(got[n], ref[n], ref["xyz"] if n == "displacement" else None) for n in NAMES}
    for n in NAMES:
        assert got[n].dtype == np.float32 and got[n].shape == ref[n].shape, (n, got[n].shape, ref[n].shape)
    assert max(errors.values()) <= tol, f"{what}: relative errors {errors} above {tol}"


def test_docs_commands_answer_as_the_python_runtime(docs_run):
    export = docs_run / "tiny-export"
    frames, uv, t = (np.load(docs_run / f) for f in ("frames.npy", "uv.npy", "t.npy"))
    fp32, bf16 = cpp_answers(docs_run / "answers"), cpp_answers(docs_run / "answers-bf16")
    reference = python_answers(export, frames, uv, t, "onnxruntime-cpu")
    check_close(fp32, reference, FP32_TOL, "C++ fp32 vs ONNX Runtime fp32")
    check_close(fp32, python_answers(export, frames, uv, t, "aoti"), SAME_PACKAGES_TOL, "C++ vs Python aoti fp32")
    check_close(bf16, python_answers(export, frames, uv, t, "aoti", "bfloat16"), SAME_PACKAGES_TOL,
                "C++ vs Python aoti bf16")
    check_close(bf16, reference, BF16_TOL, "C++ bf16 vs ONNX Runtime fp32")
    assert rel(bf16["xyz"], reference["xyz"]) > 1e-5, "the bf16 answers equal the fp32 ones: not a bf16 package?"
    for p in ("visibility", "confidence"):
        assert 0.0 <= fp32[p].min() and fp32[p].max() <= 1.0, f"{p} must be a probability"


def test_unseen_sizes_and_ragged_batches(docs_run, tmp_path):
    """Frames smaller than S (the resize enlarges) and an odd width, a batch size that leaves a ragged last batch,
    int64 times: the same answers as the Python runtime in one batch."""
    rng = np.random.default_rng(np.random.randint(2**31))
    T, N = 6, 1001
    frames = rng.integers(0, 256, (T, 57, 91, 3), dtype=np.uint8)
    uv = rng.random((N, 2))  # float64: d4rt-query converts, as the Python runtime does
    t = rng.integers(0, T, (N, 3))
    for name, a in (("frames", frames), ("uv", uv), ("t", t)):
        np.save(tmp_path / f"{name}.npy", a)
    result = subprocess.run([BUILD / "d4rt-query", docs_run / "tiny-export", tmp_path / "frames.npy",
                             tmp_path / "uv.npy", tmp_path / "t.npy", tmp_path / "out", "--batch-size", "300"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reference = python_answers(docs_run / "tiny-export", frames, uv, t, "onnxruntime-cpu", batch_size=N)
    check_close(cpp_answers(tmp_path / "out"), reference, FP32_TOL, "C++ fp32 (57 x 91 frames, batches of 300)")


def test_resize_matches_opencv_byte_for_byte(docs_run, tmp_path):
    import cv2

    rng = np.random.default_rng(np.random.randint(2**31))
    sizes = [(256, 256), (384, 512), (200, 150), (57, 91), (64, 300), (300, 64), (129, 130)]
    sizes += [tuple(int(x) for x in rng.integers(2, 400, 2)) for _ in range(8)]
    for h, w in sizes:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.save(tmp_path / "in.npy", image)
        subprocess.run([BUILD / "d4rt_resize_npy", tmp_path / "in.npy", "128", "128", tmp_path / "out.raw"],
                       check=True, timeout=60)
        got = np.fromfile(tmp_path / "out.raw", np.uint8).reshape(128, 128, 3)
        ref = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
        assert np.array_equal(got, ref), f"{h}x{w}: {int((got != ref).sum())} bytes differ from cv2.resize"


def query(docs_run, tmp_path, out: str = "out", **arrays) -> subprocess.CompletedProcess:
    """d4rt-query on the docs' inputs, with any of frames / uv / t replaced by arrays saved here."""
    paths = []
    for name in ("frames", "uv", "t"):
        if name in arrays:
            np.save(tmp_path / f"{name}.npy", arrays[name])
            paths.append(tmp_path / f"{name}.npy")
        else:
            paths.append(docs_run / f"{name}.npy")
    return subprocess.run([BUILD / "d4rt-query", docs_run / "tiny-export", *paths, tmp_path / out],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case, expected", [
    ("nan_uv", "uv contains 1 NaN or infinite values"),
    ("uv_range", "expected [0, 1] (u = x / (S - 1))"),
    ("t_range", "t_tgt has frame indices in [0, 8], expected [0, 8) for this clip"),
    ("one_frame", "the clip has 1 frame, these engines need at least 2"),
    ("float_frames", "frames must be uint8 (0..255), got dtype float32"),
    ("int_uv", "uv must be floating point in [0, 1], got dtype int32"),
    ("t_shape", "T must be [N, 3]"),
])
def test_d4rt_query_refuses_bad_input_in_one_line(docs_run, tmp_path, case, expected):
    uv, t = np.load(docs_run / "uv.npy"), np.load(docs_run / "t.npy")
    frames = np.load(docs_run / "frames.npy")
    arrays = {
        "nan_uv": lambda: {"uv": np.where(np.arange(uv.size).reshape(uv.shape) == 7, np.nan, uv).astype(np.float32)},
        "uv_range": lambda: {"uv": uv * 1.5},
        "t_range": lambda: {"t": np.where((np.arange(t.size) == 4).reshape(t.shape), 8, t)},  # one t_tgt = T
        "one_frame": lambda: {"frames": frames[:1]},
        "float_frames": lambda: {"frames": frames.astype(np.float32) / 255},
        "int_uv": lambda: {"uv": (uv * 100).astype(np.int32)},
        "t_shape": lambda: {"t": t[:, :2]},
    }[case]()
    result = query(docs_run, tmp_path, **arrays)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*")), "a refusal wrote output"


def test_d4rt_query_refuses_usage_errors_and_keeps_existing_output(docs_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    result = query(docs_run, tmp_path)
    assert result.returncode == 2 and "exists and is not an empty folder" in result.stderr
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    (tmp_path / "out" / "mine.txt").unlink()  # an empty OUT_DIR is filled
    assert query(docs_run, tmp_path).returncode == 0 and (tmp_path / "out" / "xyz.npy").is_file()
    for args, expected in [
        ([], "expected 5 arguments, got 0"),
        (["a", "b", "c", "d", "e", "--precision", "fp8"], "--precision must be fp32 or bf16"),
        (["a", "b", "c", "d", "e", "--batch-size", "x"], "--batch-size takes an integer"),
        ([str(tmp_path / "nowhere"), *(str(docs_run / f) for f in ("frames.npy", "uv.npy", "t.npy")),
          str(tmp_path / "o2")], "does not exist"),
    ]:
        result = subprocess.run([BUILD / "d4rt-query", *args], capture_output=True, text=True, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, result.stderr)


def edited_export(docs_run: Path, tmp_path: Path, edit) -> Path:
    """A copy of the docs' export (packages linked) whose manifest went through ``edit(dict)``."""
    src, dst = docs_run / "tiny-export", tmp_path / "edited"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f.resolve())
    manifest = json.loads((src / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").unlink()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m["aoti"]["machine"]["cpu_flags"].append("avx1024_imaginary"),
     "compiled for a CPU with avx1024_imaginary, which this CPU lacks"),
    (lambda m: m["aoti"].update(torch_version="1.13.1"), "compiled with torch 1.13.1"),
    (lambda m: m.update(export_id="0123456789abcdef"), "comes from another export"),
    (lambda m: m["aoti"]["packages"]["bf16"]["decoder"].update(sha256="0" * 64), "does not match the sha256"),
])
def test_python_and_cpp_refuse_the_same_packages_alike(docs_run, tmp_path, edit, expected):
    from d4rt.runtime import load

    export = edited_export(docs_run, tmp_path, edit)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load(export, backend="aoti", precision="bf16")
    assert expected in str(error.value) and "\n" not in str(error.value)
    result = subprocess.run([BUILD / "d4rt-query", export, *(docs_run / f for f in ("frames.npy", "uv.npy", "t.npy")),
                             tmp_path / "out", "--precision", "bf16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_manifest_records_the_packages_and_the_machine(docs_run):
    import platform

    import torch

    from d4rt.runtime.manifest import EXPORT_ID_KEY, ISA_FLAGS, cpu_flags, read_manifest, sha256_file

    export = docs_run / "tiny-export"
    manifest = read_manifest(export)
    aoti = manifest.aoti
    assert aoti["export_id"] == manifest.export_id and aoti["torch_version"] == torch.__version__
    assert aoti["device"] == "cpu" and aoti["machine"]["arch"] == platform.machine()
    assert set(aoti["machine"]["cpu_flags"]) == cpu_flags() & set(ISA_FLAGS)
    for precision, kv_dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        entry = aoti["packages"][precision]
        assert entry["kv_dtype"] == kv_dtype
        for graph in ("encoder", "decoder"):
            path = export / entry[graph]["file"]
            assert sha256_file(path) == entry[graph]["sha256"]
            meta = torch._inductor.aoti_load_package(str(path)).get_metadata()
            assert meta[EXPORT_ID_KEY] == manifest.export_id and meta["d4rt.precision"] == precision


@pytest.mark.parametrize("args, expected", [
    (["--aoti-precisions", "fp16"], "--aoti-precisions takes a comma list of fp32, bf16"),
    (["--aoti-device", "tpu"], "--aoti-device is cpu or cuda"),
])
def test_export_refuses_bad_aoti_options_before_any_work(tmp_path, args, expected):
    result = subprocess.run([sys.executable, "-m", "d4rt.cli", "export", "checkpoints/tiny-synthetic", "--out",
                             str(tmp_path / "x"), "--aoti", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not (tmp_path / "x").exists()


def test_export_aoti_needs_the_onnx_export_first(tmp_path):
    from d4rt import D4RT
    from d4rt.export.aoti import export_aoti
    from tests.conftest import config_for_tests

    model = D4RT(config_for_tests("tiny")).eval()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        export_aoti(model, tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="schema_version"):
        export_aoti(model, tmp_path)
