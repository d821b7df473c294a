"""Bad input gets a clear error naming the problem and the fix, and loses nothing: damaged or missing files,
manifests that do not match, wrong shapes and dtypes, NaN, times out of range."""

import json

import numpy as np
import pytest

from d4rt.runtime import load
from tests.exported import copy_export, exported

T = 4


@pytest.fixture(scope="module")
def rt():
    return load(exported("tiny", T, "fp32")[1], backend="onnxruntime-cpu")


@pytest.fixture()
def private_export(tmp_path):
    return copy_export(exported("tiny", T, "fp32")[1], tmp_path)


def frames(t=T, h=40, w=60):
    return np.random.randint(0, 256, (t, h, w, 3), dtype=np.uint8)


# ----- files -----------------------------------------------------------------------------------------------------
def test_missing_graph_file(private_export):
    (private_export / "decoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"decoder ONNX file .*decoder.onnx is missing; re-export"):
        load(private_export, backend="onnxruntime-cpu")


def test_corrupt_graph_file(private_export):
    path = private_export / "encoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256 .* re-export"):
        load(private_export, backend="onnxruntime-cpu")
    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated, and the checksum check skipped
    with pytest.raises(ValueError, match="ONNX Runtime cannot load .*encoder.onnx"):
        load(private_export, backend="onnxruntime-cpu", verify_checksums=False)


def test_missing_external_data(tmp_path):
    directory = copy_export(exported("tiny", 2, "fp16", external_data=True)[1], tmp_path)
    (directory / "decoder.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match="decoder.onnx.data is missing"):
        load(directory)


def test_manifest_problems(private_export):
    path = private_export / "manifest.json"
    good = json.loads(path.read_text())
    path.unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json .*d4rt export"):
        load(private_export)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(private_export)
    path.write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        load(private_export)
    shaped = json.loads(json.dumps(good))
    shaped["graphs"]["decoder"]["inputs"][3]["shape"] = [1, "N", 3]
    path.write_text(json.dumps(shaped))
    with pytest.raises(ValueError, match="decoder inputs .* do not match the config's contract"):
        load(private_export)
    other = json.loads(json.dumps(good))  # a manifest from another model: its contract and the graphs disagree
    other["config"]["dec_heads"] = 6
    for graph in ("encoder", "decoder"):
        for kind in ("inputs", "outputs"):
            for spec in other["graphs"][graph][kind]:
                if spec["name"] in ("keys", "values"):
                    spec["shape"] = [2, 1, 6, spec["shape"][3], 32]
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="tensor keys is .* but the manifest says .* do not belong together"):
        load(private_export, backend="onnxruntime-cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(private_export / "nowhere")


def test_engine_files_are_checked_before_tensorrt_is_needed(private_export):
    manifest = json.loads((private_export / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="lists no TensorRT engines; rebuild .*d4rt build-engine"):
        load(private_export, backend="tensorrt")
    manifest["engines"] = {
        "tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
        "encoder": {"file": "encoder.engine", "sha256": "0" * 64,
                    "onnx_sha256": manifest["graphs"]["encoder"]["sha256"]},
        "decoder": {"file": "decoder.engine", "sha256": "0" * 64, "onnx_sha256": "f" * 64},
    }
    (private_export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match="encoder.engine is missing"):
        load(private_export, backend="tensorrt")
    (private_export / "encoder.engine").write_bytes(b"not an engine")
    (private_export / "decoder.engine").write_bytes(b"not an engine")
    with pytest.raises(ValueError, match="TensorRT engine file .* does not match the sha256"):
        load(private_export, backend="tensorrt")
    with pytest.raises(ValueError, match="decoder engine was built from another decoder.onnx"):
        load(private_export, backend="tensorrt", verify_checksums=False)


def test_unknown_or_missing_backends(private_export):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        load(private_export, backend="tensorflow")
    with pytest.raises(ValueError, match="no CUDAExecutionProvider here .*onnxruntime-gpu"):
        load(private_export, backend="onnxruntime-cuda")


# ----- clips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: frames(t=T + 2), "more than the 4 frames these engines encode at once .*rt.encode_video"),
        (lambda: frames(t=1), r"1 frame, these engines need at least 2 \(a single image: pass it twice"),
        (lambda: frames()[..., 0], r"must be \[T, H, W, 3\] RGB"),
        (lambda: frames().astype(np.int16), "uint8 .* or float in \\[0, 1\\], got dtype int16"),
        (lambda: frames().astype(np.float32), r"float frames must be RGB in \[0, 1\]"),
        (lambda: np.where(np.random.rand(T, 40, 60, 3) < 1e-3, np.nan, 0.5).astype(np.float32), "NaN"),
        (lambda: [[0]], "must be a numpy array"),
    ],
)
def test_bad_clips(rt, bad, match):
    with pytest.raises(ValueError, match=match):
        rt.encode(bad())


