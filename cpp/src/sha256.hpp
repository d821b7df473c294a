// SHA-256 (FIPS 180-4), streamed; for checking files against the manifest without another library.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace d4rt::detail {

class Sha256 {
 public:
  Sha256();
  void update(const uint8_t* data, size_t n);
  std::string hexdigest();  // finishes the hash

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t used_ = 0;
  uint64_t bits_ = 0;
};

}  // namespace d4rt::detail
