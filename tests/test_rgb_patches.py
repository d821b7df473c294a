"""The separable RGB-patch sampler against the four-corner gathers it replaced, at borders and corners."""

import pytest
import torch

from d4rt.models.query_embedding import sample_rgb_patches


def four_corner_gathers(video, uv, t_src, size):
    """The sampler before the separable one (d4rt 26ea686): per tap, a clamped coordinate and four gathers."""
    B, T, C, H, W = video.shape
    N = uv.shape[1]
    r = size // 2
    offsets = torch.arange(-r, r + 1, dtype=uv.dtype)
    x = (uv[..., 0, None] * (W - 1))[..., None, :] + offsets[None, :]
    y = (uv[..., 1, None] * (H - 1))[..., :, None] + offsets[:, None]
    x, y = x.clamp(0, W - 1), y.clamp(0, H - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0)[:, :, None], (y - y0)[:, :, None]
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    x0, y0, x1, y1 = x0.long(), y0.long(), x1.long(), y1.long()
    flat = video.reshape(B, T * C * H * W)
    base = (t_src.long() * (C * H * W))[:, :, None, None, None] + torch.arange(C)[:, None, None] * (H * W)

    def gather(yi, xi):
        return torch.gather(flat, 1, (base + (yi * W + xi)[:, :, None]).reshape(B, -1)).view(B, N, C, size, size)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).reshape(B, N, C * size * size)


def border_queries(H, W, size, dtype):
    """uv at the four corners, along the four edges, on whole pixels, and within a patch radius of a border."""
    r = size // 2
    xs = [0.0, 0.3, r - 0.5, r, r + 0.25, W / 2 + 0.5, W - 1 - r - 0.75, W - 1 - r, W - 1.5, W - 1.0]
    ys = [0.0, 0.6, r - 0.1, H / 2, H - 1 - r + 0.5, H - 1.25, H - 1.0]
    grid = torch.tensor([[x / (W - 1), y / (H - 1)] for x in xs for y in ys], dtype=dtype)
    return grid[None]


@pytest.mark.parametrize("size", [1, 3, 9])
@pytest.mark.parametrize("H, W", [(12, 12), (9, 16)])
def test_separable_sampler_is_the_four_corner_sampler_in_float64(size, H, W):
    """Same values to float64 rounding: at corners, edges, whole pixels, and at random points."""
    B, T = 2, 3
    video = torch.rand(B, T, 3, H, W, dtype=torch.float64)
    uv = torch.cat([border_queries(H, W, size, torch.float64)] * B)
    uv = torch.cat([uv, torch.rand(B, 50, 2, dtype=torch.float64)], dim=1)
    t_src = torch.randint(0, T, uv.shape[:2])
    got, want = sample_rgb_patches(video, uv, t_src, size), four_corner_gathers(video, uv, t_src, size)
    assert got.shape == want.shape == (B, uv.shape[1], 3 * size * size)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_separable_sampler_in_float32():
    """In float32 the two differ only by rounding: the old sampler took each tap's fraction from x + offset (one
    rounding of up to ulp(S) ~ 1.5e-5 at S = 256), the separable one from x itself. Pixel values are in [0, 1]."""
    video = torch.rand(1, 4, 3, 256, 256)
    uv = torch.cat([border_queries(256, 256, 9, torch.float32), torch.rand(1, 500, 2)], dim=1)
    t_src = torch.randint(0, 4, uv.shape[:2])
    got, want = sample_rgb_patches(video, uv, t_src, 9), four_corner_gathers(video, uv, t_src, 9)
    assert (got - want).abs().max() < 5e-5
    # at the corners the patch is the corner pixel's row / column repeated: check one outright
    corner = got[0, 0].view(3, 9, 9)  # uv = (0, 0): taps left of / above the frame read column / row 0
    torch.testing.assert_close(corner[:, :5, :5], video[0, t_src[0, 0], :, :1, :1].expand(3, 5, 5))
