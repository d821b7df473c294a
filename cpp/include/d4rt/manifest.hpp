// manifest.json of an export folder, read and checked as runtime/manifest.py does (same rules, same wording).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace d4rt {

inline constexpr int kSchemaVersion = 1;
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kExportIdKey = "d4rt.export_id";
inline constexpr const char* kExportHint = "re-export with `d4rt export CKPT_DIR --out DIR`";
inline constexpr const char* kAotiHint =
    "rebuild the packages on this machine with `d4rt export CKPT_DIR --out DIR --aoti`";

struct PackageFile {
  std::string path;    // absolute or relative to the working directory (export folder joined)
  std::string sha256;  // hex, as recorded
};

struct AotiPackages {
  PackageFile encoder, decoder;
  std::string kv_dtype;  // "float32" | "bfloat16"
};

struct AotiSection {
  std::string export_id, torch_version, device, attention, arch, gpu_name, compute_capability;
  std::vector<std::string> cpu_flags;  // ISA extensions the packages need (cpu)
  int64_t max_queries = 0;
  std::map<std::string, AotiPackages> packages;  // "fp32" | "bf16"
};

struct Manifest {
  std::string directory;  // the export folder
  int num_frames = 0;     // the most frames a clip may have
  int min_frames = 0;     // the fewest (== num_frames for older, fixed-length exports)
  int image_size = 0;     // S
  int frame_step = 2;     // the tubelet's frames
  std::string export_id;
  bool has_aoti = false;
  AotiSection aoti;
};

// Reads and validates export_dir/manifest.json (or the manifest's own path); throws d4rt::Error.
Manifest read_manifest(const std::string& export_dir);

// The CPU's feature flags ("flags" on x86, "Features" on Arm) from cpuinfo text (default: /proc/cpuinfo).
std::set<std::string> cpu_flags(const std::string& cpuinfo_text = "");

// The machine as AOTInductor packages see it.
struct Machine {
  std::string arch;                // "x86_64", "aarch64"
  std::set<std::string> flags;     // cpu_flags()
  std::string torch_version;       // of the libtorch linked
  std::string compute_capability;  // "" without a CUDA GPU
};
Machine this_machine();

// Refuses (d4rt::Error, one line) packages this machine cannot run, as check_aoti_compat in Python.
void check_aoti_compat(const Manifest& manifest, const std::string& precision, const Machine& machine);

// Hex sha256 of a file (streamed); throws d4rt::Error when it cannot be read.
std::string sha256_file(const std::string& path);

// Every package of `precision` exists and (optionally) has its recorded sha256.
void check_package_files(const Manifest& manifest, const std::string& precision, bool verify_sha256);

}  // namespace d4rt
