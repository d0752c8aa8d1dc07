// scalify: split a loop over [0, n) across threads (evaluation of large results).
//
// The ranges run on the process-wide pool of the GEMM (kernels/thread_pool.hpp),
// whose idle threads spin briefly before sleeping; still, only loops with at
// least `grain` iterations per thread are split, and into no more ranges than
// thread_limit() allows (config_scope's threads, SCALIFY_NUM_THREADS): one
// range, on the calling thread, when that is 1. Ranges are contiguous and in
// order (range 0 is the first), whichever thread runs them.
#ifndef SCALIFY_CORE_DETAIL_PARALLEL_HPP_
#define SCALIFY_CORE_DETAIL_PARALLEL_HPP_

#include <algorithm>  // std::min, std::max
#include <cstdint>    // int64_t
#include <exception>  // std::exception_ptr
#include <vector>     // std::vector

#include "scalify/kernels/thread_pool.hpp"  // thread_pool, thread_limit

namespace scalify::detail {

/// Calls f(begin, end) on contiguous ranges covering [0, n), each a multiple
/// of `align` long (but the last), on up to thread_limit(threads) threads
/// (`threads` 0: the limit), at least `grain` iterations per thread. Rethrows the first exception of any range
/// after every thread has finished.
template <class F>
void parallel_ranges(int64_t n, int64_t grain, int64_t align, int threads, F&& f) {
  align = std::max<int64_t>(align, 1);
  const int64_t by_grain = n / std::max<int64_t>(grain, 1);
  const int parts = static_cast<int>(std::min<int64_t>(thread_limit(threads), std::max<int64_t>(by_grain, 1)));
  if (parts <= 1) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  // Range length: n / parts rounded up to a multiple of align.
  const int64_t length = ((n + parts - 1) / parts + align - 1) / align * align;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
  kernels::thread_pool::instance().run(parts, parts, [&](std::ptrdiff_t part) {
    const int64_t begin = std::min(n, part * length), end = std::min(n, begin + length);
    try {
      if (begin < end) f(begin, end);
    } catch (...) {
      errors[static_cast<size_t>(part)] = std::current_exception();
    }
  });
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace scalify::detail

#endif  // SCALIFY_CORE_DETAIL_PARALLEL_HPP_
