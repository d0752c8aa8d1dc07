// tests/support/eventually.hpp: retrying a check that needs a pool worker to
// take a task. On a loaded machine (ctest -j2 beside a build, a CI run beside
// another) a woken worker may be scheduled only after the calling thread has
// run every task itself, in run after run: a fixed number of attempts fails
// there now and then, a time budget does not.
#pragma once

#include <chrono>  // std::chrono

namespace scalify_test {

/// Calls attempt() until it returns true or `budget` has passed, at least
/// once; returns its last result.
template <class F>
bool eventually(F attempt, std::chrono::milliseconds budget = std::chrono::seconds(30)) {
  const auto end = std::chrono::steady_clock::now() + budget;
  for (;;) {
    if (attempt()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
  }
}

}  // namespace scalify_test
