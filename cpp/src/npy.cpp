// .npy format 1.0 / 2.0 / 3.0 (numpy.lib.format): magic, version, header length, a Python dict literal header
// {'descr': '<f4', 'fortran_order': False, 'shape': (N, 2), }, padding, then the raw data in C order.
#include "d4rt/npy.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

#include "d4rt/error.hpp"

namespace d4rt {
namespace {

int64_t item_size(const std::string& descr) {
  if (descr.size() < 3) return 0;
  try {
    return std::stoll(descr.substr(2));
  } catch (...) {
    return 0;
  }
}

std::string header_value(const std::string& header, const std::string& key) {
  auto at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  at = header.find(':', at);
  if (at == std::string::npos) return "";
  at++;
  while (at < header.size() && header[at] == ' ') at++;
  if (at < header.size() && header[at] == '(') return header.substr(at, header.find(')', at) - at + 1);
  if (at < header.size() && header[at] == '\'') return header.substr(at + 1, header.find('\'', at + 1) - at - 1);
  auto end = header.find_first_of(",}", at);
  return header.substr(at, end - at);
}

}  // namespace

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path + ": the file does not exist or is not readable");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw Error(path + " is not a .npy file (save arrays with numpy.save)");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint8_t len[2];
    f.read(reinterpret_cast<char*>(len), 2);
    header_len = len[0] | (len[1] << 8);
  } else {
    uint8_t len[4];
    f.read(reinterpret_cast<char*>(len), 4);
    header_len = len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<uint32_t>(len[3]) << 24);
  }
  std::string header(header_len, '\0');
  if (!f.read(header.data(), header_len)) throw Error(path + " is a truncated .npy file (its header is cut short)");
  NpyArray a;
  a.dtype = header_value(header, "descr");
  if (header_value(header, "fortran_order") != "False")
    throw Error(path + " is stored in Fortran order; save it with numpy.save(path, numpy.ascontiguousarray(a))");
  if (a.dtype.empty() || a.dtype[0] == '>' || item_size(a.dtype) == 0)
    throw Error(path + " has dtype " + a.dtype + ", which d4rt-query does not read (little-endian numbers only)");
  std::string shape = header_value(header, "shape");
  std::stringstream ss(shape.size() > 2 ? shape.substr(1, shape.size() - 2) : "");
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    a.shape.push_back(std::stoll(item));
  }
  const int64_t bytes = a.size() * item_size(a.dtype);
  a.bytes.resize(static_cast<size_t>(bytes));
  if (bytes && !f.read(a.bytes.data(), bytes))
    throw Error(path + " is a truncated .npy file (" + std::to_string(bytes) + " bytes of data expected)");
  return a;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;  // "5, 3" or "5," (a Python tuple)
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); i++) {
    dims += (i ? ", " : "") + std::to_string(shape[i]);
    n *= shape[i];
  }
  if (shape.size() == 1) dims += ",";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(le, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
  if (!f) throw Error("could not write all of " + path + " (disk full?)");
}

}  // namespace d4rt
