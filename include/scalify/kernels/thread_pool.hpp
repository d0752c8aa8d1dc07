// scalify: a small persistent thread pool (std::thread), shared by the GEMM
// and by the evaluation of large results (core/detail/parallel.hpp), and the
// one thread limit that every parallel region of the library obeys.
//
// The limit (thread_limit()): config_scope's `threads` on the calling thread
// if set (> 0), else the environment variable SCALIFY_NUM_THREADS (read once,
// at the first parallel region; an integer >= 0, 0 meaning every hardware
// thread; anything else makes every parallel region throw
// std::invalid_argument), else every hardware thread; never more than the
// hardware threads. 1 means the calling thread only: no worker runs a task.
//
// One process-wide pool of hardware_concurrency() - 1 workers, started on
// first use; the calling thread works too. run(n, threads, f) calls f(task)
// for every task in [0, n) on up to `threads` threads (and at most
// thread_limit()) and returns when all are done. Tasks are handed out one at
// a time from an atomic counter. If the pool is busy (another thread's run,
// or a nested call), the caller runs the tasks itself: never a deadlock,
// never oversubscription.
//
// Each task runs under the caller's floating-point modes (on x86 its MXCSR:
// rounding, flush-to-zero, denormals-are-zero; elsewhere its rounding mode),
// so that a result does not depend on which thread computed it, nor on the
// modes of the thread that happened to start the pool.
//
// Hand-off: a worker that has finished a run spins for kSpin before it sleeps
// on a condition variable, and the caller spins for kSpin on the workers'
// completion before it sleeps. A GEMM makes two or three runs back to back
// (packing, then the blocks of C), and a training step many GEMMs: waking a
// sleeping thread through the kernel takes 30-60 us on a VM, as long as a
// whole 256^3 product on two cores. OpenMP runtimes spin for the same reason.
#ifndef SCALIFY_KERNELS_THREAD_POOL_HPP_
#define SCALIFY_KERNELS_THREAD_POOL_HPP_

#include <algorithm>           // std::min
#include <atomic>              // std::atomic
#include <charconv>            // std::from_chars
#include <chrono>              // std::chrono::steady_clock
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // ptrdiff_t
#include <cstdint>             // uint64_t
#include <cstdlib>             // std::getenv
#include <mutex>               // std::mutex, std::unique_lock
#include <stdexcept>           // std::invalid_argument
#include <string>              // std::string
#include <string_view>         // std::string_view
#include <system_error>        // std::errc
#include <thread>              // std::thread
#include <type_traits>         // std::remove_reference_t
#include <vector>              // std::vector

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_getcsr, _mm_setcsr
#else
#include <cfenv>  // std::fegetround, std::fesetround
#endif

namespace scalify {

/// Parses a value of SCALIFY_NUM_THREADS: a decimal integer >= 0 (0: every
/// hardware thread). Throws std::invalid_argument naming the variable and the
/// value for anything else (empty, signs, spaces, other characters, > INT_MAX).
///
/// **Example**: `scalify::parse_num_threads("4") == 4`
inline int parse_num_threads(std::string_view value) {
  int n = -1;
  const char* const end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, n);
  if (value.empty() || ec != std::errc() || ptr != end || n < 0 || value.front() == '-') {
    throw std::invalid_argument("scalify: SCALIFY_NUM_THREADS='" + std::string(value) +
                                "' is not a thread count (expected an integer >= 0; 0 or unset: every hardware "
                                "thread)");
  }
  return n;
}

namespace kernels::detail {

/// Threads this machine runs at once (hardware_concurrency(), at least 1):
/// the size of the pool, caller included.
inline int hardware_threads() {
  static const int n = [] {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

/// SCALIFY_NUM_THREADS, parsed on the first call (0: unset, empty or 0). An
/// invalid value throws on every call.
inline int env_num_threads() {
  static const int n = [] {
    const char* env = std::getenv("SCALIFY_NUM_THREADS");
    return env == nullptr || *env == '\0' ? 0 : parse_num_threads(env);
  }();
  return n;
}

/// This thread's config_scope `threads` (0: not set). Written only by
/// config_scope (core/config_scope.hpp), which keeps it equal to
/// current_config().threads.
inline int& scoped_threads() {
  thread_local int n = 0;
  return n;
}

}  // namespace kernels::detail

/// The most threads a parallel region started on this thread may use (the
/// caller included), at least 1: config_scope's `threads` if > 0, else
/// SCALIFY_NUM_THREADS if set and > 0, else every hardware thread; never more
/// than the hardware threads. With `requested` > 0, at most that many too
/// (an explicit count can lower the limit, not raise it). Throws
/// std::invalid_argument if SCALIFY_NUM_THREADS is invalid.
///
/// **Example**: `{ scalify::config_scope one({.threads = 1}); assert(scalify::thread_limit() == 1); }`
inline int thread_limit(int requested = 0) {
  const int hw = kernels::detail::hardware_threads();
  const int env = kernels::detail::env_num_threads();  // checked even when a scope decides
  const int scoped = kernels::detail::scoped_threads();
  int limit = scoped > 0 ? scoped : env;
  if (limit <= 0 || limit > hw) limit = hw;
  return requested > 0 && requested < limit ? requested : limit;
}

}  // namespace scalify

namespace scalify::kernels {

namespace detail {

/// A pause in a spin loop: the x86 `pause` hint, else a yield.
inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

/// Spins until pred() or `budget` has passed; returns pred()'s last value.
template <class Pred>
bool spin_until(Pred pred, std::chrono::microseconds budget) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1;; ++i) {
    if (pred()) return true;
    if (i % 64 == 0 && std::chrono::steady_clock::now() - start > budget) return pred();
    spin_pause();
  }
}

/// The floating-point modes a task runs under: the caller's MXCSR on x86
/// (without its exception flags, which stay each thread's own), its rounding
/// mode elsewhere.
struct fp_modes {
#if defined(__SSE__) || defined(_M_X64)
  static constexpr unsigned kFlags = 0x3Fu;  // MXCSR's sticky exception flags
  unsigned csr = 0;
  static fp_modes current() { return {_mm_getcsr() & ~kFlags}; }
  void apply() const {
    const unsigned now = _mm_getcsr();
    if ((now & ~kFlags) != csr) _mm_setcsr((now & kFlags) | csr);
  }
#else
  int round = 0;
  static fp_modes current() { return {std::fegetround()}; }
  void apply() const {
    if (std::fegetround() != round) std::fesetround(round);
  }
#endif
};

}  // namespace detail

