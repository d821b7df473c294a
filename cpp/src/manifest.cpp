// manifest.json read and checked as runtime/manifest.py does (read_manifest, check_aoti_compat): same wording.
#include "d4rt/manifest.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "d4rt/error.hpp"
#include "sha256.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace d4rt {
namespace {

const char* kRequired[] = {"config", "num_frames", "image_size", "precision", "opset", "checkpoint", "graphs"};

std::string type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::array: return "list";
    case json::value_t::string: return "str";
    case json::value_t::boolean: return "bool";
    case json::value_t::null: return "NoneType";
    case json::value_t::number_float: return "float";
    default: return j.is_number() ? "int" : "object";
  }
}

AotiSection parse_aoti(const json& a, const fs::path& dir, const std::string& where) {
  AotiSection s;
  try {
    s.export_id = a.value("export_id", "");
    s.torch_version = a.value("torch_version", "");
    s.device = a.value("device", "cpu");
    s.attention = a.value("attention", "");
    s.max_queries = a.value("max_queries", int64_t{0});
    const json& m = a.at("machine");
    s.arch = m.value("arch", "");
    s.gpu_name = m.value("gpu_name", "");
    s.compute_capability = m.value("compute_capability", "");
    if (m.contains("cpu_flags")) s.cpu_flags = m.at("cpu_flags").get<std::vector<std::string>>();
    for (const auto& [precision, entry] : a.at("packages").items()) {
      AotiPackages p;
      p.kv_dtype = entry.value("kv_dtype", "");
      p.encoder = {(dir / entry.at("encoder").at("file").get<std::string>()).string(),
                   entry.at("encoder").at("sha256").get<std::string>()};
      p.decoder = {(dir / entry.at("decoder").at("file").get<std::string>()).string(),
                   entry.at("decoder").at("sha256").get<std::string>()};
      s.packages[precision] = p;
    }
  } catch (const json::exception& e) {
    throw Error(where + ": the aoti section is incomplete (" + e.what() + "); " + kAotiHint);
  }
  return s;
}

}  // namespace

Manifest read_manifest(const std::string& export_dir) {
  fs::path dir(export_dir);
  if (dir.filename() == kManifestName && fs::is_regular_file(dir)) dir = dir.parent_path();
  const fs::path path = dir / kManifestName;
  if (!fs::is_directory(dir)) throw Error("export folder " + dir.string() + " does not exist; " + kExportHint);
  if (!fs::is_regular_file(path))
    throw Error("no " + std::string(kManifestName) + " in " + dir.string() +
                ": not an export folder (or an export that did not finish); " + kExportHint);
  std::ifstream f(path);
  json data;
  try {
    data = json::parse(f);
  } catch (const json::exception& e) {
    throw Error(path.string() + " is not valid JSON (" + e.what() + "); the file is corrupt: " + kExportHint);
  }
  if (!data.is_object())
    throw Error(path.string() + " must hold a JSON object, found " + type_name(data) + "; " + kExportHint);
  const json version = data.contains("schema_version") ? data["schema_version"] : json();
  if (!version.is_number_integer() || version.get<int>() != kSchemaVersion)
    throw Error(path.string() + " has schema_version " + (version.is_null() ? "None" : version.dump()) +
                "; this d4rt reads version " + std::to_string(kSchemaVersion) + ": " + kExportHint +
                " with this d4rt version");
  std::string missing;
  for (const char* k : kRequired)
    if (!data.contains(k)) missing += (missing.empty() ? "'" : ", '") + std::string(k) + "'";
  if (!missing.empty())
    throw Error(path.string() + " lacks the fields [" + missing + "]; the file is incomplete: " + kExportHint);
  Manifest m;
  m.directory = dir.string();
  try {
    m.num_frames = data.at("num_frames").get<int>();
    m.image_size = data.at("image_size").get<int>();
    m.min_frames = data.contains("min_frames") && !data["min_frames"].is_null() ? data["min_frames"].get<int>()
                                                                                 : m.num_frames;
    m.frame_step = data.at("config").at("tubelet").at(0).get<int>();
    m.export_id = data.value("export_id", "");
  } catch (const json::exception& e) {
    throw Error(path.string() + " has a malformed field (" + e.what() + "); " + kExportHint);
  }
  if (data.contains("aoti") && !data["aoti"].is_null()) {
    m.has_aoti = true;
    m.aoti = parse_aoti(data["aoti"], dir, path.string());
  }
  return m;
}

