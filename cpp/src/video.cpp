// cv2.resize(..., interpolation=INTER_AREA) for uint8 images, re-implemented with OpenCV's own arithmetic so the
// C++ runtime feeds the encoder the same bytes as the Python runtime (runtime/video.py), without linking OpenCV
// (no OpenCV C++ package on the machines this is built on; Jetson images have their own). Three cases, as
// OpenCV's resize() picks them (modules/imgproc/src/resize.cpp):
//  - shrinking by an integer factor in both axes ("area fast"): the block mean; 2 x 2 blocks round as
//    (a + b + c + d + 2) >> 2, other blocks as cvRound(sum * (1.f / area)) (round half to even);
//  - shrinking by any other factor: area weights per source row / column (computeResizeAreaTab), accumulated in
//    float, rounded with cvRound;
//  - enlarging in either axis: bilinear with "area" coefficients in 11-bit fixed point (INTER_RESIZE_COEF_BITS),
//    the vertical pass as OpenCV's VResizeLinear for uint8.
// Compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round differently from OpenCV.
#include "d4rt/video.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

namespace d4rt {
namespace {

inline uint8_t saturate_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }
inline int round_even(double v) { return static_cast<int>(std::lrint(v)); }
inline int round_even_f(float v) { return static_cast<int>(std::lrintf(v)); }

struct DecimateAlpha {
  int si, di;
  float alpha;
};

// OpenCV's computeResizeAreaTab.
std::vector<DecimateAlpha> area_tab(int ssize, int dsize, int cn, double scale) {
  std::vector<DecimateAlpha> tab;
  for (int dx = 0; dx < dsize; dx++) {
    double fsx1 = dx * scale;
    double fsx2 = fsx1 + scale;
    double cell_width = std::min(scale, ssize - fsx1);
    int sx1 = static_cast<int>(std::ceil(fsx1)), sx2 = static_cast<int>(std::floor(fsx2));
    sx2 = std::min(sx2, ssize - 1);
    sx1 = std::min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push_back({(sx1 - 1) * cn, dx * cn, static_cast<float>((sx1 - fsx1) / cell_width)});
    for (int sx = sx1; sx < sx2; sx++) tab.push_back({sx * cn, dx * cn, static_cast<float>(1.0 / cell_width)});
    if (fsx2 - sx2 > 1e-3)
      tab.push_back({sx2 * cn, dx * cn,
                     static_cast<float>(std::min(std::min(fsx2 - sx2, 1.), cell_width) / cell_width)});
  }
  return tab;
}

void area_fast(const uint8_t* src, int w, int cn, uint8_t* dst, int dh, int dw, int sx, int sy) {
  const int row = w * cn, dwidth = dw * cn;
  if (sx == 2 && sy == 2) {
    for (int dy = 0; dy < dh; dy++) {
      const uint8_t* S = src + static_cast<size_t>(2 * dy) * row;
      const uint8_t* N = S + row;
      uint8_t* D = dst + static_cast<size_t>(dy) * dwidth;
      for (int dx = 0; dx < dwidth; dx++) {
        int x = (dx / cn) * 2 * cn + dx % cn;
        D[dx] = static_cast<uint8_t>((S[x] + S[x + cn] + N[x] + N[x + cn] + 2) >> 2);
      }
    }
    return;
  }
  const float scale = 1.f / static_cast<float>(sx * sy);
  for (int dy = 0; dy < dh; dy++) {
    uint8_t* D = dst + static_cast<size_t>(dy) * dwidth;
    for (int dx = 0; dx < dwidth; dx++) {
      int x0 = (dx / cn) * sx * cn + dx % cn, sum = 0;
      for (int y = 0; y < sy; y++) {
        const uint8_t* S = src + static_cast<size_t>(dy * sy + y) * row + x0;
        for (int x = 0; x < sx; x++) sum += S[x * cn];
      }
      D[dx] = saturate_u8(round_even_f(static_cast<float>(sum) * scale));
    }
  }
}

void area_general(const uint8_t* src, int h, int w, int cn, uint8_t* dst, int dh, int dw, double scale_x,
                  double scale_y) {
  const auto xtab = area_tab(w, dw, cn, scale_x);
  const auto ytab = area_tab(h, dh, 1, scale_y);
  const int dwidth = dw * cn;
  std::vector<float> buf(dwidth), sum(dwidth, 0.f);
  int prev_dy = ytab.empty() ? 0 : ytab[0].di;
  for (const auto& y : ytab) {
    const float beta = y.alpha;
    const uint8_t* S = src + static_cast<size_t>(y.si) * w * cn;
    std::fill(buf.begin(), buf.end(), 0.f);
    for (const auto& x : xtab)
      for (int c = 0; c < cn; c++) buf[x.di + c] = buf[x.di + c] + S[x.si + c] * x.alpha;
    if (y.di != prev_dy) {
      uint8_t* D = dst + static_cast<size_t>(prev_dy) * dwidth;
      for (int dx = 0; dx < dwidth; dx++) {
        D[dx] = saturate_u8(round_even_f(sum[dx]));
        sum[dx] = beta * buf[dx];
      }
      prev_dy = y.di;
    } else {
      for (int dx = 0; dx < dwidth; dx++) sum[dx] += beta * buf[dx];
    }
  }
  uint8_t* D = dst + static_cast<size_t>(prev_dy) * dwidth;
  for (int dx = 0; dx < dwidth; dx++) D[dx] = saturate_u8(round_even_f(sum[dx]));
}

constexpr int kCoefBits = 11, kCoefScale = 1 << kCoefBits;

// INTER_AREA when enlarging in either axis: OpenCV's linear resize with area coefficients, uint8 fixed point.
void area_linear(const uint8_t* src, int h, int w, int cn, uint8_t* dst, int dh, int dw, double inv_scale_x,
                 double inv_scale_y) {
  const double scale_x = 1. / inv_scale_x, scale_y = 1. / inv_scale_y;
  const int width = dw * cn;
  std::vector<int> xofs(width);
  std::vector<int16_t> alpha(width * 2);
  int xmin = 0, xmax = dw;
  for (int dx = 0; dx < dw; dx++) {
    int sx = static_cast<int>(std::floor(dx * scale_x));
    float fx = static_cast<float>((dx + 1) - (sx + 1) * inv_scale_x);
    fx = fx <= 0 ? 0.f : fx - std::floor(fx);
    if (sx < 0) {
      xmin = dx + 1;
      fx = 0, sx = 0;
    }
    if (sx + 1 >= w) {
      xmax = std::min(xmax, dx);
      if (sx >= w - 1) fx = 0, sx = w - 1;
    }
    const int16_t a0 = static_cast<int16_t>(round_even_f((1.f - fx) * kCoefScale));
    const int16_t a1 = static_cast<int16_t>(round_even_f(fx * kCoefScale));
    for (int k = 0; k < cn; k++) {
      xofs[dx * cn + k] = sx * cn + k;
      alpha[(dx * cn + k) * 2] = a0;
      alpha[(dx * cn + k) * 2 + 1] = a1;
    }
  }
  (void)xmin;
  xmax *= cn;
  auto hresize = [&](const uint8_t* S, int* D) {
    int dx = 0;
    for (; dx < xmax; dx++) {
      int sx = xofs[dx];
      D[dx] = S[sx] * alpha[dx * 2] + S[sx + cn] * alpha[dx * 2 + 1];
    }
    for (; dx < width; dx++) D[dx] = S[xofs[dx]] * kCoefScale;
  };
  std::vector<int> row0(width), row1(width);
  for (int dy = 0; dy < dh; dy++) {
    int sy = static_cast<int>(std::floor(dy * scale_y));
    float fy = static_cast<float>((dy + 1) - (sy + 1) * inv_scale_y);
    fy = fy <= 0 ? 0.f : fy - std::floor(fy);
    const int b0 = static_cast<int16_t>(round_even_f((1.f - fy) * kCoefScale));
    const int b1 = static_cast<int16_t>(round_even_f(fy * kCoefScale));
    const int y0 = std::clamp(sy, 0, h - 1), y1 = std::clamp(sy + 1, 0, h - 1);
    hresize(src + static_cast<size_t>(y0) * w * cn, row0.data());
    hresize(src + static_cast<size_t>(y1) * w * cn, row1.data());
    uint8_t* D = dst + static_cast<size_t>(dy) * width;
    for (int x = 0; x < width; x++)
      D[x] = saturate_u8((((b0 * (row0[x] >> 4)) >> 16) + ((b1 * (row1[x] >> 4)) >> 16) + 2) >> 2);
  }
}

}  // namespace