def test_missing_or_unreadable_video(rt, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rt.encode(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="(cannot be decoded|no frame)"):
        rt.encode(junk)


# ----- queries ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(uv=np.random.rand(5, 3).astype(np.float32)), r"uv must be \[N, 2\]"),
        (dict(uv=np.random.randint(0, 2, (5, 2))), "uv must be floating point"),
        (dict(uv=np.full((5, 2), np.nan, np.float32)), "NaN"),
        (dict(uv=np.full((5, 2), 1.5, np.float32)), r"expected \[0, 1\]"),
        (dict(t_src=np.array([0, 1, 2, 3, 4])), r"t_src has frame indices in \[0, 4\], expected \[0, 4\)"),
        (dict(t_cam=-1), r"t_cam has frame indices in \[-1, -1\]"),
        (dict(t_tgt=np.zeros(5, np.float32)), "t_tgt must be integer"),
        (dict(t_tgt=np.zeros(4, np.int64)), r"t_tgt must be a scalar or \[N\] = \[5\]"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
    ],
)
def test_bad_queries(rt, change, match):
    scene = rt.encode(frames())
    args = dict(uv=np.random.rand(5, 2).astype(np.float32), t_src=0, t_tgt=np.arange(5) % T, t_cam=1, batch_size=8)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        rt.query(scene, **args)


def test_empty_query_and_scalar_times(rt):
    scene = rt.encode(frames())
    empty = rt.query(scene, np.zeros((0, 2), np.float32), 0, 0, 0)
    assert empty["xyz"].shape == (0, 3) and empty["visibility"].shape == (0,)
    uv = np.random.rand(6, 2).astype(np.float32)
    a = rt.query(scene, uv, 1, 2, 3)
    b = rt.query(scene, uv, np.full(6, 1), np.full(6, 2), np.full(6, 3))
    np.testing.assert_array_equal(a["xyz"], b["xyz"])
    with pytest.raises(ValueError, match="scene must be a Scene"):
        rt.query("scene", uv, 0, 0, 0)


def test_checkpoint_with_another_config_is_refused(private_export):
    """The torch backend compares the checkpoint's config with the one the engines were exported from."""
    path = private_export / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["enc_mlp_dim"] = 512  # not part of the graphs' tensor contract, still another model
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"another config than the engines .*\['enc_mlp_dim'\]\); re-export"):
        load(private_export, backend="torch")


# ----- geometry arguments and paths (issue #11: each refusal names the argument and the fix) ----------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda rt, s: rt.depth(s, 0, size=0), r"size must be an integer >= 2 .*got 0"),
        (lambda rt, s: rt.depth(s, 0, size=-1), r"size must be an integer >= 2 .*got -1"),
        (lambda rt, s: rt.point_cloud(s, size=1.5), r"size must be an integer >= 2 .*got 1.5"),
        (lambda rt, s: rt.camera_poses(s, size=1), r"size must be an integer >= 2 .*got 1"),
        (lambda rt, s: rt.intrinsics(s, size=0), r"size must be an integer >= 2 .*got 0"),
        (lambda rt, s: rt.point_maps(s, [0, 9], 4), r"frames has frame indices in \[0, 9\], expected \[0, 4\)"),
        (lambda rt, s: rt.encode(frames(), aspect_ratio="16/9"), r"aspect_ratio must be a number.*16 / 9.*'16/9'"),
        (lambda rt, s: rt.encode(frames(), aspect_ratio=-1.0), "aspect_ratio must be a positive width / height"),
        (lambda rt, s: rt.encode(frames(), start=9), r"start=9 is beyond the clip's 4 frames"),
        (lambda rt, s: rt.encode(frames(), stride=0), "stride must be an integer >= 1"),
    ],
)
def test_bad_geometry_arguments(rt, call, match):
    scene = rt.encode(frames())
    with pytest.raises(ValueError, match=match):
        call(rt, scene)


def test_smallest_grids_work(rt):
    """grid = 2 (the corners) is the true minimum: poses (4 points, not collinear) and intrinsics come out."""
    scene = rt.encode(frames())
    assert rt.camera_poses(scene, size=2).shape == (T, 4, 4)
    assert rt.depth(scene, 1, size=2).shape == (2, 2)
    assert rt.encode(frames(), aspect_ratio=16 / 9).aspect_ratio == pytest.approx(16 / 9)
    assert rt.encode(frames(), aspect_ratio=2).aspect_ratio == 2.0


def test_manifest_path_names_its_directory(private_export):
    rt = load(private_export / "manifest.json", backend="onnxruntime-cpu")
    assert rt.frame_range == (2, T)
    with pytest.raises(ValueError, match="is a file; load.* takes an export folder"):
        load(private_export / "encoder.onnx", backend="onnxruntime-cpu")


def test_scene_of_a_collected_runtime_is_refused():
    """Ownership is a token, not id(): a runtime made after another was collected may reuse its id."""
    import gc

    directory = exported("tiny", T, "fp32")[1]
    scene = load(directory, backend="onnxruntime-cpu").encode(frames())
    gc.collect()
    other = load(directory, backend="onnxruntime-cpu")
    with pytest.raises(ValueError, match="encoded by another runtime"):
        other.query(scene, np.random.rand(3, 2).astype(np.float32), 0, 0, 0)


def test_encoder_of_another_export_is_refused_even_with_an_edited_manifest(private_export, tmp_path):
    from d4rt.export import export_onnx
    from d4rt.runtime.manifest import sha256_file
    from tests.exported import random_model

    other = tmp_path / "other"
    export_onnx(random_model("tiny"), other, num_frames=T, progress=False)  # same shapes, other weights
    (private_export / "encoder.onnx").write_bytes((other / "encoder.onnx").read_bytes())
    path = private_export / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["graphs"]["encoder"]["sha256"] = sha256_file(private_export / "encoder.onnx")
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="encoder in .* comes from another export .* exported together"):
        load(private_export, backend="onnxruntime-cpu")


def test_manifest_path_names_its_folder(private_export):
    assert load(private_export / "manifest.json", backend="onnxruntime-cpu").num_frames == T
