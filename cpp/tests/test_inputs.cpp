// The C++ runtime's checks without a model: inputs, manifest reading, machine compatibility, .npy, sha256,
// resize. Each refusal is a d4rt::Error whose message is the Python runtime's (same rules, same wording).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "d4rt/error.hpp"
#include "d4rt/inputs.hpp"
#include "d4rt/manifest.hpp"
#include "d4rt/npy.hpp"
#include "d4rt/video.hpp"
#include "../src/sha256.hpp"
#include "error_of.hpp"

namespace fs = std::filesystem;


fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("d4rt-cpp-test-" + name + "-" + std::to_string(std::random_device{}()));
  fs::create_directories(p);
  return p;
}

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

TEST(Inputs, UvRefusals) {
  EXPECT_EQ(error_of([] { d4rt::check_uv({0.5f, NAN, INFINITY, 0.1f}); }), "uv contains 2 NaN or infinite values");
  EXPECT_EQ(error_of([] { d4rt::check_uv({-0.5f, 0.2f, 0.3f, 1.0f}); }),
            "uv has values in [-0.5, 1], expected [0, 1] (u = x / (S - 1))");
  EXPECT_NE(error_of([] { d4rt::check_uv({0.1f, 0.2f, 0.3f}); }).find("uv must be [N, 2]"), std::string::npos);
  EXPECT_EQ(error_of([] { d4rt::check_uv({0.0f, 1.0f, 0.25f, 0.75f}); }), "");
}

TEST(Inputs, TimeRefusals) {
  EXPECT_EQ(error_of([] { d4rt::check_times("t_tgt", {0, 3, 4}, 3, 4); }),
            "t_tgt has frame indices in [0, 4], expected [0, 4) for this clip");
  EXPECT_EQ(error_of([] { d4rt::check_times("t_src", {-1, 0}, 2, 4); }),
            "t_src has frame indices in [-1, 0], expected [0, 4) for this clip");
  EXPECT_EQ(error_of([] { d4rt::check_times("t_cam", {0, 1}, 3, 4); }),
            "t_cam must be a scalar or [N] = [3], got shape (2,)");
  EXPECT_EQ(error_of([] { d4rt::check_times("t_cam", {0, 3}, 2, 4); }), "");
  EXPECT_EQ(error_of([] { d4rt::check_batch_size(0); }), "batch_size must be a positive integer, got 0");
}

