// The runtime on a real export (D4RT_TEST_EXPORT: a folder from `d4rt export ... --aoti`, made by
// tests/test_cpp.py; these tests skip without it): every bad input and every bad file is one d4rt::Error, and
// the runtime stays usable after it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "d4rt/runtime.hpp"
#include "error_of.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string export_dir() {
  const char* dir = std::getenv("D4RT_TEST_EXPORT");
  return dir ? dir : "";
}

d4rt::Frames random_frames(int64_t T, int64_t H, int64_t W) {
  std::mt19937 rng(std::random_device{}());
  d4rt::Frames f;
  f.num_frames = T, f.height = H, f.width = W;
  f.data.resize(T * H * W * 3);
  for (auto& v : f.data) v = rng() % 256;
  return f;
}

// A copy of the export whose packages are links to the originals (cheap), with the manifest edited by `edit`.
fs::path edited_copy(const std::string& name, const std::function<void(json&)>& edit) {
  fs::path src(export_dir());
  fs::path dst = fs::temp_directory_path() / ("d4rt-cpp-" + name + "-" + std::to_string(std::random_device{}()));
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(src))
    if (entry.path().extension() == ".pt2") fs::create_symlink(fs::absolute(entry.path()), dst / entry.path().filename());
  json m = json::parse(std::ifstream(src / "manifest.json"));
  edit(m);
  std::ofstream(dst / "manifest.json") << m.dump(2);
  return dst;
}

class WithExport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (export_dir().empty()) GTEST_SKIP() << "D4RT_TEST_EXPORT is not set (tests/test_cpp.py sets it)";
  }
};

}  // namespace

TEST_F(WithExport, BadQueriesAreRefusedAndTheRuntimeStaysUsable) {
  d4rt::Runtime rt(export_dir(), "fp32", 2);
  const int64_t T = 4;
  d4rt::Scene scene = rt.encode(random_frames(T, 37, 50));
  EXPECT_EQ(scene.num_frames(), T);
  std::vector<float> uv = {0.1f, 0.2f, 0.9f, 1.0f};
  std::vector<int32_t> ok = {0, T - 1};
  EXPECT_EQ(error_of([&] { rt.query(scene, {0.1f, NAN, 0.5f, 0.5f}, ok, ok, ok); }),
            "uv contains 1 NaN or infinite values");
  EXPECT_EQ(error_of([&] { rt.query(scene, {0.1f, 1.5f, 0.5f, 0.5f}, ok, ok, ok); }),
            "uv has values in [0.1, 1.5], expected [0, 1] (u = x / (S - 1))");
  EXPECT_EQ(error_of([&] { rt.query(scene, uv, ok, {0, int32_t(T)}, ok); }),
            "t_tgt has frame indices in [0, 4], expected [0, 4) for this clip");
  EXPECT_EQ(error_of([&] { rt.query(scene, uv, ok, ok, {-3, 0}); }),
            "t_cam has frame indices in [-3, 0], expected [0, 4) for this clip");
  EXPECT_EQ(error_of([&] { rt.query(scene, uv, ok, ok, ok, 0); }), "batch_size must be a positive integer, got 0");
  EXPECT_NE(error_of([&] { rt.depth(scene, T); }).find("expected [0, 4)"), std::string::npos);
  d4rt::QueryResult r = rt.query(scene, uv, ok, ok, ok);  // still answers after the refusals
  ASSERT_EQ(r.size(), 2);
  for (float p : r.visibility) EXPECT_TRUE(p >= 0.0f && p <= 1.0f);
  for (float x : r.xyz) EXPECT_TRUE(std::isfinite(x));
}

