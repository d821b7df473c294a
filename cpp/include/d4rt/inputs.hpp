// Input checks mirrored from the Python runtime (d4rt.runtime: _check_uv, _check_times, usable_frame_count,
// check_aspect_ratio, the batch size): the same rules and the same wording. Each throws d4rt::Error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace d4rt {

void check_uv(const std::vector<float>& uv);  // [N, 2] flattened
void check_times(const std::string& name, const std::vector<int32_t>& t, int64_t n, int64_t num_frames);
void check_batch_size(int64_t batch_size);
void check_grid_size(const std::string& name, int64_t size);
std::optional<double> check_aspect_ratio(std::optional<double> aspect_ratio);
// How many of n frames one encoder call takes (n, or n - 1 for an odd count, with a warning in *warning);
// fewer than the range's minimum is refused.
int64_t usable_frame_count(int64_t n, std::pair<int64_t, int64_t> frame_range, int64_t step, std::string* warning);

// printf-style "%.4g" as Python's f"{x:.4g}".
std::string format_g4(double x);

}  // namespace d4rt