std::set<std::string> cpu_flags(const std::string& cpuinfo_text) {
  std::string text = cpuinfo_text;
  if (text.empty()) {
    std::ifstream f("/proc/cpuinfo");
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == "flags" || key == "Features") {
      std::istringstream words(line.substr(colon + 1));
      std::set<std::string> flags;
      for (std::string w; words >> w;) flags.insert(w);
      return flags;
    }
  }
  return {};
}

void check_aoti_compat(const Manifest& manifest, const std::string& precision, const Machine& machine) {
  if (!manifest.has_aoti)
    throw Error(std::string(kManifestName) +
                " lists no AOTInductor packages; export them with `d4rt export CKPT_DIR --out DIR --aoti`");
  const AotiSection& a = manifest.aoti;
  if (!a.packages.count(precision)) {
    std::string have;
    for (const auto& [p, _] : a.packages) have += (have.empty() ? "'" : ", '") + p + "'";
    throw Error("no " + precision + " AOTInductor packages in this export (it has [" + have + "]); " + kAotiHint);
  }
  if (a.arch != machine.arch)
    throw Error("the AOTInductor packages were compiled for " + a.arch + ", this machine is " + machine.arch + "; " +
                kAotiHint);
  if (a.device == "cuda") {
    if (machine.compute_capability.empty())
      throw Error("the AOTInductor packages were compiled for CUDA (" + a.gpu_name +
                  "), this machine has no CUDA GPU; " + std::string(kAotiHint));
    if (machine.compute_capability != "?" && machine.compute_capability != a.compute_capability)
      throw Error("the AOTInductor packages were compiled for compute capability " + a.compute_capability + " (" +
                  a.gpu_name + "), this GPU has " + machine.compute_capability + "; " + kAotiHint);
  } else {
    std::vector<std::string> missing;
    for (const auto& flag : a.cpu_flags)
      if (!machine.flags.count(flag)) missing.push_back(flag);
    std::sort(missing.begin(), missing.end());
    if (!missing.empty()) {
      std::string list;
      for (const auto& f : missing) list += (list.empty() ? "" : " ") + f;
      throw Error("the AOTInductor packages were compiled for a CPU with " + list + ", which this CPU lacks; " +
                  kAotiHint);
    }
  }
  auto release = [](const std::string& v) { return v.substr(0, v.find('+')); };
  if (release(a.torch_version) != release(machine.torch_version))
    throw Error("the AOTInductor packages were compiled with torch " + a.torch_version + ", this is torch " +
                machine.torch_version + "; " + kAotiHint);
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  detail::Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(f.gcount()));
  }
  return h.hexdigest();
}

void check_package_files(const Manifest& manifest, const std::string& precision, bool verify_sha256) {
  const AotiPackages& p = manifest.aoti.packages.at(precision);
  const std::string what = "AOTInductor (" + precision + ")";
  for (const PackageFile* file : {&p.encoder, &p.decoder}) {
    if (!fs::is_regular_file(file->path)) throw Error(what + " file " + file->path + " is missing; " + kAotiHint);
    if (verify_sha256 && sha256_file(file->path) != file->sha256)
      throw Error(what + " file " + file->path + " does not match the sha256 in " + kManifestName +
                  " (corrupt, truncated or replaced); " + kAotiHint);
  }
}

}  // namespace d4rt
