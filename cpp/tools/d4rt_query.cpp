// d4rt-query EXPORT_DIR FRAMES.npy UV.npy T.npy OUT_DIR [--batch-size N] [--threads N] [--precision fp32|bf16]
//
// FRAMES [T, H, W, 3] uint8 (any H, W), UV [N, 2] float32 (or float64) in [0, 1], T [N, 3] int32 (or int64) with
// columns t_src, t_tgt, t_cam. Writes xyz.npy [N, 3], uv_tgt.npy [N, 2], visibility.npy [N], displacement.npy
// [N, 3], normal.npy [N, 3], confidence.npy [N] (float32; visibility and confidence as probabilities) into OUT_DIR,
// atomically (a temporary folder beside it, renamed when complete). OUT_DIR must not exist or be empty.
// Bad input: exit status 2 and one line on stderr; nothing is written.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "d4rt/inputs.hpp"
#include "d4rt/npy.hpp"
#include "d4rt/runtime.hpp"

namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "usage: d4rt-query EXPORT_DIR FRAMES.npy UV.npy T.npy OUT_DIR [--batch-size N] [--threads N] "
    "[--precision fp32|bf16]";

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::string numpy_dtype(const std::string& descr) {
  static const std::pair<const char*, const char*> names[] = {
      {"|u1", "uint8"}, {"<f4", "float32"}, {"<f8", "float64"}, {"<i4", "int32"}, {"<i8", "int64"},
      {"<f2", "float16"}, {"|b1", "bool"}, {"|i1", "int8"}, {"<u2", "uint16"}, {"<i2", "int16"}};
  for (auto& [d, n] : names)
    if (descr == d) return n;
  return descr;
}

int64_t parse_int(const std::string& flag, const char* value) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value, &end, 10);
  if (errno || end == value || *end) throw d4rt::Error(flag + " takes an integer, got '" + value + "'");
  return v;
}

d4rt::Frames read_frames(const std::string& path) {
  d4rt::NpyArray a = d4rt::read_npy(path);
  if (a.shape.size() != 4 || a.shape[3] != 3)
    throw d4rt::Error("frames must be [T, H, W, 3] RGB, got shape " + shape_str(a.shape) + " in " + path);
  if (a.dtype != "|u1")
    throw d4rt::Error("frames must be uint8 (0..255), got dtype " + numpy_dtype(a.dtype) + " in " + path);
  d4rt::Frames f;
  f.num_frames = a.shape[0], f.height = a.shape[1], f.width = a.shape[2];
  f.data.assign(a.bytes.begin(), a.bytes.end());
  return f;
}

std::vector<float> read_uv(const std::string& path) {
  d4rt::NpyArray a = d4rt::read_npy(path);
  if (a.shape.size() != 2 || a.shape[1] != 2)
    throw d4rt::Error("uv must be [N, 2] (u = x / (S - 1), v = y / (S - 1)), got shape " + shape_str(a.shape) +
                      " in " + path);
  std::vector<float> uv(a.size());
  if (a.dtype == "<f4") {
    std::memcpy(uv.data(), a.bytes.data(), a.bytes.size());
  } else if (a.dtype == "<f8") {
    const double* d = reinterpret_cast<const double*>(a.bytes.data());
    for (size_t i = 0; i < uv.size(); i++) uv[i] = static_cast<float>(d[i]);
  } else {
    throw d4rt::Error("uv must be floating point in [0, 1], got dtype " + numpy_dtype(a.dtype) +
                      " (divide pixels by S - 1) in " + path);
  }
  return uv;
}

void read_times(const std::string& path, int64_t n, std::vector<int32_t> (&t)[3]) {
  d4rt::NpyArray a = d4rt::read_npy(path);
  if (a.shape.size() != 2 || a.shape[1] != 3 || a.shape[0] != n)
    throw d4rt::Error("T must be [N, 3] = [" + std::to_string(n) + ", 3] (columns t_src, t_tgt, t_cam), got shape " +
                      shape_str(a.shape) + " in " + path);
  if (a.dtype != "<i4" && a.dtype != "<i8")
    throw d4rt::Error("T must be integer frame indices (int32), got dtype " + numpy_dtype(a.dtype) + " in " + path);
  for (auto& col : t) col.resize(n);
  for (int64_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) {
      int64_t v = a.dtype == "<i4" ? reinterpret_cast<const int32_t*>(a.bytes.data())[3 * i + c]
                                   : reinterpret_cast<const int64_t*>(a.bytes.data())[3 * i + c];
      // Out of int32 range is out of any clip's range: clamp to a value the range check reports as such.
      t[c][i] = static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
    }
}