class thread_pool {
 public:
  /// How long an idle thread spins before it sleeps.
  static constexpr std::chrono::microseconds kSpin{200};

  /// The process-wide pool.
  static thread_pool& instance() {
    static thread_pool pool(detail::hardware_threads());
    return pool;
  }

  /// Threads a run() can use: the workers plus the caller.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// How many run() calls so far handed tasks to the workers (for tests and
  /// diagnostics: a run on the caller alone does not count).
  uint64_t parallel_runs() const { return parallel_runs_.load(std::memory_order_relaxed); }

  /// How many tasks the workers (not the callers of run()) have run so far:
  /// it stays put across anything run with thread_limit() == 1. Read after
  /// run() returns, it includes that run's tasks.
  uint64_t worker_tasks() const { return worker_tasks_.load(std::memory_order_relaxed); }

  /// Calls f(task) for task in [0, n) on up to `threads` threads (caller
  /// included; <= 0 means thread_limit()), never more than thread_limit().
  /// f must not throw. Throws std::invalid_argument, before any task, if
  /// SCALIFY_NUM_THREADS is invalid.
  template <class F>
  void run(std::ptrdiff_t n, int threads, F&& f) {
    if (n <= 0) return;
    threads = std::min(thread_limit(threads), size());
    if (threads > n) threads = static_cast<int>(n);
    const auto alone = [&] {
      for (std::ptrdiff_t t = 0; t < n; ++t) f(t);
    };
    if (threads <= 1) return alone();
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return alone();
    parallel_runs_.fetch_add(1, std::memory_order_relaxed);
    using Fn = std::remove_reference_t<F>;
    auto call = [](void* ctx, std::ptrdiff_t t) { (*static_cast<Fn*>(ctx))(t); };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = call;
      ctx_ = const_cast<void*>(static_cast<const void*>(&f));
      n_ = n;
      modes_ = detail::fp_modes::current();
      next_.store(0, std::memory_order_relaxed);
      helpers_ = threads - 1;
      pending_.store(helpers_, std::memory_order_relaxed);
      // Release: a worker that sees the new generation sees the job above.
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    wake_.notify_all();
    work();
    const auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!detail::spin_until(finished, kSpin)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, finished);
    }
  }

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  explicit thread_pool(int threads) {
    for (int w = 0; w + 1 < threads; ++w) workers_.emplace_back([this, w] { loop(w); });
  }

  /// Runs tasks until none is left; returns how many it ran.
  uint64_t work() {
    for (uint64_t done = 0;; ++done) {
      const std::ptrdiff_t t = next_.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_) return done;
      fn_(ctx_, t);
    }
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      detail::spin_until(
          [&] {
            return generation_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire);
          },
          kSpin);
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_relaxed) != seen;
      });
      if (stop_.load(std::memory_order_relaxed)) return;
      // Read under the lock: the job fields belong to this generation (a run
      // cannot publish the next one before this one's helpers are done).
      seen = generation_.load(std::memory_order_relaxed);
      const bool needed = id < helpers_;
      const detail::fp_modes modes = modes_;
      lock.unlock();
      if (!needed) continue;
      modes.apply();
      // Counted before pending_ is released: the caller, once it sees
      // pending_ == 0, sees this run's tasks in worker_tasks().
      worker_tasks_.fetch_add(work(), std::memory_order_relaxed);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // Under the lock, so that a caller between its check and its wait
        // cannot miss the notification.
        std::lock_guard<std::mutex> done_lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // one run() at a time
  std::mutex mutex_;  // guards the job fields below (written only while no helper is working)
  std::condition_variable wake_, done_;
  void (*fn_)(void*, std::ptrdiff_t) = nullptr;
  void* ctx_ = nullptr;
  std::ptrdiff_t n_ = 0;
  detail::fp_modes modes_;  // the caller's, for the workers
  std::atomic<std::ptrdiff_t> next_{0};
  std::atomic<int> pending_{0};  // helpers still working on the current run
  int helpers_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> parallel_runs_{0};
  std::atomic<uint64_t> worker_tasks_{0};
};

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_THREAD_POOL_HPP_
