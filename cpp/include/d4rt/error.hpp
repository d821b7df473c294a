// d4rt::Error: every refusal of the C++ runtime (bad input, missing or foreign files, another machine).
// One exception type whose what() is one line naming the problem and the fix, as the Python runtime's messages.
#pragma once

#include <stdexcept>
#include <string>

namespace d4rt {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace d4rt
