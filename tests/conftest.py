"""Shared test set-up.

- TRITON_INTERPRET=1 is set before anything imports triton, so the kernels run on the CPU (no GPU in CI).
- D4RT_PRECISION=export: `d4rt infer` runs the export's graphs, whatever the CPU (AMX or not).
- Every test draws fresh random inputs: the run's seed is new each run, printed (shown on failure), and can be
  pinned with D4RT_TEST_SEED=<int> to reproduce a failure; each test's own seed is derived from it and its id.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# `d4rt infer` runs the export's own graphs in tests, on every CPU alike (its default, "auto", runs bf16 on torch on a
# CPU with AMX: tests/test_precision.py tests that choice explicitly)
os.environ.setdefault("D4RT_PRECISION", "export")

import random  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


RUN_SEED = int(os.environ.get("D4RT_TEST_SEED", random.SystemRandom().randrange(2**31)))


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Seeds numpy, torch and random for each test from the run's seed and the test's id: every test draws its own
    numbers (two tests never share a draw, e.g. a cached export and a "different" model), reproducibly."""
    seed = (RUN_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31
    print(f"D4RT_TEST_SEED={RUN_SEED} (this test's seed: {seed})")
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return seed


TEST_IMAGE_SIZE = {"tiny": 128}  # tests run the tiny preset at 128 x 128 (4x fewer tokens) for speed


def config_for_tests(preset: str):
    """A preset at the input size the tests use."""
    from d4rt import D4RTConfig

    return D4RTConfig.preset(preset, **({"image_size": TEST_IMAGE_SIZE[preset]} if preset in TEST_IMAGE_SIZE else {}))


@pytest.fixture(scope="session")
def tiny_config():
    return config_for_tests("tiny")


def make_queries(batch: int, n: int, frames: int, torch_module=None):
    """Random uv [B, N, 2] in [0, 1] and t_src, t_tgt, t_cam [B, N] in [0, frames)."""
    import torch

    uv = torch.rand(batch, n, 2)
    t = torch.randint(0, frames, (3, batch, n))
    return uv, t[0], t[1], t[2]
