// The thread limit (kernels/thread_pool.hpp: thread_limit, SCALIFY_NUM_THREADS,
// config_scope's threads) and the parallel regions that obey it: gemm() (its
// own `threads` option included), packing a B, scaled matmul, the evaluation
// of a large stored result, casts and as_scaled.
//
// "No second thread does work" is observed through thread_pool::worker_tasks(),
// the count of tasks the pool's workers (never the caller) have run; the same
// operations with 2 threads must raise it, so a counter that never moves fails.
// Where the test supplies the task itself (parallel_ranges, run) it also records
// the id of the thread that ran it. The expected limits come from
// std::thread::hardware_concurrency() and the environment, read here.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_getcsr, _mm_setcsr
#endif

#include "scalify/core/config_scope.hpp"
#include "scalify/core/detail/parallel.hpp"
#include "scalify/kernels/gemm.hpp"
#include "scalify/kernels/thread_pool.hpp"
#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/matmul.hpp"
#include "support/eventually.hpp"
#include "support/scaled.hpp"

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::ScaledMatrix;
using scalify_test::random_data;
using scalify_test::random_scaled;
using scalify_test::RowMatrix;

namespace {

int hardware_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

/// The limit outside any scope, from the environment as this test reads it:
/// every hardware thread unless SCALIFY_NUM_THREADS holds a positive number.
int expected_default_limit() {
  const char* env = std::getenv("SCALIFY_NUM_THREADS");
  if (env == nullptr || *env == '\0') return hardware_threads();
  const long n = std::strtol(env, nullptr, 10);
  return n <= 0 ? hardware_threads() : static_cast<int>(std::min<long>(n, hardware_threads()));
}

/// The operations with a parallel region, each large enough to be split when
/// threads are allowed: name and action.
struct parallel_op {
  const char* name;
  std::function<void()> run;
};

std::vector<parallel_op> parallel_ops() {
  // 384^3: ~113 MFLOP, far above gemm's 2 MFLOP threshold for threads; some
  // milliseconds per product, so a waking worker finds tasks left.
  constexpr Eigen::Index kN = 384;
  // 2^20 elements: 16 times evaluate_in_place's 2^16 per thread.
  constexpr Eigen::Index kRows = 1024, kCols = 1024;
  static const RowMatrix<float8_e4m3fn> a = random_data<float8_e4m3fn>(kN, kN, 1);
  static const RowMatrix<float8_e5m2> b = random_data<float8_e5m2>(kN, kN, 2);
  static const ScaledMatrix<float8_e4m3fn> sa = random_scaled<float8_e4m3fn>(kN, kN, 0.5f, 3);
  static const ScaledMatrix<float8_e4m3fn> sb = random_scaled<float8_e4m3fn>(kN, kN, 2.0f, 4);
  static const ScaledMatrix<float8_e4m3fn> x = random_scaled<float8_e4m3fn>(kRows, kCols, 0.5f, 5);
  static const ScaledMatrix<float8_e4m3fn> y = random_scaled<float8_e4m3fn>(kRows, kCols, 4.0f, 6);
  static const ScaledMatrix<float> g = random_scaled<float>(kRows, kCols, 1.0f, 7);
  static const RowMatrix<float> plain = random_data<float>(kRows, kCols, 8);
  const auto av = scalify::row_major_view(a.data(), kN, kN);
  const auto bv = scalify::row_major_view(b.data(), kN, kN);
  return {
      {"gemm, threads option 0", [=] {
         std::vector<float> c(static_cast<size_t>(kN * kN));
         scalify::gemm(av, bv, scalify::row_major_view(c.data(), kN, kN));
       }},
      {"gemm, threads option 2", [=] {
         std::vector<float> c(static_cast<size_t>(kN * kN));
         scalify::gemm(av, bv, scalify::row_major_view(c.data(), kN, kN), {.threads = 2});
       }},
      {"gemm, 2 rows (streaming path)", [] {
         // 2 x 2048 x 1024: 8 MFLOP, B streamed in column blocks.
         static const RowMatrix<float8_e4m3fn> rows = random_data<float8_e4m3fn>(2, 1024, 10);
         static const RowMatrix<float8_e5m2> wide = random_data<float8_e5m2>(1024, 2048, 11);
         std::vector<float> c(2 * 2048);
         scalify::gemm(scalify::row_major_view(rows.data(), 2, 1024), scalify::row_major_view(wide.data(), 1024, 2048),
                       scalify::row_major_view(c.data(), 2, 2048));
       }},
      {"packed_matrix", [=] { scalify::packed_matrix packed(bv); }},
      {"gemm with a packed B", [=] {
         static const scalify::packed_matrix packed(scalify::row_major_view(b.data(), kN, kN));
         std::vector<float> c(static_cast<size_t>(kN * kN));
         scalify::gemm(av, packed, scalify::row_major_view(c.data(), kN, kN));
       }},
      {"scaled matmul", [] { ScaledMatrix<float> c = scalify::matmul(sa, sb); }},
      {"elementwise evaluation into float8", [] { ScaledMatrix<float8_e4m3fn> z = x * y + x; }},
      {"cast float -> float8_e5m2", [] { ScaledMatrix<float8_e5m2> z = g.cast<float8_e5m2>(); }},
      {"store float into float8_e4m3fn", [] { ScaledMatrix<float8_e4m3fn> z = g; }},
      {"as_scaled", [] { ScaledMatrix<float8_e4m3fn> z = scalify::as_scaled(plain, 0.25f); }},
      {"parallel_ranges", [] {
         scalify::detail::parallel_ranges(1 << 20, 1 << 10, 1, 0, [](int64_t, int64_t) {
           std::this_thread::sleep_for(std::chrono::microseconds(200));
         });
       }},
      {"thread_pool::run", [] {
         scalify::kernels::thread_pool::instance().run(64, 0, [](std::ptrdiff_t) {
           std::this_thread::sleep_for(std::chrono::microseconds(200));
         });
       }},
  };
}

/// Tasks the pool's workers ran during `f`.
uint64_t worker_tasks_during(const std::function<void()>& f) {
  const auto& pool = scalify::kernels::thread_pool::instance();
  const uint64_t before = pool.worker_tasks();
  f();
  return pool.worker_tasks() - before;
}

}  // namespace

