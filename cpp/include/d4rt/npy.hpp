// A small .npy reader / writer (format 1.0 / 2.0, little-endian, C order): what d4rt-query reads and writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace d4rt {

struct NpyArray {
  std::string dtype;            // numpy descr: "|u1", "<f4", "<i4", "<i8", "<f8", ...
  std::vector<int64_t> shape;
  std::vector<char> bytes;      // raw little-endian data, C order
  int64_t size() const;         // number of elements
};

// Throws d4rt::Error naming the file and the problem (missing, not .npy, Fortran order, big-endian, truncated).
NpyArray read_npy(const std::string& path);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace d4rt
