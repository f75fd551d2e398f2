// Shared by the test binaries: expect an exception of a type whose message
// names what it should.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace sgtest {

/// Expects `fn` to throw `E` whose message contains every one of `parts`.
template <class E, class Fn>
void expect_throw_with(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

}  // namespace sgtest
