"""The demo preview: depth drawn so that near is bright, with a colour bar in the depth's units."""

import cv2
import numpy as np

from d4rt.data.synthetic import Room
from d4rt.runtime.outputs import depth_display_range, preview_figure, write_preview


def luminance(rgba):
    return 0.2126 * rgba[..., 0] + 0.7152 * rgba[..., 1] + 0.0722 * rgba[..., 2]


def test_preview_near_is_bright_and_has_a_colour_bar(tmp_path):
    import matplotlib.pyplot as plt

    clip = Room.random(int(np.random.randint(10_000)), num_frames=4).render_clip(48, 48)
    fig = preview_figure(clip.rgb, clip.depth, clip.T_wc, labels=np.array([10, 11, 12, 13]))
    try:
        assert {ax.get_title() for ax in fig.axes if ax.images} >= {"frame 10", "depth 13"}
        depth_images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_title().startswith("depth")]
        assert len(depth_images) == 4
        bars = [ax for ax in fig.axes if "near" in ax.get_ylabel()]
        assert len(bars) == 1
        near, far = depth_display_range(clip.depth)
        lo, hi = bars[0].get_ylim()
        assert np.isclose(lo, near) and np.isclose(hi, far)
        image = depth_images[0]
        d = clip.depth[0]
        colours = image.to_rgba(np.asarray(image.get_array()))
        assert luminance(colours[np.unravel_index(d.argmin(), d.shape)]) > luminance(
            colours[np.unravel_index(d.argmax(), d.shape)]) + 0.3
    finally:
        plt.close(fig)
    png = cv2.imread(str(write_preview(tmp_path / "preview.png", clip.rgb, clip.depth, clip.T_wc)))
    assert png is not None and png.shape[0] > 300


def test_depth_display_range():
    rng = np.random.default_rng(np.random.randint(2**31))
    depth = rng.uniform(1, 5, (3, 20, 20))
    depth[0, 0, :5] = [np.nan, np.inf, -1, 0, 1e6]
    valid = depth[np.isfinite(depth) & (depth > 0)]
    assert depth_display_range(depth) == tuple(np.percentile(valid, [2, 98]))
    near, far = depth_display_range(np.full((2, 4, 4), 3.0))
    assert near == 3.0 and far > near
    assert depth_display_range(np.zeros((2, 4, 4))) == (0.0, 1.0)


def test_preview_keeps_the_source_aspect_ratio():
    """Issue #24: 1296 x 720 frames were drawn square. The S x S network frames and the n x n depth maps are drawn
    in the video's shape: each image's drawn box has the source's width / height."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(np.random.randint(2**31))
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    depth = rng.uniform(1, 5, (3, 16, 16))
    for width, height in ((1296, 720), (720, 1296), (640, 640)):
        fig = preview_figure(frames, depth, np.tile(np.eye(4), (3, 1, 1)), aspect_ratio=width / height)
        try:
            fig.canvas.draw()
            boxes = [ax.get_window_extent() for ax in fig.axes if ax.images and ax.get_title()[:5] in ("frame", "depth")]
            assert len(boxes) == 6
            for box in boxes:
                assert abs(box.width / box.height - width / height) < 0.02 * width / height, (width, height, box)
        finally:
            plt.close(fig)
