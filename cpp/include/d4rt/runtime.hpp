// The D4RT C++ runtime: an export folder in, float arrays out; the same answers as the Python runtime
// (d4rt.runtime.load(dir)): encode a clip once, then answer any number of queries in batches.
//
//   d4rt::Runtime rt("export/", "fp32", 4);                 // AOTInductor packages of `d4rt export --aoti`
//   d4rt::Scene scene = rt.encode(frames);                  // [T, H, W, 3] uint8, any H, W (resized to S x S)
//   d4rt::QueryResult res = rt.query(scene, uv, t_src, t_tgt, t_cam);   // probabilities, not logits
//   std::vector<float> depth = rt.depth(scene, 0);          // [S, S]
//
// Every bad input throws d4rt::Error with one line saying what is wrong and what to do.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "d4rt/engine.hpp"
#include "d4rt/error.hpp"
#include "d4rt/manifest.hpp"

namespace d4rt {

inline constexpr int64_t kDefaultBatch = 8192;

// Frames [T, H, W, 3] uint8 RGB, row-major.
struct Frames {
  std::vector<uint8_t> data;
  int64_t num_frames = 0, height = 0, width = 0;
};

// One encoded clip. Made by Runtime::encode; usable only with that runtime.
class Scene {
 public:
  int64_t num_frames() const { return num_frames_; }
  int64_t image_size() const { return image_size_; }
  float aspect_ratio() const { return aspect_ratio_; }
  const std::vector<uint8_t>& frames() const { return frames_; }  // [T, S, S, 3] uint8, the resized frames
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  friend class Runtime;
  std::shared_ptr<EngineState> state_;
  std::vector<uint8_t> frames_;
  std::vector<std::string> warnings_;
  int64_t num_frames_ = 0, image_size_ = 0;
  float aspect_ratio_ = 1.0f;
  uint64_t runtime_token_ = 0;
};

// The six outputs of N queries, float32, row-major.
struct QueryResult {
  std::vector<float> xyz;           // [N, 3] the point in t_cam's camera at time t_tgt
  std::vector<float> uv_tgt;        // [N, 2]
  std::vector<float> visibility;    // [N] probability
  std::vector<float> displacement;  // [N, 3]
  std::vector<float> normal;        // [N, 3]
  std::vector<float> confidence;    // [N] probability
  int64_t size() const { return static_cast<int64_t>(confidence.size()); }
};

class Runtime {
 public:
  // export_dir: a folder from `d4rt export ... --aoti`; precision "fp32" | "bf16"; threads: intra-op threads
  // (0: libtorch's default); verify_sha256: check every package against the manifest first.
  explicit Runtime(const std::string& export_dir, const std::string& precision = "fp32", int threads = 0,
                   bool verify_sha256 = true);
  // For tests and other engines: any Engine behind the same checks.
  Runtime(std::unique_ptr<Engine> engine, const Manifest& manifest);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Encodes one clip: [T, H, W, 3] uint8 of any size, T in frame_range() (an odd count drops its last frame,
  // noted in scene.warnings()). aspect_ratio (original width / height) replaces the frames' W / H.
  Scene encode(const Frames& frames, std::optional<double> aspect_ratio = std::nullopt) const;

  // N queries: uv [N, 2] in [0, 1] (u = x / (S - 1)); t_src, t_tgt, t_cam [N] frame indices in [0, T).
  QueryResult query(const Scene& scene, const std::vector<float>& uv, const std::vector<int32_t>& t_src,
                    const std::vector<int32_t>& t_tgt, const std::vector<int32_t>& t_cam,
                    int64_t batch_size = kDefaultBatch) const;

  // Depth of frame t: z of every pixel of a size x size grid (default S) in its own camera. -> [size, size].
  std::vector<float> depth(const Scene& scene, int64_t t, int64_t size = 0, int64_t batch_size = kDefaultBatch) const;

  const Manifest& manifest() const { return manifest_; }
  std::string name() const { return engine_->name(); }
  int64_t image_size() const { return manifest_.image_size; }
  std::pair<int64_t, int64_t> frame_range() const { return {manifest_.min_frames, manifest_.num_frames}; }

 private:
  void check_scene(const Scene& scene) const;
  Manifest manifest_;
  std::unique_ptr<Engine> engine_;
  uint64_t token_;
};

// The AOTInductor engine of one precision of an export folder (checks the manifest's aoti section, files and
// export ids first).
std::unique_ptr<Engine> make_aoti_engine(const Manifest& manifest, const std::string& precision, int threads,
                                         bool verify_sha256);

}  // namespace d4rt
