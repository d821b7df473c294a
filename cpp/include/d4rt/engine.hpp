// The backend seam: the runtime calls its engine through this interface and owns no model logic.
// The AOTInductor backend (aoti_engine.cpp) is the one built here; a TensorRT backend belongs behind the same
// interface where TensorRT's C++ headers exist (none on the machines this project is built on).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace d4rt {

// An engine's state for one encoded clip (its video, keys and values, on the engine's device). Opaque.
class EngineState {
 public:
  virtual ~EngineState() = default;
};

// Host buffers for one decoded batch of n queries, row-major float32.
struct DecodeOutputs {
  float* xyz;           // [n, 3]
  float* uv_tgt;        // [n, 2]
  float* visibility;    // [n] logits
  float* displacement;  // [n, 3]
  float* normal;        // [n, 3]
  float* confidence;    // [n] logits
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  // The largest query batch one decode call takes (0: no limit).
  virtual int64_t max_queries() const = 0;
  // video: [1, T, 3, S, S] float32 in [0, 1] (row-major); aspect_ratio: original width / height.
  virtual std::shared_ptr<EngineState> encode(const std::vector<float>& video, int64_t num_frames,
                                              int64_t image_size, float aspect_ratio) = 0;
  // uv: [n, 2] float32; t: [n, 3] int32 (t_src, t_tgt, t_cam). Writes the six raw outputs (logits) into out.
  virtual void decode(const EngineState& state, const float* uv, const int32_t* t, int64_t n,
                      const DecodeOutputs& out) = 0;
};

}  // namespace d4rt
