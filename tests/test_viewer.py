"""``d4rt view`` as a person uses it: the server started as a command, the page opened in a real headless Chromium
(SwiftShader WebGL), screenshots into the test's folder, the point cloud seen on screen, the picture changing when
the time slider moves, Ctrl-C stopping the server; the --record page opened from the disk with no server; bad
input one line each. The result is the sample clip's ground truth written by the project's own writers
(tests/viewer_results.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.viewer_results import write_result

pytest.importorskip("viser", reason="the viewer extra is not installed: pip install '.[viewer]'")

from d4rt.viewer.browser import (changed_fraction, chromium, chromium_paths, scene_pixels, screenshot, set_number,
                                 wait_for_scene)

needs_browser = pytest.mark.skipif(chromium_paths() is None, reason="Debian's chromium and chromium-driver are not "
                                   "installed (apt-get install chromium chromium-driver; .ci/run installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory) -> Path:
    return write_result(tmp_path_factory.mktemp("viewer") / "result", frames=8)


@pytest.fixture(scope="module")
def browser():
    if chromium_paths() is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    pytest.importorskip("selenium", reason="selenium is not installed (the dev extra has it)")
    with chromium() as driver:
        yield driver


def listening_addresses(port: int) -> list[str]:
    """The local IPv4 / IPv6 addresses with a socket listening on ``port`` (read from /proc/net, nothing sent)."""
    import ipaddress

    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
            found.append(str(ipaddress.ip_address(raw)))
    return sorted(found)


class ViewerProcess:
    """``d4rt view`` as a child process; ``url`` once it has printed its address."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "d4rt.cli", "view", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("d4rt view:") and "http://" in line:
                self.url = line.split("at ", 1)[1].split()[0]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> str:
        self._ready.wait(timeout)
        assert self.url, f"d4rt view printed no address: {self.lines}"
        return self.url

    def interrupt(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@needs_browser
def test_view_shows_the_cloud_and_the_slider_moves_time(result_dir, browser, tmp_path):
    port = free_port()
    viewer = ViewerProcess(str(result_dir), "--port", str(port))
    try:
        url = viewer.wait_ready()
        assert url == f"http://127.0.0.1:{port}/"
        assert listening_addresses(port) == ["127.0.0.1"], "the viewer must listen on loopback only by default"
        browser.get(url)
        wait_for_scene(browser, tmp_path / "frame0.png", min_pixels=3000)
        time.sleep(2.0)  # let every frustum image arrive before the reference picture
        first = screenshot(browser, tmp_path / "frame0.png")
        set_number(browser, "Frame", 7)
        deadline = time.monotonic() + 45
        while True:
            time.sleep(1.0)
            later = screenshot(browser, tmp_path / "frame7.png")
            changed = changed_fraction(first, later)
            if changed > 0.01 or time.monotonic() > deadline:
                break
        assert scene_pixels(later).sum() >= 3000, f"the cloud of frame 7 is not drawn (see {tmp_path}/frame7.png)"
        assert changed > 0.01, f"moving the slider to frame 7 changed {changed:.2%} of the view (see {tmp_path})"
        assert viewer.interrupt() == 0, viewer.lines
        assert "d4rt view: stopped" in viewer.lines, viewer.lines
    finally:
        viewer.kill()


@needs_browser
def test_recording_opens_from_the_disk_without_a_server(result_dir, browser, tmp_path):
    from d4rt.cli import main

    out = tmp_path / "recording"
    assert main(["view", str(result_dir), "--record", str(out)]) == 0
    assert (out / "index.html").is_file() and (out / "scene.viser").is_file()
    assert not list(tmp_path.glob(".recording.*")), "a temporary folder was left beside the recording"
    browser.get((out / "index.html").as_uri())  # file://: nothing serves it
    wait_for_scene(browser, tmp_path / "recording.png", min_pixels=3000)


def test_recording_holds_every_frame(result_dir, tmp_path):
    """The .viser file decodes (zstd + msgpack, viser's format) and holds one point cloud per frame, each of the
    frame's points or the budget, whichever is fewer."""
    import msgspec
    import zstandard

    from d4rt.viewer import load_result, write_recording

    result = load_result(result_dir)
    (tmp_path / "rec").mkdir()
    write_recording(result, tmp_path / "rec", budget=1000)
    raw = (tmp_path / "rec" / "scene.viser").read_bytes()
    inner = zstandard.ZstdDecompressor().decompress(raw[8:], max_output_size=int.from_bytes(raw[:8], "little"))
    n = int.from_bytes(inner[:8], "little")
    payload = msgspec.msgpack.decode(inner[8:8 + n])
    clouds = [(time, m) for time, m in payload["messages"] if m.get("type") == "PointCloudMessage"]
    assert [time for time, _ in clouds] == pytest.approx([t / 8.0 for t in range(result.num_frames)])
    lengths = payload["binaryBufferLengths"]
    for (_, m), t in zip(clouds, range(result.num_frames)):
        points = m["props"]["points"]  # a placeholder for a binary buffer of float16 x, y, z
        assert lengths[points["__binary_index"]] == 3 * 2 * min(1000, result.points_in_frame(t))
    assert payload["durationSeconds"] == pytest.approx(result.num_frames / 8.0)


def test_frame_points_are_that_frames_points_cut_to_the_budget(result_dir):
    from d4rt.viewer import load_result

    result = load_result(result_dir)
    xyz_all, frame = result.points["xyz"], result.points["frame"]
    for t in (0, result.num_frames - 1):
        xyz, rgb = result.frame_points(t, 500)
        assert len(xyz) == 500 and rgb.shape == (500, 3)
        mine = {tuple(p) for p in xyz_all[frame == t]}
        assert all(tuple(p) in mine for p in xyz), "a point of another frame was shown"
        bigger, _ = result.frame_points(t, 1000)
        np.testing.assert_array_equal(bigger[:500], xyz)  # a smaller budget shows a subset of a larger one
    assert len(result.frame_points(0, 10**9)[0]) == int((frame == 0).sum())


def test_trails_join_consecutive_seen_positions():
    from d4rt.viewer.scene import trail_segments

    rng = np.random.default_rng(np.random.randint(2**31))
    xyz = rng.normal(size=(3, 10, 3))
    seen = np.ones((3, 10), bool)
    seen[1, 5] = False
    segments, which = trail_segments(xyz, seen, t=6, trail=3)
    # frames 3..6: 3 segments per track, track 1 loses the two touching frame 5
    assert np.bincount(which, minlength=3).tolist() == [3, 1, 3]
    np.testing.assert_allclose(segments[0], xyz[0, 3:5].astype(np.float32))
    assert len(trail_segments(xyz, seen, t=0, trail=3)[0]) == 0


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    from d4rt.cli import main

    code = main(["view", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_a_folder_that_is_not_a_result_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, err = run_cli(capsys, str(tmp_path), "--port", str(free_port()))
    assert code == 2 and len(err) == 1 and "is not a d4rt infer result" in err[0], err


def test_a_missing_file_is_one_line(result_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(result_dir, broken)
    (broken / "points.npz").unlink()
    code, err = run_cli(capsys, str(broken), "--port", str(free_port()))
    assert code == 2 and len(err) == 1 and "points.npz is missing" in err[0], err


def test_a_port_in_use_is_one_line(result_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_cli(capsys, str(result_dir), "--port", str(port))
    assert code == 2 and len(err) == 1 and f"port {port} on 127.0.0.1 is in use" in err[0], err


def test_a_video_without_export_is_one_line(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really")
    code, err = run_cli(capsys, str(video))
    assert code == 2 and len(err) == 1 and "--export" in err[0], err
