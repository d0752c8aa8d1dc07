// scalify: a small persistent thread pool for the GEMM (std::thread).
//
// One process-wide pool of hardware_concurrency() - 1 workers, started on
// first use; the calling thread works too. run(n, threads, f) calls f(task)
// for every task in [0, n) on up to `threads` threads and returns when all are
// done. Tasks are handed out one at a time from an atomic counter. If the pool
// is busy (another thread's GEMM, or a nested call), the caller runs the tasks
// itself: never a deadlock, never oversubscription.
#ifndef SCALIFY_KERNELS_THREAD_POOL_HPP_
#define SCALIFY_KERNELS_THREAD_POOL_HPP_

#include <atomic>              // std::atomic
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // ptrdiff_t
#include <mutex>               // std::mutex, std::unique_lock
#include <thread>              // std::thread
#include <type_traits>         // std::remove_reference_t
#include <vector>              // std::vector

namespace scalify::kernels {

class thread_pool {
 public:
  /// The process-wide pool.
  static thread_pool& instance() {
    static thread_pool pool(default_threads());
    return pool;
  }

  /// Threads a run() can use: the workers plus the caller.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Calls f(task) for task in [0, n) on up to `threads` threads (caller
  /// included; <= 0 means all). f must not throw.
  template <class F>
  void run(std::ptrdiff_t n, int threads, F&& f) {
    if (n <= 0) return;
    if (threads <= 0 || threads > size()) threads = size();
    if (threads > n) threads = static_cast<int>(n);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (threads <= 1 || !busy.owns_lock()) {
      for (std::ptrdiff_t t = 0; t < n; ++t) f(t);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    auto call = [](void* ctx, std::ptrdiff_t t) { (*static_cast<Fn*>(ctx))(t); };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = call;
      ctx_ = const_cast<void*>(static_cast<const void*>(&f));
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      helpers_ = threads - 1;
      pending_ = helpers_;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  static int default_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
  }

  explicit thread_pool(int threads) {
    for (int w = 0; w + 1 < threads; ++w) workers_.emplace_back([this, w] { loop(w); });
  }

  void work() {
    for (;;) {
      const std::ptrdiff_t t = next_.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_) return;
      fn_(ctx_, t);
    }
  }

  void loop(int id) {
    unsigned long long seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= helpers_) continue;  // not needed for this run
      lock.unlock();
      work();
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;   // one run() at a time
  std::mutex mutex_;  // guards the job fields below
  std::condition_variable wake_, done_;
  void (*fn_)(void*, std::ptrdiff_t) = nullptr;
  void* ctx_ = nullptr;
  std::ptrdiff_t n_ = 0;
  std::atomic<std::ptrdiff_t> next_{0};
  int helpers_ = 0, pending_ = 0;
  unsigned long long generation_ = 0;
  bool stop_ = false;
};

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_THREAD_POOL_HPP_
