"""Result files, each written atomically: 16-bit depth PNGs, npz arrays, a coloured PLY point cloud, a camera
trajectory JSON and a preview PNG (matplotlib, imported only here)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from d4rt.runtime.files import write_bytes_atomic, write_text_atomic


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def write_json(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def depth_to_uint16(depth: np.ndarray, depth_max: float) -> np.ndarray:
    """Depth (any shape) -> uint16 with 65535 = depth_max; depth <= 0 or non-finite -> 0 (invalid)."""
    scale = 65535.0 / depth_max if depth_max > 0 else 0.0
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    return np.clip(np.rint(d * scale), 0, 65535).astype(np.uint16)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """uint8 RGB [H, W, 3] or uint16 / uint8 grey [H, W] as PNG (OpenCV)."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode {path} as PNG")
    return write_bytes_atomic(path, data.tobytes())


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, comment: str | None = None) -> Path:
    """Binary little-endian PLY: float x, y, z and uchar red, green, blue per vertex. xyz [P, 3], rgb [P, 3] uint8;
    ``comment`` (one line) goes into the header."""
    xyz, rgb = np.asarray(xyz, np.float32), np.asarray(rgb, np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"write_ply needs xyz [P, 3] and rgb [P, 3], got {xyz.shape} and {rgb.shape}")
    vertex = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    vertex["r"], vertex["g"], vertex["b"] = rgb.T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        + (f"comment {comment}\n" if comment else "")
        + f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    return write_bytes_atomic(path, header.encode("ascii") + vertex.tobytes())


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back what :func:`write_ply` writes: (xyz [P, 3] float32, rgb [P, 3] uint8)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    vertex = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                               ("b", "u1")], count=count)
    return np.stack([vertex["x"], vertex["y"], vertex["z"]], -1), np.stack([vertex["r"], vertex["g"], vertex["b"]], -1)


DEPTH_COLOURMAP = "inferno_r"  # near bright, far dark: how people read a depth map


def depth_display_range(depth: np.ndarray) -> tuple[float, float]:
    """The colour scale of a depth preview: the 2nd and 98th percentile of the valid (finite, > 0) depths, so a
    few stray far or near pixels do not wash it out. depth [...] -> (near, far) with near < far."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if not valid.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(valid, [2, 98]))
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo), 1.0) * 1e-3)


def preview_figure(frames: np.ndarray, depth: np.ndarray, T_wc: np.ndarray, columns: int = 6,
                   labels: np.ndarray | None = None, aspect_ratio: float = 1.0):
    """The matplotlib figure of :func:`write_preview` (Agg backend): a row of frames, the row of their depth maps
    (``DEPTH_COLOURMAP``, one shared colour bar in the depth's units), the camera trajectory seen from above.

    frames [T, S, S, 3] uint8, depth [T, n, n] (z in the frame's camera), T_wc [T, 4, 4]; labels [T]: the frame
    numbers shown (default 0 .. T-1; the source frame numbers of a selection); aspect_ratio: the source video's
    width / height, so the square network frames and depth maps are drawn in the video's shape. -> Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(frames)
    shown = np.unique(np.linspace(0, T - 1, min(columns, T)).round().astype(int))
    stretch = 1.0 / float(aspect_ratio)  # matplotlib's aspect: a pixel's drawn height / width
    fig = plt.figure(figsize=(2.2 * max(1.0, min(float(aspect_ratio), 3.0)) * len(shown) + 1.0, 7.5))
    grid = fig.add_gridspec(3, len(shown) + 1, height_ratios=[1, 1, 1.4], width_ratios=[1] * len(shown) + [0.08])
    near, far = depth_display_range(depth)
    image = None
    for col, t in enumerate(shown):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(frames[t], aspect=stretch)
        ax.set_title(f"frame {t if labels is None else int(labels[t])}", fontsize=9)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, col])
        image = ax.imshow(np.where(depth[t] > 0, depth[t], np.nan), cmap=DEPTH_COLOURMAP, vmin=near, vmax=far,
                          aspect=stretch * depth[t].shape[1] / depth[t].shape[0])
        ax.set_title(f"depth {t if labels is None else int(labels[t])}", fontsize=9)
        ax.axis("off")
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[1, -1]))
    bar.set_label("depth (model units)\nbright = near", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[2, :-1])
    centres = T_wc[:, :3, 3]
    ax.plot(centres[:, 0], centres[:, 2], "-o", markersize=3)
    forward = T_wc[:, :3, 2]  # camera +z axis in the world
    span = max(float(np.ptp(centres[:, [0, 2]], axis=0).max()), 1e-6)
    ax.quiver(centres[:, 0], centres[:, 2], forward[:, 0], forward[:, 2], angles="xy", scale_units="xy",
              scale=4.0 / span, width=0.003, color="tab:orange")
    ax.set_xlabel("x (frame 0 camera)")
    ax.set_ylabel("z (forward)")
    ax.set_title("camera trajectory from above (arrows: viewing direction)", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def write_preview(path: str | Path, frames: np.ndarray, depth: np.ndarray, T_wc: np.ndarray, columns: int = 6,
                  labels: np.ndarray | None = None, aspect_ratio: float = 1.0) -> Path:
    """A PNG of :func:`preview_figure`: frames and depth maps of a few frames with a depth colour bar (top) and
    the camera trajectory seen from above (bottom). frames [T, S, S, 3] uint8, depth [T, n, n], T_wc [T, 4, 4],
    labels [T] the frame numbers shown (default 0 .. T-1), aspect_ratio the video's width / height."""
    import matplotlib.pyplot as plt

    fig = preview_figure(frames, depth, T_wc, columns, labels, aspect_ratio)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())
