"""Exports shared by the export / runtime tests: each made once per test session (they take seconds).

Weights are random (drawn from the test's fresh seed) with random LayerNorm weights and biases, so a graph that
mixed up two norms or dropped an affine term could not pass; every predicted point lies in front of the camera
(``in_front_of_the_camera``), so the focal length of any frame is defined whatever the seed. Tests that damage files copy the directory first.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="d4rt-test-exports-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def randomize_norms(model) -> None:
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)


def in_front_of_the_camera(model, depth: float = 2.0):
    """Random weights predict points about as often behind the camera as in front, often a whole frame behind it
    (the output is dominated by the shared norm biases), and no focal length can be read from such a frame. A z bias
    of ``depth`` puts every point in front, as any trained model does: the heads' outputs stay random, with
    |W h| ~ 0.02 sqrt(dec_dim) << depth."""
    import torch

    with torch.no_grad():
        model.heads.xyz_head.bias[2] = depth
    return model


def random_model(preset: str, image_size: int | None = None, **overrides):
    from d4rt import D4RT
    from tests.conftest import config_for_tests

    config = config_for_tests(preset)
    if image_size is not None:
        config = config.replace(image_size=image_size)
    if overrides:
        config = config.replace(**overrides)
    model = D4RT(config).eval()
    randomize_norms(model)
    return in_front_of_the_camera(model)


@functools.cache
def exported(preset: str = "tiny", frames: int = 4, precision: str = "fp32", external_data: bool = False,
             image_size: int | None = None, attention: str | None = None, **overrides):
    """(model, directory): ``model`` exported for clips of 2 to ``frames`` frames, its checkpoint saved in
    directory/checkpoint; ``image_size`` and ``overrides`` (config fields) change the preset's test config (small
    models for long-video tests); ``attention``: the export's attention form (default export_onnx's)."""
    from d4rt.export import export_onnx
    from d4rt.runtime.manifest import sha256_file

    model = random_model(preset, image_size, **overrides)
    extra = "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    out = _ROOT / (f"{preset}-T{frames}-{precision}{'-ext' if external_data else ''}-S{image_size}{extra}"
                   f"{'-' + attention if attention else ''}")
    model.save_pretrained(out / "checkpoint")
    weights = out / "checkpoint" / "model.safetensors"
    checkpoint = {"path": "checkpoint", "sha256": {weights.name: sha256_file(weights)}}
    export_onnx(model, out, precision=precision, num_frames=frames, checkpoint=checkpoint,
                external_data=external_data, attention=attention, progress=False)
    return model, out


def copy_export(directory: Path, destination: Path) -> Path:
    """A private copy of an export directory (for tests that damage files)."""
    return Path(shutil.copytree(directory, destination / directory.name))


def small_export():
    """(model, directory): a tiny model at 16 x 16 pixels with a narrow decoder, exported for 2..8 frames: cheap
    enough to run a 200-frame video through `d4rt infer` in a test."""
    return exported("tiny", 8, "fp32", image_size=16, dec_dim=48, dec_heads=3, dec_mlp_dim=96, dec_depth=1)
