"""The commands end to end on a tiny clip (d4rt export / infer / bench), and the runtime with torch blocked."""

import json
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from d4rt.cli import main
from d4rt.runtime import load
from d4rt.runtime.outputs import read_ply
from tests.exported import exported
from tests.onnx_reference import OnnxReference, grid
from tests.timing_bounds import check_bench_times


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """`d4rt export --preset tiny --random-init --frames 2 --verify` through the command line entry point."""
    out = tmp_path_factory.mktemp("cli") / "engines"
    code = main(["export", "--preset", "tiny", "--random-init", "--seed", "7", "--frames", "2", "--image-size", "128",
                 "--out", str(out), "--verify", "--queries", "256"])
    assert code == 0
    return out


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened(), "OpenCV cannot write mp4 here"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_export_command(cli_export, capsys):
    manifest = json.loads((cli_export / "manifest.json").read_text())
    assert manifest["num_frames"] == 2 and manifest["precision"] == "fp32"
    assert manifest["checkpoint"]["random_init"] == {"preset": "tiny", "seed": 7}
    assert (cli_export / "checkpoint" / "model.safetensors").is_file()
    assert manifest["parity"]["passed"] and manifest["parity"]["worst"] < 1e-4
    assert main(["export", "--out", str(cli_export.parent / "x")]) == 2
    assert "either a checkpoint directory or --random-init" in capsys.readouterr().err


