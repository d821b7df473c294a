// The AOTInductor engine: encoder.pt2 / decoder.pt2 of `d4rt export --aoti`, run by libtorch's
// AOTIModelPackageLoader. The only file of the runtime that includes torch headers (the backend seam: engine.hpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <sys/utsname.h>
#include <torch/cuda.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include <cstring>

#include "d4rt/runtime.hpp"

namespace d4rt {
namespace {

struct AotiState : EngineState {
  at::Tensor video, keys, values;
};

class AotiEngine : public Engine {
 public:
  AotiEngine(const Manifest& manifest, const std::string& precision)
      : precision_(precision), max_queries_(manifest.aoti.max_queries) {
    device_ = manifest.aoti.device == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
    const AotiPackages& p = manifest.aoti.packages.at(precision);
    encoder_ = load(manifest, p.encoder.path, "encoder");
    decoder_ = load(manifest, p.decoder.path, "decoder");
  }

  std::string name() const override { return "aoti-" + precision_; }
  int64_t max_queries() const override { return max_queries_; }

  std::shared_ptr<EngineState> encode(const std::vector<float>& video, int64_t num_frames, int64_t image_size,
                                      float aspect_ratio) override {
    auto state = std::make_shared<AotiState>();
    c10::InferenceMode guard;
    state->video = torch_from(video.data(), {1, num_frames, 3, image_size, image_size}, at::kFloat).to(device_);
    at::Tensor ar = at::full({1}, aspect_ratio, at::TensorOptions().dtype(at::kFloat)).to(device_);
    auto out = run(*encoder_, {state->video, ar}, "encoder");
    state->keys = out.at(0);
    state->values = out.at(1);
    return state;
  }

  void decode(const EngineState& state, const float* uv, const int32_t* t, int64_t n,
              const DecodeOutputs& out) override {
    const auto& s = dynamic_cast<const AotiState&>(state);
    c10::InferenceMode guard;
    at::Tensor uv_t = torch_from(uv, {1, n, 2}, at::kFloat).to(device_);
    at::Tensor t_t = torch_from(t, {1, n, 3}, at::kInt).to(device_);
    auto res = run(*decoder_, {s.video, s.keys, s.values, uv_t, t_t}, "decoder");
    float* dst[6] = {out.xyz, out.uv_tgt, out.visibility, out.displacement, out.normal, out.confidence};
    const int64_t width[6] = {3, 2, 1, 3, 3, 1};
    if (res.size() != 6) throw Error("the decoder package returned " + std::to_string(res.size()) + " outputs, not 6");
    for (int i = 0; i < 6; i++) {
      at::Tensor r = res[i].to(at::kCPU, at::kFloat).contiguous();
      if (r.numel() != n * width[i])
        throw Error("the decoder package returned an output of " + std::to_string(r.numel()) + " values, expected " +
                    std::to_string(n * width[i]) + "; " + kAotiHint);
      std::memcpy(dst[i], r.data_ptr<float>(), sizeof(float) * n * width[i]);
    }
  }

 private:
  template <typename T>
  static at::Tensor torch_from(const T* data, std::vector<int64_t> shape, at::ScalarType type) {
    // from_blob does not own the memory: clone into a tensor that does (the caller's buffer may go away).
    return at::from_blob(const_cast<T*>(data), shape, at::TensorOptions().dtype(type)).clone();
  }

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> load(const Manifest& manifest, const std::string& path,
                                                                const std::string& graph) {
    std::unordered_map<std::string, std::string> meta;
    try {
      meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
    } catch (const std::exception& e) {
      throw Error("the " + graph + " package " + path + " cannot be read as an AOTInductor package (" +
                  first_line(e.what()) + "); " + kAotiHint);
    }
    auto found = meta.count(kExportIdKey) ? meta[kExportIdKey] : std::string();
    if (!manifest.export_id.empty() && found != manifest.export_id)
      throw Error("the " + graph + " in the AOTInductor packages in " + manifest.directory +
                  " comes from another export (export id " + (found.empty() ? "none" : found) +
                  ") than this manifest (" + manifest.export_id +
                  "); the encoder and decoder of one export folder must be exported together: " + kExportHint);
    try {
      return std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false, 1,
                                                                       device_.is_cuda() ? 0 : -1);
    } catch (const std::exception& e) {
      throw Error("libtorch could not load the " + graph + " package " + path + " (" + first_line(e.what()) + "); " +
                  kAotiHint);
    }
  }

  static std::vector<at::Tensor> run(torch::inductor::AOTIModelPackageLoader& model, const std::vector<at::Tensor>& in,
                                     const std::string& graph) {
    try {
      return model.run(in);
    } catch (const std::exception& e) {
      throw Error("the " + graph + " package failed to run (" + first_line(e.what()) + ")");
    }
  }

  static std::string first_line(const char* what) {
    std::string s(what);
    return s.substr(0, s.find('\n'));
  }

  std::string precision_;
  int64_t max_queries_;
  c10::Device device_{c10::kCPU};
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> encoder_, decoder_;
};

}  // namespace

Machine this_machine() {
  Machine m;
  struct utsname u;
  if (uname(&u) == 0) m.arch = u.machine;
  m.flags = cpu_flags();
  m.torch_version = TORCH_VERSION;
  // A CPU libtorch cannot read a GPU's compute capability without CUDA headers: "?" lets AOTInductor's own loader
  // refuse a package built for another GPU (the Python runtime checks the capability itself).
  if (torch::cuda::is_available()) m.compute_capability = "?";
  return m;
}

std::unique_ptr<Engine> make_aoti_engine(const Manifest& manifest, const std::string& precision, int threads,
                                         bool verify_sha256) {
  if (precision != "fp32" && precision != "bf16")
    throw Error("precision must be fp32 or bf16, got '" + precision + "'");
  check_aoti_compat(manifest, precision, this_machine());
  check_package_files(manifest, precision, verify_sha256);
  if (threads < 0) throw Error("threads must be >= 0 (0: libtorch's default), got " + std::to_string(threads));
  if (threads > 0) at::set_num_threads(threads);
  return std::make_unique<AotiEngine>(manifest, precision);
}

}  // namespace d4rt