std::vector<uint8_t> resize_area(const uint8_t* src, int h, int w, int cn, int dh, int dw) {
  std::vector<uint8_t> dst(static_cast<size_t>(dh) * dw * cn);
  if (h == dh && w == dw) {
    std::memcpy(dst.data(), src, dst.size());
    return dst;
  }
  const double inv_scale_x = static_cast<double>(dw) / w, inv_scale_y = static_cast<double>(dh) / h;
  const double scale_x = 1. / inv_scale_x, scale_y = 1. / inv_scale_y;
  if (scale_x >= 1 && scale_y >= 1) {
    const int isx = round_even(scale_x), isy = round_even(scale_y);
    if (std::abs(scale_x - isx) < DBL_EPSILON && std::abs(scale_y - isy) < DBL_EPSILON)
      area_fast(src, w, cn, dst.data(), dh, dw, isx, isy);
    else
      area_general(src, h, w, cn, dst.data(), dh, dw, scale_x, scale_y);
  } else {
    area_linear(src, h, w, cn, dst.data(), dh, dw, inv_scale_x, inv_scale_y);
  }
  return dst;
}

void prepare_clip(const uint8_t* frames, int64_t T, int64_t H, int64_t W, int64_t S, std::vector<uint8_t>& resized,
                  std::vector<float>& video) {
  const size_t frame_in = static_cast<size_t>(H) * W * 3, frame_out = static_cast<size_t>(S) * S * 3;
  resized.resize(static_cast<size_t>(T) * frame_out);
  video.resize(resized.size());
  for (int64_t t = 0; t < T; t++) {
    auto r = resize_area(frames + t * frame_in, static_cast<int>(H), static_cast<int>(W), 3, static_cast<int>(S),
                         static_cast<int>(S));
    std::memcpy(resized.data() + t * frame_out, r.data(), frame_out);
    float* v = video.data() + t * frame_out;  // [3, S, S] of frame t
    for (int64_t y = 0; y < S; y++)
      for (int64_t x = 0; x < S; x++)
        for (int c = 0; c < 3; c++) v[(c * S + y) * S + x] = static_cast<float>(r[(y * S + x) * 3 + c]) / 255.0f;
  }
}

}  // namespace d4rt
