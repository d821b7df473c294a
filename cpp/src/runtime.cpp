// Runtime: the numpy around the engine in runtime/runtime.py, in C++ (checks, resize, batching, sigmoids).
#include "d4rt/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <random>

#include "d4rt/inputs.hpp"
#include "d4rt/video.hpp"

namespace d4rt {
namespace {

uint64_t new_token() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t base = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  return base ^ (++counter * 0x9E3779B97F4A7C15ull);
}

// 0.5 (1 + tanh(x / 2)) in float32, as the Python runtime's sigmoid (no overflow for large |x|).
void sigmoid_in_place(std::vector<float>& x) {
  for (float& v : x) v = 0.5f * (1.0f + std::tanh(0.5f * v));
}

}  // namespace

Runtime::Runtime(const std::string& export_dir, const std::string& precision, int threads, bool verify_sha256)
    : manifest_(read_manifest(export_dir)), token_(new_token()) {
  engine_ = make_aoti_engine(manifest_, precision, threads, verify_sha256);
}

Runtime::Runtime(std::unique_ptr<Engine> engine, const Manifest& manifest)
    : manifest_(manifest), engine_(std::move(engine)), token_(new_token()) {}

Runtime::~Runtime() = default;

Scene Runtime::encode(const Frames& frames, std::optional<double> aspect_ratio) const {
  aspect_ratio = check_aspect_ratio(aspect_ratio);
  if (frames.num_frames < 0 || frames.height < 0 || frames.width < 0 ||
      static_cast<int64_t>(frames.data.size()) != frames.num_frames * frames.height * frames.width * 3)
    throw Error("frames must be [T, H, W, 3] RGB uint8: " + std::to_string(frames.data.size()) +
                " bytes do not make [" + std::to_string(frames.num_frames) + ", " + std::to_string(frames.height) +
                ", " + std::to_string(frames.width) + ", 3]");
  Scene scene;
  std::string warning;
  const int64_t T = usable_frame_count(frames.num_frames, frame_range(), manifest_.frame_step, &warning);
  if (!warning.empty()) scene.warnings_.push_back(warning);
  if (frames.height < 2 || frames.width < 2)
    throw Error("frames are " + std::to_string(frames.height) + "x" + std::to_string(frames.width) +
                " pixels; need at least 2x2");
  const int64_t S = manifest_.image_size;
  std::vector<float> video;
  prepare_clip(frames.data.data(), T, frames.height, frames.width, S, scene.frames_, video);
  scene.aspect_ratio_ = static_cast<float>(
      aspect_ratio ? *aspect_ratio : static_cast<double>(frames.width) / static_cast<double>(frames.height));
  scene.num_frames_ = T;
  scene.image_size_ = S;
  scene.state_ = engine_->encode(video, T, S, scene.aspect_ratio_);
  scene.runtime_token_ = token_;
  return scene;
}

void Runtime::check_scene(const Scene& scene) const {
  if (!scene.state_) throw Error("scene must be a Scene from rt.encode(...), got an empty Scene");
  if (scene.runtime_token_ != token_)
    throw Error("this scene was encoded by another runtime; encode the clip with this runtime (" + name() +
                "): its keys and values live on that runtime's device");
}

QueryResult Runtime::query(const Scene& scene, const std::vector<float>& uv, const std::vector<int32_t>& t_src,
                           const std::vector<int32_t>& t_tgt, const std::vector<int32_t>& t_cam,
                           int64_t batch_size) const {
  check_scene(scene);
  check_uv(uv);
  const int64_t N = static_cast<int64_t>(uv.size() / 2);
  check_times("t_src", t_src, N, scene.num_frames());
  check_times("t_tgt", t_tgt, N, scene.num_frames());
  check_times("t_cam", t_cam, N, scene.num_frames());
  check_batch_size(batch_size);
  const int64_t limit = engine_->max_queries();
  const int64_t step = limit > 0 ? std::min(batch_size, limit) : batch_size;
  QueryResult r;
  r.xyz.resize(N * 3), r.uv_tgt.resize(N * 2), r.visibility.resize(N), r.displacement.resize(N * 3);
  r.normal.resize(N * 3), r.confidence.resize(N);
  std::vector<int32_t> t;
  for (int64_t s = 0; s < N; s += step) {
    const int64_t n = std::min(step, N - s);
    t.resize(n * 3);
    for (int64_t i = 0; i < n; i++) t[3 * i] = t_src[s + i], t[3 * i + 1] = t_tgt[s + i], t[3 * i + 2] = t_cam[s + i];
    DecodeOutputs out{r.xyz.data() + 3 * s,          r.uv_tgt.data() + 2 * s, r.visibility.data() + s,
                      r.displacement.data() + 3 * s, r.normal.data() + 3 * s, r.confidence.data() + s};
    engine_->decode(*scene.state_, uv.data() + 2 * s, t.data(), n, out);
  }
  sigmoid_in_place(r.visibility);
  sigmoid_in_place(r.confidence);
  return r;
}

std::vector<float> Runtime::depth(const Scene& scene, int64_t t, int64_t size, int64_t batch_size) const {
  check_scene(scene);
  const int64_t n = size == 0 ? scene.image_size() : size;
  check_grid_size("size", n);
  check_times("frames", {static_cast<int32_t>(std::clamp<int64_t>(t, INT32_MIN, INT32_MAX))}, 1, scene.num_frames());
  // The grid of runtime/geometry.py's grid_uv: linspace(0, 1, n) in float32, row-major (v outer, u inner).
  std::vector<float> g(n), uv(2 * n * n);
  const double step = 1.0 / static_cast<double>(n - 1);  // numpy.linspace: i * step in float64, the end exact
  for (int64_t i = 0; i < n; i++) g[i] = static_cast<float>(i == n - 1 ? 1.0 : static_cast<double>(i) * step);
  for (int64_t y = 0; y < n; y++)
    for (int64_t x = 0; x < n; x++) uv[2 * (y * n + x)] = g[x], uv[2 * (y * n + x) + 1] = g[y];
  std::vector<int32_t> tt(n * n, static_cast<int32_t>(t));
  QueryResult r = query(scene, uv, tt, tt, tt, batch_size);
  std::vector<float> depth(n * n);
  for (int64_t i = 0; i < n * n; i++) depth[i] = r.xyz[3 * i + 2];
  return depth;
}

}  // namespace d4rt