// ------------------------------------------------------------------------------
// SCALIFY_NUM_THREADS and thread_limit()

TEST_CASE("parse_num_threads takes an integer >= 0 and names the variable and the value otherwise",
          "[kernels][thread_pool]") {
  CHECK(scalify::parse_num_threads("1") == 1);
  CHECK(scalify::parse_num_threads("0") == 0);
  CHECK(scalify::parse_num_threads("16") == 16);
  CHECK(scalify::parse_num_threads("007") == 7);
  CHECK(scalify::parse_num_threads("2147483647") == 2147483647);
  for (const std::string bad : {"", "-1", "-0", "+2", " 2", "2 ", "two", "1.5", "2x", "0x10", "2147483648",
                                "99999999999999999999"}) {
    INFO("SCALIFY_NUM_THREADS='" << bad << "'");
    CHECK_THROWS_AS(scalify::parse_num_threads(bad), std::invalid_argument);
    CHECK_THROWS_WITH(scalify::parse_num_threads(bad),
                      Catch::Contains("SCALIFY_NUM_THREADS='" + bad + "'") && Catch::Contains("integer >= 0"));
  }
}

TEST_CASE("thread_limit: the scope's threads, else the default; capped by the hardware; a request only lowers it",
          "[kernels][thread_pool]") {
  const int hw = hardware_threads();
  const int base = expected_default_limit();
  CHECK(scalify::thread_limit() == base);
  CHECK(scalify::thread_limit(1) == 1);
  CHECK(scalify::thread_limit(hw + 5) == base);
  CHECK(scalify::kernels::thread_pool::instance().size() == hw);
  {
    const scalify::config_scope one({.threads = 1});
    CHECK(scalify::thread_limit() == 1);
    CHECK(scalify::thread_limit(2) == 1);  // an explicit count cannot raise the limit
    {
      const scalify::config_scope two({.threads = 2});
      CHECK(scalify::thread_limit() == std::min(2, hw));
      CHECK(scalify::thread_limit(1) == 1);
    }
    CHECK(scalify::thread_limit() == 1);
    {
      const scalify::config_scope all({.threads = 0});  // 0: back to the default
      CHECK(scalify::thread_limit() == base);
    }
    {
      const scalify::config_scope many({.threads = hw + 7});
      CHECK(scalify::thread_limit() == hw);
    }
    CHECK(scalify::thread_limit() == 1);
  }
  CHECK(scalify::thread_limit() == base);
}

TEST_CASE("a config_scope limits its own thread only", "[kernels][thread_pool][threads]") {
  const scalify::config_scope one({.threads = 1});
  int seen = -1;
  std::thread other([&] { seen = scalify::thread_limit(); });
  other.join();
  CHECK(seen == expected_default_limit());
  CHECK(scalify::thread_limit() == 1);
}

// ------------------------------------------------------------------------------
// The parallel regions obey the limit

