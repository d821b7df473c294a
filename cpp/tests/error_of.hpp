// What the tests check of a refusal: the message of the d4rt::Error a call throws.
#pragma once

#include <string>

#include "d4rt/error.hpp"

// The message of the d4rt::Error that `body` throws ("" if none).
template <typename F>
std::string error_of(F body) {
  try {
    body();
  } catch (const d4rt::Error& e) {
    return e.what();
  }
  return "";
}
