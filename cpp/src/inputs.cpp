// The Python runtime's input checks (runtime/runtime.py: _check_uv, _check_times, usable_frame_count, ...),
// same rules, same wording.
#include "d4rt/inputs.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "d4rt/error.hpp"

namespace d4rt {

std::string format_g4(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

void check_uv(const std::vector<float>& uv) {
  if (uv.size() % 2)
    throw Error("uv must be [N, 2] (u = x / (S - 1), v = y / (S - 1)), got " + std::to_string(uv.size()) +
                " values (not pairs)");
  int64_t bad = 0;
  float lo = INFINITY, hi = -INFINITY;
  for (float x : uv) {
    if (!std::isfinite(x)) {
      bad++;
      continue;
    }
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (bad) throw Error("uv contains " + std::to_string(bad) + " NaN or infinite values");
  if (!uv.empty() && (lo < 0.0f || hi > 1.0f))
    throw Error("uv has values in [" + format_g4(lo) + ", " + format_g4(hi) +
                "], expected [0, 1] (u = x / (S - 1))");
}

void check_times(const std::string& name, const std::vector<int32_t>& t, int64_t n, int64_t num_frames) {
  if (static_cast<int64_t>(t.size()) != n)
    throw Error(name + " must be a scalar or [N] = [" + std::to_string(n) + "], got shape (" +
                std::to_string(t.size()) + ",)");
  if (t.empty()) return;
  auto [lo, hi] = std::minmax_element(t.begin(), t.end());
  if (*lo < 0 || *hi >= num_frames)
    throw Error(name + " has frame indices in [" + std::to_string(*lo) + ", " + std::to_string(*hi) +
                "], expected [0, " + std::to_string(num_frames) + ") for this clip");
}

void check_batch_size(int64_t batch_size) {
  if (batch_size < 1) throw Error("batch_size must be a positive integer, got " + std::to_string(batch_size));
}

void check_grid_size(const std::string& name, int64_t size) {
  if (size < 2)
    throw Error(name + " must be an integer >= 2 (queries per side of the grid, corner to corner), got " +
                std::to_string(size) + "; leave it 0 for the default (S)");
}

std::optional<double> check_aspect_ratio(std::optional<double> aspect_ratio) {
  if (aspect_ratio && (!std::isfinite(*aspect_ratio) || *aspect_ratio <= 0))
    throw Error("aspect_ratio must be a positive width / height, got " + format_g4(*aspect_ratio));
  return aspect_ratio;
}

int64_t usable_frame_count(int64_t n, std::pair<int64_t, int64_t> frame_range, int64_t step, std::string* warning) {
  auto [lo, hi] = frame_range;
  const int64_t least = std::max(lo, step);
  if (n < least) {
    std::string one = n == 1 ? " (a single image: pass it twice, frames[[0, 0]], to see it as a static scene)" : "";
    throw Error("the clip has " + std::to_string(n) + (n == 1 ? " frame" : " frames") + ", these engines need at least " +
                std::to_string(least) + one);
  }
  if (n > hi)
    throw Error("the clip has " + std::to_string(n) + " frames, more than the " + std::to_string(hi) +
                " frames these engines encode at once; pass at most " + std::to_string(hi) +
                " frames (the Python runtime's rt.encode_video runs longer videos in aligned windows), or export "
                "for more with `d4rt export --frames`");
  const int64_t usable = std::min(n, hi) / step * step;
  if (usable < n && warning) {
    const int64_t dropped = n - usable;
    *warning = "the clip has " + std::to_string(n) + " frames; the encoder takes a multiple of " + std::to_string(step) +
               ": dropping the last " + std::to_string(dropped) + (dropped > 1 ? " frames" : " frame") +
               " (rt.encode_video keeps every frame)";
  }
  return usable;
}

}  // namespace d4rt