fs::path check_out_dir(const std::string& out) {
  fs::path p = fs::path(out).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "answers/" names the folder "answers"
  if (p.empty() || p == "." || p == "..") throw d4rt::Error("OUT_DIR must name a new folder, got '" + out + "'");
  if (fs::exists(p) && (!fs::is_directory(p) || !fs::is_empty(p)))
    throw d4rt::Error("OUT_DIR " + out + " exists and is not an empty folder; d4rt-query does not overwrite: name a "
                      "new folder or remove it");
  return p;
}

void write_outputs(const fs::path& out, const d4rt::QueryResult& r) {
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(parent);
  std::string pattern = (parent / ("." + out.filename().string() + ".partial-XXXXXX")).string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw d4rt::Error("cannot create a temporary folder beside " + out.string());
  const fs::path tmp(buf.data());
  try {
    const int64_t N = r.size();
    d4rt::write_npy((tmp / "xyz.npy").string(), {N, 3}, r.xyz.data());
    d4rt::write_npy((tmp / "uv_tgt.npy").string(), {N, 2}, r.uv_tgt.data());
    d4rt::write_npy((tmp / "visibility.npy").string(), {N}, r.visibility.data());
    d4rt::write_npy((tmp / "displacement.npy").string(), {N, 3}, r.displacement.data());
    d4rt::write_npy((tmp / "normal.npy").string(), {N, 3}, r.normal.data());
    d4rt::write_npy((tmp / "confidence.npy").string(), {N}, r.confidence.data());
    fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
    fs::rename(tmp, out);  // replaces an empty OUT_DIR
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int64_t batch_size = d4rt::kDefaultBatch, threads = 0;
  std::string precision = "fp32";
  try {
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        std::cout << kUsage << "\n";
        return 0;
      }
      if (a == "--batch-size" || a == "--threads" || a == "--precision") {
        if (i + 1 >= argc) throw d4rt::Error(a + " needs a value; " + kUsage);
        const char* v = argv[++i];
        if (a == "--batch-size") batch_size = parse_int(a, v);
        if (a == "--threads") threads = parse_int(a, v);
        if (a == "--precision") precision = v;
      } else if (a.rfind("--", 0) == 0) {
        throw d4rt::Error("unknown option " + a + "; " + kUsage);
      } else {
        positional.push_back(a);
      }
    }
    if (positional.size() != 5)
      throw d4rt::Error("expected 5 arguments, got " + std::to_string(positional.size()) + "; " + kUsage);
    if (precision != "fp32" && precision != "bf16")
      throw d4rt::Error("--precision must be fp32 or bf16, got '" + precision + "'");
    d4rt::check_batch_size(batch_size);
    if (threads < 0) throw d4rt::Error("--threads must be >= 0 (0: libtorch's default), got " + std::to_string(threads));
    const fs::path out = check_out_dir(positional[4]);
    d4rt::Frames frames = read_frames(positional[1]);
    std::vector<float> uv = read_uv(positional[2]);
    const int64_t n = static_cast<int64_t>(uv.size() / 2);
    std::vector<int32_t> t[3];
    read_times(positional[3], n, t);
    d4rt::check_uv(uv);
    d4rt::Runtime rt(positional[0], precision, static_cast<int>(threads));
    d4rt::Scene scene = rt.encode(frames);
    for (const auto& w : scene.warnings()) std::cerr << "d4rt-query: warning: " << w << "\n";
    d4rt::QueryResult r = rt.query(scene, uv, t[0], t[1], t[2], batch_size);
    write_outputs(out, r);
    return 0;
  } catch (const d4rt::Error& e) {
    std::cerr << "d4rt-query: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "d4rt-query: error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
}