TEST(Inputs, FrameCounts) {
  std::string warning;
  EXPECT_EQ(d4rt::usable_frame_count(8, {2, 16}, 2, &warning), 8);
  EXPECT_EQ(warning, "");
  EXPECT_EQ(d4rt::usable_frame_count(7, {2, 16}, 2, &warning), 6);
  EXPECT_EQ(warning, "the clip has 7 frames; the encoder takes a multiple of 2: dropping the last 1 frame "
                     "(rt.encode_video keeps every frame)");
  EXPECT_EQ(error_of([] { d4rt::usable_frame_count(1, {2, 16}, 2, nullptr); }),
            "the clip has 1 frame, these engines need at least 2 (a single image: pass it twice, frames[[0, 0]], to "
            "see it as a static scene)");
  EXPECT_NE(error_of([] { d4rt::usable_frame_count(18, {2, 16}, 2, nullptr); }).find("more than the 16 frames"),
            std::string::npos);
  EXPECT_NE(error_of([] { d4rt::check_aspect_ratio(-1.0); }).find("aspect_ratio must be a positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { d4rt::check_aspect_ratio(NAN); }), "");
}

TEST(Manifest, Refusals) {
  fs::path dir = fresh_dir("manifest");
  EXPECT_NE(error_of([&] { d4rt::read_manifest((dir / "nope").string()); }).find("does not exist"), std::string::npos);
  EXPECT_NE(error_of([&] { d4rt::read_manifest(dir.string()); }).find("no manifest.json in"), std::string::npos);
  write_text(dir / "manifest.json", "{not json");
  EXPECT_NE(error_of([&] { d4rt::read_manifest(dir.string()); }).find("is not valid JSON"), std::string::npos);
  write_text(dir / "manifest.json", "[1, 2]");
  EXPECT_NE(error_of([&] { d4rt::read_manifest(dir.string()); }).find("must hold a JSON object, found list"),
            std::string::npos);
  write_text(dir / "manifest.json", "{\"schema_version\": 7}");
  EXPECT_NE(error_of([&] { d4rt::read_manifest(dir.string()); }).find("has schema_version 7; this d4rt reads version 1"),
            std::string::npos);
  write_text(dir / "manifest.json", "{\"schema_version\": 1, \"config\": {}}");
  EXPECT_NE(error_of([&] { d4rt::read_manifest(dir.string()); }).find("lacks the fields ['num_frames'"),
            std::string::npos);
  fs::remove_all(dir);
}

d4rt::Manifest manifest_with_aoti() {
  d4rt::Manifest m;
  m.has_aoti = true;
  m.aoti.arch = "x86_64";
  m.aoti.device = "cpu";
  m.aoti.torch_version = "2.13.0+cpu";
  m.aoti.cpu_flags = {"avx2", "avx512f"};
  m.aoti.packages["fp32"] = {};
  return m;
}

TEST(Manifest, MachineCompatibility) {
  d4rt::Machine here{"x86_64", {"avx2", "avx512f", "fma"}, "2.13.0", ""};
  EXPECT_EQ(error_of([&] { d4rt::check_aoti_compat(manifest_with_aoti(), "fp32", here); }), "");
  EXPECT_NE(error_of([&] { d4rt::check_aoti_compat(d4rt::Manifest{}, "fp32", here); })
                .find("lists no AOTInductor packages"),
            std::string::npos);
  EXPECT_NE(error_of([&] { d4rt::check_aoti_compat(manifest_with_aoti(), "bf16", here); })
                .find("no bf16 AOTInductor packages in this export (it has ['fp32'])"),
            std::string::npos);
  d4rt::Machine no_avx512{"x86_64", {"avx2", "fma"}, "2.13.0", ""};
  EXPECT_EQ(error_of([&] { d4rt::check_aoti_compat(manifest_with_aoti(), "fp32", no_avx512); }),
            std::string("the AOTInductor packages were compiled for a CPU with avx512f, which this CPU lacks; ") +
                d4rt::kAotiHint);
  d4rt::Machine arm{"aarch64", {"asimd"}, "2.13.0", ""};
  EXPECT_NE(error_of([&] { d4rt::check_aoti_compat(manifest_with_aoti(), "fp32", arm); })
                .find("compiled for x86_64, this machine is aarch64"),
            std::string::npos);
  d4rt::Machine old_torch{"x86_64", {"avx2", "avx512f"}, "2.11.0", ""};
  EXPECT_NE(error_of([&] { d4rt::check_aoti_compat(manifest_with_aoti(), "fp32", old_torch); })
                .find("compiled with torch 2.13.0+cpu, this is torch 2.11.0"),
            std::string::npos);
  auto cuda = manifest_with_aoti();
  cuda.aoti.device = "cuda";
  cuda.aoti.gpu_name = "NVIDIA H100";
  EXPECT_NE(error_of([&] { d4rt::check_aoti_compat(cuda, "fp32", here); }).find("this machine has no CUDA GPU"),
            std::string::npos);
}

TEST(Manifest, CpuFlagsFromCpuinfo) {
  auto x86 = d4rt::cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 avx512f\nbugs\t\t: spectre\n");
  EXPECT_EQ(x86, (std::set<std::string>{"fpu", "avx2", "avx512f"}));
  auto arm = d4rt::cpu_flags("processor\t: 0\nFeatures\t: fp asimd sve\n");
  EXPECT_EQ(arm, (std::set<std::string>{"fp", "asimd", "sve"}));
}

TEST(Sha256, KnownDigests) {  // FIPS 180-4 examples
  auto digest = [](const std::string& s) {
    d4rt::detail::Sha256 h;
    h.update(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    return h.hexdigest();
  };
  EXPECT_EQ(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Npy, RoundTripAndRefusals) {
  fs::path dir = fresh_dir("npy");
  std::vector<float> x = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 1e-8f};
  d4rt::write_npy((dir / "x.npy").string(), {3, 2}, x.data());
  d4rt::NpyArray a = d4rt::read_npy((dir / "x.npy").string());
  EXPECT_EQ(a.dtype, "<f4");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 2}));
  ASSERT_EQ(a.bytes.size(), x.size() * 4);
  EXPECT_EQ(std::memcmp(a.bytes.data(), x.data(), a.bytes.size()), 0);
  d4rt::write_npy((dir / "v.npy").string(), {6}, x.data());
  EXPECT_EQ(d4rt::read_npy((dir / "v.npy").string()).shape, (std::vector<int64_t>{6}));
  write_text(dir / "bad.npy", "hello");
  EXPECT_NE(error_of([&] { d4rt::read_npy((dir / "bad.npy").string()); }).find("is not a .npy file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { d4rt::read_npy((dir / "missing.npy").string()); }).find("does not exist"),
            std::string::npos);
  fs::resize_file(dir / "x.npy", fs::file_size(dir / "x.npy") - 4);
  EXPECT_NE(error_of([&] { d4rt::read_npy((dir / "x.npy").string()); }).find("truncated"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Resize, ConstantImagesStayConstantAtEverySize) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 20; trial++) {
    int h = 2 + rng() % 300, w = 2 + rng() % 300, dh = 2 + rng() % 200, dw = 2 + rng() % 200;
    uint8_t value = rng() % 256;
    std::vector<uint8_t> img(h * w * 3, value);
    auto out = d4rt::resize_area(img.data(), h, w, 3, dh, dw);
    ASSERT_EQ(out.size(), size_t(dh * dw * 3));
    for (uint8_t v : out) ASSERT_EQ(v, value) << h << "x" << w << " -> " << dh << "x" << dw;
  }
}

TEST(Resize, TwoByTwoBlockMeansRoundHalfUp) {
  // 4 x 4 -> 2 x 2: each output is the mean of a 2 x 2 block, (a + b + c + d + 2) >> 2 as OpenCV's fast path.
  std::vector<uint8_t> img(4 * 4);
  std::mt19937 rng(std::random_device{}());
  for (auto& v : img) v = rng() % 256;
  auto out = d4rt::resize_area(img.data(), 4, 4, 1, 2, 2);
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 2; x++) {
      int s = img[(2 * y) * 4 + 2 * x] + img[(2 * y) * 4 + 2 * x + 1] + img[(2 * y + 1) * 4 + 2 * x] +
              img[(2 * y + 1) * 4 + 2 * x + 1];
      EXPECT_EQ(out[y * 2 + x], (s + 2) >> 2);
    }
}
