"""``d4rt view`` as library functions: serve a result in the browser, or write a recording that needs no server.

    >>> from d4rt.viewer import serve, write_recording, load_result
    >>> serve("results/", port=8080)                        # blocks; Ctrl-C stops it
    >>> write_recording(load_result("results/"), "recording/")   # recording/index.html opens from the disk

The server binds ``host`` (127.0.0.1 unless asked), one port, and stops cleanly on Ctrl-C (or ``stop`` set).
"""

from __future__ import annotations

import contextlib
import errno
import io
import signal
import socket
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from d4rt.viewer.results import Result, load_result

DEFAULT_BUDGET = 100_000  # points per frame on screen
DEFAULT_TRACKS = 64
DEFAULT_FPS = 8.0


def check_port_free(host: str, port: int) -> None:
    """Raise OSError (one line: what and how to fix) when ``host:port`` cannot be bound for listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: old connections do not count
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(f"port {port} on {host} is in use; pass another --port (or stop what listens there)") \
                    from None
            raise OSError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --host / --port") from None


def depth_beside_rgb(result: Result, t: int, near: float, far: float, height: int = 192) -> np.ndarray:
    """Frame t's image and its depth map side by side at the video's aspect -> [height, 2 w + 4, 3] uint8."""
    import cv2

    from d4rt.viewer.scene import depth_colour, display_image

    rgb = display_image(result.frames[t], result.aspect, height)
    depth = cv2.resize(depth_colour(result.depth[t], near, far), (rgb.shape[1], height),
                       interpolation=cv2.INTER_NEAREST)
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, depth], 1)


class Controls:
    """The GUI panel: time slider, play / pause, frames per second, point size, points per frame, track count, and
    the frame's RGB beside its depth. Every change goes through :class:`~d4rt.viewer.scene.ResultScene`."""

    def __init__(self, server, scene, fps: float = DEFAULT_FPS):
        from d4rt.runtime.outputs import depth_display_range

        r = scene.result
        self.server, self.scene, self.result = server, scene, r
        self.near, self.far = depth_display_range(r.depth)
        most = r.most_points_in_a_frame()
        gui = server.gui
        gui.add_markdown(f"**{r.folder.name}**: {r.num_frames} frames (source {int(r.source_frames[0])} .. "
                         f"{int(r.source_frames[-1])}), up to {most:,} points per frame, {r.num_tracks} tracks")
        self.frame = gui.add_slider("Frame", min=0, max=max(r.num_frames - 1, 1), step=1, initial_value=0,
                                    disabled=r.num_frames < 2)
        self.playing = gui.add_checkbox("Play", False, hint="play the frames in a loop")
        self.fps = gui.add_slider("Frames / s", min=1.0, max=30.0, step=1.0, initial_value=float(fps))
        with gui.add_folder("Display"):
            size = scene.point_size
            self.point_size = gui.add_slider("Point size", min=size / 10, max=size * 10, step=size / 20,
                                             initial_value=size)
            self.points = gui.add_slider("Points per frame", min=min(1000, most), max=max(most, 1),
                                         step=max(1, most // 200) if most > 1000 else 1,
                                         initial_value=min(scene.budget, most))
            self.tracks = gui.add_slider("Tracks", min=0, max=max(r.num_tracks, 1), step=1,
                                         initial_value=scene.tracks)
        self.image = gui.add_image(depth_beside_rgb(r, 0, self.near, self.far), label="RGB | depth",
                                   format="jpeg", jpeg_quality=85)
        self.frame.on_update(lambda _: self._show(int(self.frame.value)))
        self.point_size.on_update(lambda _: scene.set_point_size(self.point_size.value))
        self.points.on_update(lambda _: scene.set_budget(int(self.points.value)))
        self.tracks.on_update(lambda _: scene.set_tracks(int(self.tracks.value)))
        scene.budget = int(self.points.value)

    def _show(self, t: int) -> None:
        self.scene.show(t)
        self.image.image = depth_beside_rgb(self.result, t, self.near, self.far)

    def play(self, stop: threading.Event) -> None:
        """The player loop (a thread): while "Play" is ticked, step the slider at the chosen frame rate."""
        while not stop.is_set():
            if self.playing.value and self.result.num_frames > 1:
                self.frame.value = (int(self.frame.value) + 1) % self.result.num_frames
                stop.wait(1.0 / max(float(self.fps.value), 1e-3))
            else:
                stop.wait(0.05)


def new_viser_server(host: str, port: int):
    """A ``viser.ViserServer`` on host:port, without the banner viser prints (we print our own line)."""
    import viser

    with contextlib.redirect_stdout(io.StringIO()):
        return viser.ViserServer(host=host, port=port, label="d4rt view", verbose=False)


def stop_quietly(server) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        server.stop()


def start_server(result: Result, *, host: str = "127.0.0.1", port: int = 8080, budget: int = DEFAULT_BUDGET,
                 tracks: int = DEFAULT_TRACKS, point_size: float | None = None):
    """Start viser on ``host:port`` with the result's scene and controls -> (server, controls). The caller stops
    the server (``stop_quietly(server)``)."""
    from d4rt.viewer.scene import ResultScene

    check_port_free(host, port)
    server = new_viser_server(host, port)
    if server.get_port() != port:  # viser moves on to the next free port; we promised this one
        stop_quietly(server)
        raise OSError(f"port {port} on {host} was taken while starting; pass another --port")
    server.gui.configure_theme(control_width="large")
    scene = ResultScene(server, result, budget=budget, tracks=tracks, point_size=point_size)
    controls = Controls(server, scene)
    scene.show(0)
    return server, controls


def serve(source: str | Path | Result, *, host: str = "127.0.0.1", port: int = 8080, budget: int = DEFAULT_BUDGET,
          tracks: int = DEFAULT_TRACKS, point_size: float | None = None, stop: threading.Event | None = None,
          on_ready: Callable[[str], None] | None = print) -> None:
    """Serve a result folder (or a loaded :class:`Result`) until Ctrl-C, SIGTERM or ``stop`` is set; ``on_ready``
    gets the URL once the page can be opened."""
    result = source if isinstance(source, Result) else load_result(source)
    server, controls = start_server(result, host=host, port=port, budget=budget, tracks=tracks,
                                    point_size=point_size)
    stop = stop or threading.Event()
    player = threading.Thread(target=controls.play, args=(stop,), name="d4rt-view-player", daemon=True)
    player.start()
    shown_host = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"d4rt view: {result.folder} at http://{shown_host}:{port}/  (Ctrl-C stops)")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # Ctrl-C and `kill` both stop it cleanly
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        player.join(timeout=2.0)
        stop_quietly(server)


