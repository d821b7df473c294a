"""The scene store (LRU, bounded in bytes) and the serve package's import rules, without a server."""

import subprocess
import sys

import numpy as np
import pytest

from d4rt.runtime import Scene
from d4rt.runtime.video import Clip
from d4rt.serve import SceneStore, UnknownSceneError
from d4rt.serve.server import ServeSettings, check_query_values


def scene() -> Scene:
    rng = np.random.default_rng(np.random.randint(2**31))
    clip = Clip(rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8), rng.random((1, 2, 3, 4, 4), np.float32), 1.0,
                (4, 4))
    return Scene(clip, state=None)


def test_store_evicts_least_recently_used_and_stays_under_its_bound():
    store = SceneStore(max_bytes=300)
    a, b = store.put(scene(), 100), store.put(scene(), 100)
    store.get(a)  # a is now more recent than b
    c = store.put(scene(), 150)  # 350 > 300: b goes, a stays
    assert store.nbytes == 250 and len(store) == 2 and store.evictions == 1
    store.get(a), store.get(c)
    with pytest.raises(UnknownSceneError, match="encode the clip again"):
        store.get(b)
    assert len({a, b, c}) == 3 and all(len(i) == 32 for i in (a, b, c))


def test_store_refuses_a_scene_larger_than_itself():
    store = SceneStore(max_bytes=100)
    with pytest.raises(ValueError, match="--max-scene-bytes"):
        store.put(scene(), 101)
    with pytest.raises(ValueError, match="max_bytes"):
        SceneStore(0)


def test_query_value_checks_name_the_problem():
    rng = np.random.default_rng(np.random.randint(2**31))
    uv, t = rng.random((10, 2), dtype=np.float32), rng.integers(0, 4, (10, 3)).astype(np.int32)
    assert check_query_values(uv, t, 4, 10) is None
    assert "at most 9" in check_query_values(uv, t, 4, 9)
    assert "t_cam" in check_query_values(uv, t + np.array([0, 0, 4], np.int32), 4, 10)
    assert "no queries" in check_query_values(uv[:0], t[:0], 4, 10)
    assert "rows" in check_query_values(uv, t[:5], 4, 10)
    with pytest.raises(ValueError, match="max_delay_s"):
        ServeSettings(max_delay_s=5.0)


def test_serve_imports_neither_torch_nor_triton():
    code = ("import sys, d4rt.serve; print([m for m in ('torch', 'pytriton', 'tritonclient', 'd4rt.models') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_serve_validates_before_loading(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import sys; from d4rt.cli import main; sys.exit(main())", "serve",
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "d4rt export" in run.stderr
