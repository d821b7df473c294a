"""viser vs Rerun on one ``d4rt infer`` result, in headless Chromium (SwiftShader WebGL): what docs/viewer.md's choice
rests on.

    # viser, in the project's environment (pip install ".[viewer]" selenium):
    python benchmarks/viewer.py --library viser RESULTS_DIR
    # Rerun needs numpy >= 2, which the serve extra's PyTriton refuses: its own environment
    python -m venv /tmp/rr && /tmp/rr/bin/pip install rerun-sdk==0.41.0 selenium opencv-python-headless
    /tmp/rr/bin/python benchmarks/viewer.py --library rerun RESULTS_DIR

Each run appends its row to ``--out`` (default benchmarks/results/<date>-viewer.json, with a .md beside it) through
d4rt.benchmarking.RowWriter, with the machine's load (``uptime``) beside the numbers: timings taken while other
jobs run are not the library's.

Measured: reading the result (s); building the scene / logging the recording (s); the server process's memory
(MiB RSS); the browser: seconds from opening the page to the first picture with the point cloud, its memory (MiB,
all Chromium processes), the frames per second it paints while the frames play at 30 frames/s; the recording's
size and the time to write it; screenshots beside the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _browser_module():
    """d4rt.viewer.browser, also from an environment where d4rt is not installed (Rerun's): loaded by path."""
    spec = importlib.util.spec_from_file_location("d4rt_viewer_browser", ROOT / "viewer" / "browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def opened_page(browser, url: str, shot: Path, min_pixels: int, box=None):
    """Open ``url`` in a fresh Chromium -> (driver, row): seconds to load the page and to the first picture with
    ``min_pixels`` drawn in ``box`` (default: viser's scene box), the browser's memory (MiB)."""
    box = box or browser.SCENE_BOX
    with browser.chromium() as driver:
        start = time.perf_counter()
        driver.get(url)
        row = {"page_load_s": round(time.perf_counter() - start, 2)}
        deadline = time.monotonic() + 120
        while True:
            drawn = int(browser.scene_pixels(browser.screenshot(driver, shot), box).sum())
            if drawn >= min_pixels or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        row["first_picture_s"] = round(time.perf_counter() - start, 2) if drawn >= min_pixels else None
        row["browser_mib"] = round(rss_mib(driver.service.process.pid), 1)
        yield driver, row


def bench_viser(result_dir: Path, shots: Path) -> dict:
    from d4rt.viewer import load_result, start_server, write_recording
    from d4rt.viewer.app import stop_quietly

    browser = _browser_module()
    row: dict = {"library": "viser", "version": __import__("viser").__version__}
    start = time.perf_counter()
    result = load_result(result_dir)
    row["read_s"] = round(time.perf_counter() - start, 3)
    row["frames"], row["points"] = result.num_frames, int(len(result.points["xyz"]))
    port = free_port()
    start = time.perf_counter()
    server, controls = start_server(result, port=port)
    row["serve_start_s"] = round(time.perf_counter() - start, 3)
    try:
        with opened_page(browser, f"http://127.0.0.1:{port}/", shots / "viser-first.png", 3000) as (driver, page):
            row.update(page)
            start = time.perf_counter()  # the first pass sends every frame's cloud; the second only shows / hides
            for t in range(result.num_frames):
                controls.frame.value = t
            row["sweep_first_s"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            for t in range(result.num_frames):
                controls.frame.value = t
            row["sweep_cached_s"] = round(time.perf_counter() - start, 3)
            controls.fps.value = 30.0
            controls.playing.value = True
            player_stop = threading.Event()
            player = threading.Thread(target=controls.play, args=(player_stop,), daemon=True)
            player.start()
            row["paint_fps_playing"] = round(browser.animation_fps(driver, 5.0), 1)
            player_stop.set()
            player.join()
            browser.screenshot(driver, shots / "viser-playing.png")
            row["browser_mib_after_all_frames"] = round(rss_mib(driver.service.process.pid), 1)
        row["server_mib"] = round(rss_mib(os.getpid()), 1)
    finally:
        stop_quietly(server)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_recording(result, Path(tmp))
        row["record_s"] = round(time.perf_counter() - start, 2)
        row["record_mib"] = round(sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20, 2)
        row["record_hosting"] = "index.html opens from the disk (file://); scene.viser beside it"
        page_url = (Path(tmp) / "index.html").as_uri()
        with opened_page(browser, page_url, shots / "viser-recording.png", 3000) as (_, page):
            row["record_first_picture_s"] = page["first_picture_s"]
    return row


def bench_rerun(result_dir: Path, shots: Path) -> dict:
    """The same scene in Rerun: per-frame points on a "frame" timeline, a pinhole camera with its image per frame,
    the trajectory, track trails, depth; saved as .rrd; served by the wheel's web viewer."""
    import json

    import rerun as rr
    from PIL import Image

    browser = _browser_module()
    row: dict = {"library": "rerun-sdk", "version": rr.__version__}
    start = time.perf_counter()
    depth = np.load(result_dir / "depth.npz")
    points = dict(np.load(result_dir / "points.npz"))
    tracks = dict(np.load(result_dir / "tracks.npz"))
    trajectory = json.loads((result_dir / "trajectory.json").read_text())
    names = depth["source_frames"]
    frames = np.stack([np.asarray(Image.open(result_dir / "frames" / f"{int(f):04d}.png").convert("RGB"))
                       for f in names])
    row["read_s"] = round(time.perf_counter() - start, 3)
    T_wc, K = np.asarray(trajectory["T_wc"]), np.asarray(trajectory["K"])
    F = len(names)
    row["frames"], row["points"] = F, int(len(points["xyz"]))

    def log_all(stream) -> None:
        stream.log("world", rr.ViewCoordinates.RDF, static=True)
        stream.log("world/trajectory", rr.LineStrips3D([T_wc[:, :3, 3]]), static=True)
        seen = np.nan_to_num(tracks["visibility"], nan=0.0) > 0.5
        for t in range(F):
            stream.set_time("frame", sequence=t)
            keep = points["frame"] == t
            stream.log("world/points", rr.Points3D(points["xyz"][keep], colors=points["rgb"][keep]))
            stream.log("world/camera", rr.Transform3D(translation=T_wc[t, :3, 3], mat3x3=T_wc[t, :3, :3]))
            stream.log("world/camera/image", rr.Pinhole(image_from_camera=K[t], resolution=[frames.shape[2],
                                                                                          frames.shape[1]]))
            stream.log("world/camera/image/rgb", rr.Image(frames[t]))
            stream.log("depth", rr.DepthImage(depth["depth"][t]))
            lo = max(0, t - 12)
            strips = [x[lo:t + 1][s[lo:t + 1]] for x, s in zip(tracks["xyz"][:64], seen[:64])]
            stream.log("world/tracks", rr.LineStrips3D([s for s in strips if len(s) > 1]))

    with tempfile.TemporaryDirectory() as tmp:
        rrd = Path(tmp) / "result.rrd"
        stream = rr.RecordingStream("d4rt_view_bench")
        start = time.perf_counter()
        stream.save(rrd)
        log_all(stream)
        stream.flush()
        stream.disconnect()
        row["record_s"] = round(time.perf_counter() - start, 2)
        row["record_mib"] = round(rrd.stat().st_size / 2**20, 2)
        row["record_hosting"] = ".rrd: the native viewer (`rerun file.rrd`, a 280 MB binary in the wheel) or the web " \
                                "viewer served by `rerun --web-viewer file.rrd` (a server)"

    rr.init("d4rt_view_bench")
    grpc_port, web_port = free_port(), free_port()
    start = time.perf_counter()
    uri = rr.serve_grpc(grpc_port=grpc_port)
    rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=uri)
    log_all(rr.get_global_data_recording())
    row["serve_start_s"] = round(time.perf_counter() - start, 3)
    url = f"http://127.0.0.1:{web_port}/?url={uri}"
    # Rerun draws its own panels around the 3-D view: count pixels of the window's middle
    with opened_page(browser, url, shots / "rerun-first.png", 3000, box=(300, 150, 900, 600)) as (driver, page):
        row.update(page)
        row["paint_fps_idle"] = round(browser.animation_fps(driver, 5.0), 1)
    row["server_mib"] = round(rss_mib(os.getpid()), 1)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="a d4rt infer results folder")
    p.add_argument("--library", choices=("viser", "rerun"), required=True)
    p.add_argument("--out", type=Path, default=None, help="JSON results file (default benchmarks/results/"
                   "<date>-viewer.json)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from d4rt.benchmarking import RowWriter, run_record

    record = run_record(command=" ".join(["python", *sys.argv]))
    out = args.out or ROOT / "benchmarks" / "results" / f"{record['date'][:10]}-viewer.json"
    shots = out.parent / f"{out.stem}-screenshots"
    rows = []
    if out.is_file():
        import json

        rows = json.loads(out.read_text()).get("results", [])
    header = ["library", "frames", "read s", "serve start s", "first picture s", "paint fps", "server MiB",
              "browser MiB", "record s", "record MiB", "load"]
    writer = RowWriter(out, record, header, lambda r: [
        r["library"], r["frames"], r["read_s"], r.get("serve_start_s"), r.get("first_picture_s"),
        r.get("paint_fps_playing", r.get("paint_fps_idle")), r.get("server_mib"), r.get("browser_mib"),
        r.get("record_s"), r.get("record_mib"), r["load"]], title="viewer: viser vs Rerun on one d4rt infer result")
    for r in rows:
        writer.rows.append(r)
    load_before = load_average()
    row = (bench_viser if args.library == "viser" else bench_rerun)(args.result, shots)
    row["load"] = f"before: {load_before.split('load average:')[-1].strip()}; after: " \
                  f"{load_average().split('load average:')[-1].strip()}"
    row["commit"], row["date"] = record["commit"], record["date"]
    writer.add(row)
    writer.close()
    for k, v in row.items():
        print(f"{k:28s} {v}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
