#pragma once
// Asserting that bad input fails with a message that names the problem.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace spe::testing {

// Runs f and returns the message of the c10::Error (or std::exception) it throws, or "no error".
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace spe::testing

// Expects `statement` to throw an error whose message contains `expected`.
#define EXPECT_ERROR_CONTAINS(statement, expected)                                      \
  do {                                                                                  \
    const std::string spe_message_ = ::spe::testing::error_message([&] { statement; }); \
    EXPECT_NE(spe_message_.find(expected), std::string::npos)                           \
        << "expected an error containing \"" << (expected) << "\", got: " << spe_message_; \
  } while (0)