TEST_F(WithExport, WrongFrameCountsAndScenesOfAnotherRuntime) {
  d4rt::Runtime rt(export_dir(), "fp32", 2);
  auto [lo, hi] = rt.frame_range();
  EXPECT_NE(error_of([&] { rt.encode(random_frames(1, 16, 16)); }).find("the clip has 1 frame, these engines need"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rt.encode(random_frames(hi + 2, 8, 8)); }).find("more than the"), std::string::npos);
  EXPECT_NE(error_of([&] { rt.encode(random_frames(2, 1, 8)); }).find("need at least 2x2"), std::string::npos);
  d4rt::Frames broken = random_frames(2, 8, 8);
  broken.data.pop_back();
  EXPECT_NE(error_of([&] { rt.encode(broken); }).find("frames must be [T, H, W, 3]"), std::string::npos);
  d4rt::Scene odd = rt.encode(random_frames(lo + 1, 20, 20));
  EXPECT_EQ(odd.num_frames(), lo);
  ASSERT_EQ(odd.warnings().size(), 1u);
  d4rt::Runtime other(export_dir(), "fp32", 2);
  EXPECT_NE(error_of([&] { other.query(odd, {0.5f, 0.5f}, {0}, {0}, {0}); })
                .find("this scene was encoded by another runtime"),
            std::string::npos);
  EXPECT_NE(error_of([&] { rt.query(d4rt::Scene{}, {0.5f, 0.5f}, {0}, {0}, {0}); }).find("scene must be a Scene"),
            std::string::npos);
}

TEST_F(WithExport, MissingForeignAndAlteredFiles) {
  fs::path missing = edited_copy("missing", [](json&) {});
  fs::remove(missing / "decoder.pt2");
  EXPECT_NE(error_of([&] { d4rt::Runtime(missing.string()); }).find("decoder.pt2 is missing"), std::string::npos);

  fs::path altered = edited_copy("altered", [](json& m) {
    m["aoti"]["packages"]["fp32"]["encoder"]["sha256"] = std::string(64, '0');
  });
  EXPECT_NE(error_of([&] { d4rt::Runtime(altered.string()); }).find("does not match the sha256 in manifest.json"),
            std::string::npos);

  fs::path foreign = edited_copy("foreign", [](json& m) { m["export_id"] = "0123456789abcdef"; });
  EXPECT_NE(error_of([&] { d4rt::Runtime(foreign.string()); }).find("comes from another export"), std::string::npos);

  fs::path no_aoti = edited_copy("no-aoti", [](json& m) { m.erase("aoti"); });
  EXPECT_NE(error_of([&] { d4rt::Runtime(no_aoti.string()); }).find("lists no AOTInductor packages"),
            std::string::npos);
  EXPECT_NE(error_of([&] { d4rt::Runtime(export_dir(), "int8"); }).find("precision must be fp32 or bf16"),
            std::string::npos);
  for (const auto& p : {missing, altered, foreign, no_aoti}) fs::remove_all(p);
}

TEST_F(WithExport, AnotherMachineIsRefused) {
  fs::path isa = edited_copy("isa", [](json& m) { m["aoti"]["machine"]["cpu_flags"].push_back("avx1024_imaginary"); });
  EXPECT_EQ(error_of([&] { d4rt::Runtime(isa.string()); }),
            std::string("the AOTInductor packages were compiled for a CPU with avx1024_imaginary, which this CPU "
                        "lacks; ") + d4rt::kAotiHint);
  fs::path arch = edited_copy("arch", [](json& m) { m["aoti"]["machine"]["arch"] = "riscv64"; });
  EXPECT_NE(error_of([&] { d4rt::Runtime(arch.string()); }).find("compiled for riscv64"), std::string::npos);
  fs::path torch = edited_copy("torch", [](json& m) { m["aoti"]["torch_version"] = "1.13.1"; });
  EXPECT_NE(error_of([&] { d4rt::Runtime(torch.string()); }).find("compiled with torch 1.13.1"), std::string::npos);
  fs::path cuda = edited_copy("cuda", [](json& m) { m["aoti"]["device"] = "cuda"; });
  EXPECT_NE(error_of([&] { d4rt::Runtime(cuda.string()); }).find("this machine has no CUDA GPU"), std::string::npos);
  for (const auto& p : {isa, arch, torch, cuda}) fs::remove_all(p);
}
