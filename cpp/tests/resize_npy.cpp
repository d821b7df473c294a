// d4rt_resize_npy IN.npy DH DW OUT.npy: an [H, W, C] uint8 image resized as the C++ runtime does (src/video.cpp);
// tests/test_cpp.py compares it with cv2.resize(..., interpolation=cv2.INTER_AREA), byte for byte.
#include <fstream>
#include <iostream>

#include "d4rt/npy.hpp"
#include "d4rt/video.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: d4rt_resize_npy IN.npy DH DW OUT.npy\n";
    return 2;
  }
  d4rt::NpyArray a = d4rt::read_npy(argv[1]);
  if (a.dtype != "|u1" || a.shape.size() != 3) {
    std::cerr << "IN.npy must be [H, W, C] uint8\n";
    return 2;
  }
  const int dh = std::stoi(argv[2]), dw = std::stoi(argv[3]), c = static_cast<int>(a.shape[2]);
  auto out = d4rt::resize_area(reinterpret_cast<const uint8_t*>(a.bytes.data()), static_cast<int>(a.shape[0]),
                               static_cast<int>(a.shape[1]), c, dh, dw);
  std::ofstream f(argv[4], std::ios::binary);  // raw bytes [DH, DW, C]: the test reads them with numpy.fromfile
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  return f ? 0 : 1;
}