def write_recording(result: Result, out_dir: str | Path, *, budget: int = 20_000, tracks: int = DEFAULT_TRACKS,
                    fps: float = DEFAULT_FPS, point_size: float | None = None) -> Path:
    """Write a recording of the result into ``out_dir`` (an existing, empty folder):

    - ``index.html``: one self-contained page (viser's client from its wheel + the scene) that plays the frames
      with its own timeline; it opens from the disk (file://) in any browser, no server;
    - ``scene.viser``: the same recording for viser's own player (``?playbackPath=``).

    ``budget`` points per frame (smaller than the live viewer's: the file holds every frame). Returns out_dir.
    """
    from d4rt.runtime.files import write_bytes_atomic, write_text_atomic
    from d4rt.viewer.scene import ResultScene

    out_dir = Path(out_dir)
    server = new_viser_server("127.0.0.1", _free_port())
    try:
        serializer = server.get_scene_serializer()
        scene = ResultScene(server, result, budget=budget, tracks=tracks, point_size=point_size,
                            frustum_images=result.num_frames <= 200, keep_clouds=False)
        for t in range(result.num_frames):
            scene.show(t)
            serializer.insert_sleep(1.0 / fps)
        data = serializer.serialize()
        write_bytes_atomic(out_dir / "scene.viser", data)
        # as_html() serializes again: build the page from the same bytes
        write_text_atomic(out_dir / "index.html", _standalone_html(data))
    finally:
        stop_quietly(server)
    return out_dir


def _standalone_html(scene_bytes: bytes) -> str:
    """viser's client page with the recording embedded (what ``StateSerializer.as_html`` writes)."""
    import base64

    import viser

    client = (Path(viser.__file__).parent / "client" / "build" / "index.html").read_text()
    inject = (f'<script>window.__VISER_EMBED_DATA__="{base64.b64encode(scene_bytes).decode("ascii")}";'
              f"window.__VISER_EMBED_CONFIG__={{darkMode:false}};</script>")
    head_end = client.index("</head>")
    return client[:head_end] + inject + client[head_end:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_result(source: str | Path, export_dir: str | Path | None, work_dir: str | Path, *, backend: str = "auto",
                max_frames: int | None = None) -> Result:
    """A results folder as it is, or a video inferred with ``export_dir`` into ``work_dir`` first -> Result."""
    source = Path(source)
    if export_dir is None:
        return load_result(source)
    from d4rt.runtime import load
    from d4rt.runtime.infer import infer_video, load_frames

    infer_video(load(export_dir, backend=backend), load_frames(source), work_dir, max_frames=max_frames)
    result = load_result(work_dir)
    result.folder = source
    return result
