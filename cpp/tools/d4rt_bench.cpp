// d4rt-bench EXPORT_DIR FRAMES.npy UV.npy T.npy [--batch-size N] [--threads N] [--precision P] [--repeats R]
//            [--warmup W]
// Times the whole job of the C++ runtime (encode the clip + answer every query) as benchmarks/cpp_vs_python.py
// times the Python runtime: load once, then W untimed and R timed jobs. Prints one JSON object on stdout:
// {"load_s", "job_s": [...], "encode_s": [...], "query_s": [...], "queries", "frames"}.
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "d4rt/npy.hpp"
#include "d4rt/runtime.hpp"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string json_list(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> pos;
    int64_t batch = d4rt::kDefaultBatch, threads = 0, repeats = 3, warmup = 1;
    std::string precision = "fp32";
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        if (i + 1 >= argc) throw d4rt::Error(a + " needs a value");
        std::string v = argv[++i];
        if (a == "--batch-size") batch = std::stoll(v);
        else if (a == "--threads") threads = std::stoll(v);
        else if (a == "--precision") precision = v;
        else if (a == "--repeats") repeats = std::stoll(v);
        else if (a == "--warmup") warmup = std::stoll(v);
        else throw d4rt::Error("unknown option " + a);
      } else {
        pos.push_back(a);
      }
    }
    if (pos.size() != 4) throw d4rt::Error("usage: d4rt-bench EXPORT_DIR FRAMES.npy UV.npy T.npy [options]");
    d4rt::NpyArray f = d4rt::read_npy(pos[1]), uv_a = d4rt::read_npy(pos[2]), t_a = d4rt::read_npy(pos[3]);
    if (f.dtype != "|u1" || uv_a.dtype != "<f4" || t_a.dtype != "<i4")
      throw d4rt::Error("d4rt-bench takes uint8 frames, float32 uv and int32 t");
    d4rt::Frames frames{std::vector<uint8_t>(f.bytes.begin(), f.bytes.end()), f.shape[0], f.shape[1], f.shape[2]};
    const int64_t n = uv_a.shape[0];
    std::vector<float> uv(n * 2);
    std::memcpy(uv.data(), uv_a.bytes.data(), uv.size() * sizeof(float));
    std::vector<int32_t> t[3];
    const int32_t* tp = reinterpret_cast<const int32_t*>(t_a.bytes.data());
    for (auto& c : t) c.resize(n);
    for (int64_t i = 0; i < n; i++) t[0][i] = tp[3 * i], t[1][i] = tp[3 * i + 1], t[2][i] = tp[3 * i + 2];
    double t0 = now();
    d4rt::Runtime rt(pos[0], precision, static_cast<int>(threads));
    const double load_s = now() - t0;
    std::vector<double> job, enc, qry;
    for (int64_t r = 0; r < warmup + repeats; r++) {
      double a = now();
      d4rt::Scene scene = rt.encode(frames);
      double b = now();
      d4rt::QueryResult res = rt.query(scene, uv, t[0], t[1], t[2], batch);
      double c = now();
      if (res.size() != n) throw d4rt::Error("wrong number of answers");
      if (r >= warmup) job.push_back(c - a), enc.push_back(b - a), qry.push_back(c - b);
    }
    std::cout << "{\"load_s\": " << load_s << ", \"job_s\": " << json_list(job) << ", \"encode_s\": " << json_list(enc)
              << ", \"query_s\": " << json_list(qry) << ", \"queries\": " << n << ", \"frames\": " << frames.num_frames
              << "}\n";
    return 0;
  } catch (const std::exception& e) {
    std::string w = e.what();
    std::cerr << "d4rt-bench: error: " << w.substr(0, w.find('\n')) << "\n";
    return 2;
  }
}