def test_infer_command(cli_export, tmp_path, capsys):
    y, x = np.mgrid[0:50, 0:80]
    frames = np.stack([(127 + 100 * np.sin(x[..., None] / (5 + k) + y[..., None] / 9 + np.arange(3))).astype(np.uint8)
                       for k in range(2)])
    video = write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "result"
    args = ["infer", str(video), "--export", str(cli_export), "--out", str(out), "--depth-size", "32",
            "--cloud-size", "16", "--track-size", "4", "--pose-size", "8", "--batch-size", "300"]
    assert main(args) == 0
    assert "frames 0..1 (2) in 1 window(s) on onnxruntime-cpu" in capsys.readouterr().out

    # the reference: the graphs run by ONNX Runtime directly on the frames OpenCV decodes (tests/onnx_reference.py)
    ref = OnnxReference(cli_export)
    capture = cv2.VideoCapture(str(video))
    decoded = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(2)]
    capture.release()
    ref.encode(np.stack(decoded), 80 / 50)
    depth = np.load(out / "depth.npz")
    for t in range(2):  # the same graph on the same inputs: measured equal (0); 1e-5 allows other batch splits
        z = ref.query(grid(32), t, t, t)["xyz"][:, 2].reshape(32, 32)
        np.testing.assert_allclose(depth["depth"][t], z, rtol=1e-5, atol=1e-6 * np.abs(z).max())
    depth_max = float(depth["depth_max"])
    for t in range(2):  # the 16-bit PNG is the depth quantised to depth_max / 65535
        png = cv2.imread(str(out / "depth" / f"{t:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == (32, 32)
        positive = depth["depth"][t] > 0
        assert np.abs(png[positive] * depth_max / 65535 - depth["depth"][t][positive]).max() <= depth_max / 65535
        assert (png[~positive] == 0).all()
    xyz, rgb = read_ply(out / "points.ply")  # every frame's 16 x 16 grid in camera 0 (the world), frame by frame
    answers = [ref.query(grid(16), t, t, 0) for t in range(2)]
    cloud = np.concatenate([a["xyz"] for a in answers])
    np.testing.assert_allclose(xyz, cloud, rtol=1e-5, atol=1e-6 * np.abs(cloud).max())
    pixels = np.rint(grid(16) * 127).astype(int)  # each point's colour: its pixel of the 128 x 128 input
    resized = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in decoded]
    np.testing.assert_array_equal(rgb, np.concatenate([f[pixels[:, 1], pixels[:, 0]] for f in resized]))
    points = np.load(out / "points.npz")  # the PLY's points with their confidence and frame (what d4rt view reads)
    np.testing.assert_array_equal(points["xyz"], xyz)
    np.testing.assert_array_equal(points["rgb"], rgb)
    # confidences: float32 logits through a float32 sigmoid there, float64 here: ~1e-7 apart
    np.testing.assert_allclose(points["confidence"], np.concatenate([a["confidence"] for a in answers]), atol=1e-6)
    np.testing.assert_array_equal(points["frame"], np.repeat([0, 1], 256))
    for t in range(2):  # the network's input frames, lossless
        png = cv2.cvtColor(cv2.imread(str(out / "frames" / f"{t:04d}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(png, resized[t])
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert np.array_equal(trajectory["T_wc"][0], np.eye(4).tolist()) and np.array(trajectory["K"]).shape == (2, 3, 3)
    # frame 1's pose by hand: the rigid fit of its own-camera grid points onto the same points in camera 0, on the
    # 85 % pairs of highest confidence (the product of both answers'), refits without residuals > 5x the median
    # until the kept set is stable, at most 5 (docs/metrics.md)
    own, first = ref.query(grid(8), 1, 1, 1), ref.query(grid(8), 1, 1, 0)
    expected = reference_pose(own["xyz"], first["xyz"], own["confidence"] * first["confidence"], trim=5.0, refits=5)
    # measured 5e-9 apart (float32 confidences: the closest two of the 64 products were 1.5e-4 apart, so the
    # ranking cannot flip); 1e-6 leaves 200x
    np.testing.assert_allclose(trajectory["T_wc"][1], expected, atol=1e-6)
    tracks = np.load(out / "tracks.npz")
    assert tracks["xyz"].shape == (16, 2, 3) and tracks["uv"].shape == (16, 2)
    assert cv2.imread(str(out / "preview.png")) is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime-cpu" and summary["original_size"] == [50, 80]
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rigid [4, 4] minimising sum |R src + t - dst|^2, by the SVD of the cross-covariance (float64, by hand)."""
    a, b = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((dst - b).T @ (src - a))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    return np.r_[np.c_[R, b - R @ a], [[0, 0, 0, 1]]]


def reference_pose(src, dst, confidence, keep=0.85, trim=3.0, refits=1) -> np.ndarray:
    """The house's pose rule (paper App. B + trimmed refits) by hand: a rigid fit on the ``keep`` share of most
    confident pairs (those tied with the last one kept too); then, up to ``refits`` times, a refit on those of them
    whose residual under the current fit is within ``trim`` x its median, until that set stops changing."""
    src, dst, confidence = (np.asarray(a, np.float64) for a in (src, dst, confidence))
    chosen = np.flatnonzero(confidence >= np.sort(confidence)[::-1][int(np.ceil(keep * len(src))) - 1])
    M, inliers = kabsch(src[chosen], dst[chosen]), chosen
    for _ in range(refits):
        residual = np.linalg.norm(src[chosen] @ M[:3, :3].T + M[:3, 3] - dst[chosen], axis=1)
        kept = chosen[residual <= trim * np.median(residual)]
        if len(kept) < 3 or np.array_equal(kept, inliers):
            break
        M, inliers = kabsch(src[kept], dst[kept]), kept
    return M


def test_view_infers_a_video_and_records_it(cli_export, tmp_path, capsys):
    """`d4rt view VIDEO --export DIR --record FOLDER`: the video inferred, then recorded (the browser tests of the
    viewer are in test_viewer.py)."""
    pytest.importorskip("viser", reason="the viewer extra is not installed: pip install '.[viewer]'")
    frames = np.random.default_rng(np.random.randint(2**31)).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "recording"
    assert main(["view", str(video), "--export", str(cli_export), "--record", str(out)]) == 0
    assert "2 frames recorded" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert "__VISER_EMBED_DATA__" in page and (out / "scene.viser").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written beside it


def test_bench_command(cli_export, tmp_path):
    path = tmp_path / "bench.json"
    started = time.perf_counter()
    assert main(["bench", "--export", str(cli_export), "--backends", "onnxruntime-cpu,torch", "--repeats", "2",
                 "--warmup", "1", "--batch-sizes", "16,64", "--json", str(path)]) == 0
    wall_s = time.perf_counter() - started
    report = json.loads(path.read_text())
    assert [r["backend"] for r in report["results"]] == ["onnxruntime-cpu", "torch"]
    assert all(set(r["query"]) == {"16", "64"} for r in report["results"])
    check_bench_times(report["results"], cli_export / "checkpoint", [16, 64], wall_s, frames=2)
    assert report["model"] == {"name": "tiny", "precision": "fp32", "frames": 2, "image_size": 128}


BLOCK_TORCH = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
"""


def test_runtime_runs_with_torch_blocked(tmp_path):
    _, directory = exported("tiny", 4, "fp32")
    frames = np.random.randint(0, 256, (4, 60, 90, 3), dtype=np.uint8)
    uv = np.random.rand(100, 2).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "uv.npy", uv)
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np
        from d4rt.runtime import load
        from d4rt.cli import main

        directory, tmp = {str(directory)!r}, {str(tmp_path)!r}
        rt = load(directory)
        scene = rt.encode(np.load(tmp + "/frames.npy"))
        res = rt.query(scene, np.load(tmp + "/uv.npy"), 0, 1, 2)
        poses, K = rt.camera_poses(scene, size=6), rt.intrinsics(scene, size=6)
        np.save(tmp + "/xyz.npy", res["xyz"])
        assert main(["infer", tmp + "/frames.npy", "--export", directory, "--out", tmp + "/out", "--depth-size", "16",
                     "--cloud-size", "8", "--track-size", "2", "--pose-size", "6"]) == 0
        try:
            load(directory, backend="torch")
        except ImportError as e:
            print("torch backend refused:", e)
        assert "torch" not in sys.modules, "torch was imported"
        print("ran without torch on", rt.name)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ran without torch on onnxruntime-cpu" in out.stdout and "torch backend refused" in out.stdout
    rt = load(directory)  # the same numbers as here, with torch importable
    expected = rt.query(rt.encode(frames), uv, 0, 1, 2)["xyz"]
    np.testing.assert_array_equal(np.load(tmp_path / "xyz.npy"), expected)
    assert (tmp_path / "out" / "points.ply").is_file()


def test_export_command_reads_a_checkpoint(tmp_path):
    """`d4rt export CKPT_DIR` loads the save_pretrained weights as they are and records their sha256."""
    import torch

    from d4rt.checkpoint import load_or_init
    from d4rt.runtime.manifest import sha256_file

    model, directory = exported("tiny", 4, "fp32")
    loaded, info = load_or_init(directory / "checkpoint", tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert info["path"] == str((directory / "checkpoint").resolve())
    assert info["sha256"] == {"model.safetensors": sha256_file(directory / "checkpoint" / "model.safetensors")}
    with pytest.raises(ValueError, match="needs preset"):
        load_or_init(None, tmp_path, random_init=True)