TEST_CASE("with 1 thread no worker runs a task: gemm, packing, matmul, evaluation, casts",
          "[kernels][thread_pool][threads]") {
  const auto ops = parallel_ops();
  const scalify::config_scope one({.threads = 1});
  for (const auto& op : ops) {
    INFO(op.name);
    CHECK(worker_tasks_during(op.run) == 0);
  }
  // Where the test writes the task, every one ran on this thread.
  std::mutex mutex;
  std::set<std::thread::id> ids;
  scalify::detail::parallel_ranges(1 << 20, 1 << 10, 1, 0, [&](int64_t, int64_t) {
    const std::lock_guard<std::mutex> lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  scalify::kernels::thread_pool::instance().run(64, 4, [&](std::ptrdiff_t) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    const std::lock_guard<std::mutex> lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  CHECK(ids == std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST_CASE("with 2 threads the workers do run tasks in each of those regions", "[kernels][thread_pool][threads]") {
  if (hardware_threads() < 2) {
    WARN("one hardware thread: the pool has no worker, nothing to check");
    return;
  }
  const auto ops = parallel_ops();
  const scalify::config_scope two({.threads = 2});
  for (const auto& op : ops) {
    INFO(op.name);
    // A worker that is slow to wake (a loaded machine) may find no task left:
    // attempts until one succeeds.
    CHECK(scalify_test::eventually([&] { return worker_tasks_during(op.run) > 0; }));
  }
}

// ------------------------------------------------------------------------------
// The caller's floating-point modes

#if defined(__SSE__) || defined(_M_X64)
// A worker computes a task as the caller would: under the caller's MXCSR
// (rounding mode, flush-to-zero, denormals-are-zero), whatever its own was.
TEST_CASE("the workers run tasks under the caller's MXCSR (rounding, FTZ, DAZ)", "[kernels][thread_pool][threads]") {
  if (hardware_threads() < 2) {
    WARN("one hardware thread: the pool has no worker, nothing to check");
    return;
  }
  constexpr unsigned kFlags = 0x3Fu;  // the exception flags: each thread its own
  const unsigned original = _mm_getcsr();
  // Round toward zero + FTZ + DAZ; round up; round down + DAZ; the default.
  for (const unsigned modes : {0xE040u, 0x4000u, 0x2040u, 0x0000u}) {
    const unsigned want = (original & ~0xE040u & ~kFlags) | modes;
    INFO("MXCSR 0x" << std::hex << want);
    std::mutex m;
    std::vector<std::pair<std::thread::id, unsigned>> seen;
    auto run_once = [&] {
      seen.clear();
      _mm_setcsr(want);
      scalify::kernels::thread_pool::instance().run(64, 2, [&](std::ptrdiff_t) {
        const unsigned csr = _mm_getcsr() & ~kFlags;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        const std::lock_guard<std::mutex> lock(m);
        seen.emplace_back(std::this_thread::get_id(), csr);
      });
      const unsigned after = _mm_getcsr() & ~kFlags;
      _mm_setcsr(original);
      CHECK(after == want);  // run() leaves the caller's modes as they were
    };
    // A worker slow to wake may find no task left: attempts until one takes some.
    REQUIRE(scalify_test::eventually([&] {
      run_once();
      const auto caller = std::this_thread::get_id();
      return std::any_of(seen.begin(), seen.end(), [&](const auto& s) { return s.first != caller; });
    }));
    REQUIRE(seen.size() == 64);
    for (const auto& s : seen) CHECK(s.second == want);
  }
}
#endif

// ------------------------------------------------------------------------------
// SCALIFY_NUM_THREADS in a fresh process (tests/CMakeLists.txt runs this case
// with =1 and with an invalid value; in the full run it is unset).

TEST_CASE("SCALIFY_NUM_THREADS sets the default limit, or makes the first parallel region throw",
          "[kernels][thread_pool][env]") {
  const char* env = std::getenv("SCALIFY_NUM_THREADS");
  const std::string value = env != nullptr ? env : "";
  INFO("SCALIFY_NUM_THREADS=" << (env != nullptr ? "'" + value + "'" : "(unset)"));
  bool valid = true;
  try {
    scalify::parse_num_threads(value);
  } catch (const std::invalid_argument&) {
    valid = value.empty();  // empty: as if unset
  }
  if (!valid) {
    const auto names = Catch::Contains("SCALIFY_NUM_THREADS='" + value + "'");
    CHECK_THROWS_WITH(scalify::thread_limit(), names);
    std::vector<float> a(64 * 64), c(64 * 64);
    const auto av = scalify::row_major_view(a.data(), 64, 64);
    CHECK_THROWS_AS(scalify::gemm(av, av, scalify::row_major_view(c.data(), 64, 64)), std::invalid_argument);
    CHECK_THROWS_WITH(([] {
                        const auto x = random_scaled<float8_e4m3fn>(1024, 1024, 0.5f, 9);
                        ScaledMatrix<float8_e4m3fn> z = x * x;
                      }()),
                      names);
    CHECK_THROWS_WITH(scalify::thread_limit(), names);  // every time, not only the first
    const scalify::config_scope one({.threads = 1});    // and in a scope too
    CHECK_THROWS_WITH(scalify::thread_limit(), names);
    return;
  }
  const auto x = random_scaled<float8_e4m3fn>(1024, 1024, 0.5f, 9);
  CHECK(scalify::thread_limit() == expected_default_limit());
  if (expected_default_limit() == 1) {
    for (const auto& op : parallel_ops()) {
      INFO(op.name);
      CHECK(worker_tasks_during(op.run) == 0);
    }
  }
  if (hardware_threads() >= 2) {
    const scalify::config_scope two({.threads = 2});  // the scope overrides the variable
    CHECK(scalify::thread_limit() == 2);
    CHECK(scalify_test::eventually(
        [&] { return worker_tasks_during([&] { ScaledMatrix<float8_e4m3fn> z = x * x; }) > 0; }));
  }
}
