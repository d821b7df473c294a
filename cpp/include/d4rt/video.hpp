// Frames to the encoder's input, as runtime/video.py does: each frame resized to S x S with OpenCV's INTER_AREA
// arithmetic (re-implemented here, bit for bit: see src/video.cpp), then float32 / 255 as [1, T, 3, S, S].
#pragma once

#include <cstdint>
#include <vector>

namespace d4rt {

// One uint8 image [h, w, channels] -> [dh, dw, channels], cv2.resize(src, (dw, dh), interpolation=INTER_AREA).
std::vector<uint8_t> resize_area(const uint8_t* src, int h, int w, int channels, int dh, int dw);

// frames [T, H, W, 3] uint8 -> resized [T, S, S, 3] uint8 and video [1, T, 3, S, S] float32 in [0, 1].
void prepare_clip(const uint8_t* frames, int64_t T, int64_t H, int64_t W, int64_t S, std::vector<uint8_t>& resized,
                  std::vector<float>& video);

}  // namespace d4rt
