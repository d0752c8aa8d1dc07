// tests/support/exhaustive.hpp: run a check over all 2^32 float32 bit patterns
// on every hardware thread, collecting mismatches without touching Catch2 from
// the worker threads (Catch2 v2 assertions are not thread-safe).
#pragma once

#include <algorithm>   // std::min
#include <atomic>      // std::atomic
#include <bit>         // std::bit_cast
#include <chrono>      // timing
#include <cstdint>     // std::uint32_t, std::uint64_t
#include <cstdlib>     // std::getenv, std::strtoull
#include <cstring>     // std::memcmp, std::memcpy
#include <ctime>       // clock_gettime, CLOCK_THREAD_CPUTIME_ID (POSIX)
#include <exception>   // std::exception_ptr
#include <functional>  // std::function
#include <memory>      // std::unique_ptr
#include <mutex>       // std::mutex
#include <string>      // std::string
#include <thread>      // std::thread
#include <vector>      // std::vector

namespace scalify_test {

inline unsigned worker_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// Calls fn(begin, count) for consecutive pieces of [0, total) of at most
// `chunk` elements, from worker_count() threads. Rethrows the first exception.
template <class Fn>
void parallel_chunks(std::uint64_t total, std::uint64_t chunk, Fn fn) {
  std::atomic<std::uint64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      for (;;) {
        const std::uint64_t begin = next.fetch_add(chunk);
        if (begin >= total) return;
        fn(begin, static_cast<std::size_t>(std::min(chunk, total - begin)));
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = total;  // stop the others soon
    }
  };
  std::vector<std::thread> threads;
  const unsigned n = worker_count();
  for (unsigned i = 1; i < n; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

// Thread-safe record of mismatches: the total count and the first few.
class mismatch_log {
 public:
  explicit mismatch_log(std::size_t keep = 8) : keep_(keep) {}

  void add(const std::string& line) {
    count_.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard<std::mutex> lock(mutex_);
    if (lines_.size() < keep_) lines_.push_back(line);
  }
  void add_count(std::uint64_t n) { count_.fetch_add(n, std::memory_order_relaxed); }

  std::uint64_t count() const { return count_.load(); }

  // CPU time spent in the code under test (summed over threads).
  void add_seconds(double s) {
    const std::lock_guard<std::mutex> lock(mutex_);
    seconds_ += s;
  }
  double seconds() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return seconds_;
  }
  // "N mismatches; first: ..." (one line per recorded mismatch).
  std::string summary() const {
    std::string s = std::to_string(count()) + " mismatches";
    const std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& l : lines_) s += "\n  " + l;
    return s;
  }

 private:
  std::size_t keep_;
  std::atomic<std::uint64_t> count_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
  double seconds_ = 0;
};

inline std::string hex(std::uint64_t v, int digits) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string s = "0x";
  for (int i = digits - 1; i >= 0; --i) s += kDigits[(v >> (4 * i)) & 0xF];
  return s;
}

// Compares expected[0..n) with actual[0..n) (codes of inputs first..first+n),
// logging every difference as "<what>: input 0x........ expected 0x.. actual 0x..".
template <class Code>
void compare_codes(const std::string& what, std::uint64_t first, const Code* expected,
                   const Code* actual, std::size_t n, mismatch_log& log, int input_digits = 8) {
  if (std::memcmp(expected, actual, n * sizeof(Code)) == 0) return;
  constexpr int kDigits = 2 * static_cast<int>(sizeof(Code));
  for (std::size_t i = 0; i < n; ++i) {
    if (expected[i] != actual[i]) {
      log.add(what + ": input " + hex(first + i, input_digits) + " expected " +
              hex(expected[i], kDigits) + " actual " + hex(actual[i], kDigits));
    }
  }
}

// CPU time of the calling thread (not inflated when other processes compete
// for the cores); wall-clock time where that is not available.
inline double thread_cpu_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#if defined(__SANITIZE_ADDRESS__)
#define SCALIFY_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALIFY_TEST_SANITIZED 1
#endif
#endif

// The "exhaustive" passes check every chunk of the float inputs, or only every
// Nth one with SCALIFY_TEST_EXHAUSTIVE_STRIDE=N in the environment. Sanitizer
// builds default to every 17th chunk (they run the code under test 5-20 times
// slower, and look for memory errors, which every chunk exercises alike; the
// Release build checks every input). An odd stride lets the chunk index's low
// bits, the float's top mantissa bits, where rounding to float8 is decided,
// take every value over the run (a few per exponent): a power of two would
// pin them to zero.
// SCALIFY_TEST_EXHAUSTIVE_STRIDE=1 forces the full run there too. report()
// warns whenever inputs are skipped.
inline std::uint64_t exhaustive_stride() {
  const char* env = std::getenv("SCALIFY_TEST_EXHAUSTIVE_STRIDE");
  if (env != nullptr && *env != '\0') {
    const unsigned long long n = std::strtoull(env, nullptr, 10);
    return n == 0 ? 1 : n;
  }
#if defined(SCALIFY_TEST_SANITIZED)
  return 17;
#else
  return 1;
#endif
}

// One check of an exhaustive pass over every float32 input: the expected codes
// (a reference table) and the code under test, which converts n floats to n
// codes.
template <class Code, class Segments>
struct float_check {
  std::string name;  // printed with every mismatch: cast, format, options, path
  const Segments* expected;
  std::function<void(const float* in, Code* out, std::size_t n)> run;
};

// Runs every check on all 2^32 float bit patterns (the inputs of each chunk
// are made once and shared by the checks) and returns one log per check.
template <class Code, class Segments>
std::vector<std::unique_ptr<mismatch_log>> run_on_every_float(
    const std::vector<float_check<Code, Segments>>& checks,
    std::size_t chunk = std::size_t{1} << 16) {
  std::vector<std::unique_ptr<mismatch_log>> logs;
  for (std::size_t k = 0; k < checks.size(); ++k) logs.push_back(std::make_unique<mismatch_log>());
  const std::uint64_t stride = exhaustive_stride();
  parallel_chunks(std::uint64_t{1} << 32, chunk, [&](std::uint64_t begin, std::size_t n) {
    if ((begin / chunk) % stride != 0) return;
    thread_local std::vector<float> in;
    thread_local std::vector<Code> expected, actual;
    in.resize(n);
    expected.resize(n);
    actual.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      in[i] = std::bit_cast<float>(static_cast<std::uint32_t>(begin + i));
    }
    for (std::size_t k = 0; k < checks.size(); ++k) {
      checks[k].expected->fill(begin, n, expected.data());
      const double t0 = thread_cpu_seconds();
      checks[k].run(in.data(), actual.data(), n);
      logs[k]->add_seconds(thread_cpu_seconds() - t0);
      compare_codes(checks[k].name, begin, expected.data(), actual.data(), n, *logs[k]);
    }
  });
  return logs;
}

// Wall-clock seconds since construction, to print what each exhaustive pass costs.
class stopwatch {
 public:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace scalify_test
