// bench_matmul: scalify::gemm (float8 e4m3fn / e5m2, bfloat16, float16,
// float32 inputs, float32 output) against Eigen float32 (and OpenBLAS sgemm
// when built with SCALIFY_HAVE_OPENBLAS), for 1 and 2 threads.
//
//   BM_Gemm/<impl>/<M>/<N>/<K>/t:<threads>
//     impl: eigen_f32, openblas_f32, scalify_e4m3, scalify_e5m2, scalify_bf16, scalify_f16, scalify_f32,
//           scalify_e4m3_packed, scalify_f32_packed (B packed once, reused by every call; M > 1 only)
//   counters: GFLOPS (2 M N K / s, wall time), x_eigen (eigen_f32 time / this time, same
//   process, same shape and threads; > 1 is faster than Eigen)
//
//   BM_Microkernel/<kernel>   one core: the micro-kernel of each path this CPU has, alone,
//     on panels that stay in L1/L2 (KC units of A and B, as the GEMM hands it), and
//     BM_Peak/<instruction>, independent chains of the instruction it is built on
//     (vfmadd231ps ymm or zmm, vdpbf16ps zmm) with nothing else in the loop: the
//     core's peak. counters: GFLOPS, x_peak (this kernel's GFLOPS / the peak's,
//     same process): how far the kernel is from its instruction bound.
//
//   BM_GemvInCache/<impl>   one core: the streaming GEMV (M = 1) of scalify_e4m3, scalify_e5m2,
//     scalify_f16, scalify_bf16, scalify_f32 with B in cache (1 x 512 x 256: 128 KiB of
//     float8, in L2; 512 KiB of float32, in L2 where it is 1 MiB), the rate of its
//     instructions with no memory stall; counters GFLOPS and x_openblas_memory (this
//     GFLOPS / OpenBLAS sgemv's from memory, 1 x 4096 x 4096 on one thread, same process):
//     below 3, the kernel's instructions alone keep one core from 3x one core's sgemv (the
//     target is on two threads: see BM_GemvReadBound).
//   BM_GemvReadBound/t:<threads>   1 x 4096 x 4096 float8 weights from memory read in the
//     streaming GEMV's order and nothing else (no decode, no FMA), on 1 or 2 threads; counters
//     GFLOPS (a GEMV streaming that fast), GB/s, x_openblas_memory (against OpenBLAS sgemv from
//     memory on as many threads): below 3, the reads alone keep the GEMV target out of reach.
//   BM_GemvDot/<impl>/1/4096/4096/t:<threads>   C = A W^T with W (4096 x 4096, row-major: PyTorch's
//     layout, GPT's output head) from memory: the streaming path's dot form (kernels/gemv.hpp);
//     impl: openblas_f32 (sgemv, no transpose), scalify_e4m3, _e5m2, _bf16, _f16, _f32;
//     counters GFLOPS, GB/s, x_openblas (OpenBLAS's sgemv on the float32 W, same process).
//
// A (M x K), B (K x N) and C are row-major. Shapes: squares 256, 512, 1024,
// 2048; 128x4096x4096 and 512x4096x4096; 1x4096x4096, where several copies of
// B are used in turn so the weights stream from memory, as in inference: 128
// MiB in all, or twice the L3 if that is more (2 GiB at most; a VM on a large
// Xeon reports a 480 MiB L3, where 128 MiB is read from L3 at twice the rate).
// The M = 1 rows add `GB/s`, B's bytes read per second. The shapes with M > 1 and K = 4096 (4096^3,
// 128x4096x4096, 512x4096x4096) only with --large (or SCALIFY_BENCH_LARGE=1),
// so that the smoke test (every benchmark once) stays short.
//
// This program is compiled with -mavx2 -mfma -mf16c (benchmarks/CMakeLists.txt)
// and OpenMP when available, so the Eigen baseline is vectorized and threaded.
//
//   build/benchmarks/bench_matmul --benchmark_filter='2048|/1/4096' --benchmark_format=json > m.json
//   python3 scripts/plot_matmul.py m.json matmul.png
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "scalify/kernels/gemm.hpp"
#include "scalify/kernels/table.hpp"  // kernels_for, microkernel

#include "context.hpp"  // scalify_bench::run

#include <unistd.h>  // execv, sysconf

#ifdef SCALIFY_HAVE_OPENBLAS
#include <cblas.h>
#endif

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // the peak loops
#endif

namespace {

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Bytes of B used in turn by the M <= 4 shapes: at least twice the L3 (a
/// cyclic read of twice a cache's size misses in it at every line), between
/// 128 MiB and 2 GiB.
std::size_t stream_bytes() {
  static const std::size_t bytes = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);  // 0 or -1 if unknown
    const std::size_t twice = l3 > 0 ? 2 * static_cast<std::size_t>(l3) : 0;
    return std::clamp(twice, std::size_t{128} << 20, std::size_t{2} << 30);
  }();
  return bytes;
}

/// Deterministic values in [-1, 1) (xorshift), cheap enough for 128 MiB.
std::vector<float> random_floats(std::size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    x = static_cast<float>(s >> 8) * 0x1p-23f - 1.0f;
  }
  return v;
}

template <class T>
std::vector<T> narrow(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = static_cast<T>(x[i]);
  return y;
}

/// Copies of B used in turn: one unless the shape is a GEMV over big weights.
std::size_t copies_for(std::size_t b_bytes, int64_t m) {
  if (m > 4) return 1;
  return std::max<std::size_t>(1, (stream_bytes() + b_bytes - 1) / b_bytes);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Eigen float32 seconds per product, per (M, N, K, threads), measured once
/// per process (by BM_Gemm/eigen_f32 if it ran, else here on demand).
std::map<std::tuple<int64_t, int64_t, int64_t, int>, double>& eigen_times() {
  static std::map<std::tuple<int64_t, int64_t, int64_t, int>, double> t;
  return t;
}

void set_threads_eigen_blas(int threads) {
  Eigen::setNbThreads(threads);
#ifdef SCALIFY_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
}

struct eigen_case {
  RowMatrixF a;
  std::vector<RowMatrixF> b;
  RowMatrixF c;
  eigen_case(int64_t m, int64_t n, int64_t k) : a(m, k), c(m, n) {
    const auto av = random_floats(static_cast<std::size_t>(m * k), 1);
    std::memcpy(a.data(), av.data(), av.size() * sizeof(float));
    const auto bv = random_floats(static_cast<std::size_t>(k * n), 2);
    b.resize(copies_for(bv.size() * sizeof(float), m), RowMatrixF(k, n));
    for (auto& bb : b) std::memcpy(bb.data(), bv.data(), bv.size() * sizeof(float));
  }
  void run(std::size_t i) { c.noalias() = a * b[i % b.size()]; }
};

double measure_eigen(int64_t m, int64_t n, int64_t k, int threads) {
  auto& cache = eigen_times();
  const auto key = std::make_tuple(m, n, k, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  set_threads_eigen_blas(threads);
  eigen_case e(m, n, k);
  e.run(0);
  double best = 1e30;
  const int reps = m * n * k > (int64_t{1} << 30) ? 2 : 5;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < e.b.size(); ++i) e.run(i);
    best = std::min(best, seconds_since(t0) / static_cast<double>(e.b.size()));
  }
  cache[key] = best;
  return best;
}

/// GFLOPS, x_eigen, and for M = 1 `GB/s`: B's bytes (b_bytes per call) per second.
void set_counters(benchmark::State& state, int64_t m, int64_t n, int64_t k, double seconds, double eigen_seconds,
                  std::size_t b_bytes) {
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const auto calls = static_cast<double>(state.iterations());
  state.counters["GFLOPS"] = benchmark::Counter(flops * 1e-9 * calls, benchmark::Counter::kIsRate);
  state.counters["x_eigen"] = eigen_seconds / seconds;
  if (m == 1) state.counters["GB/s"] = benchmark::Counter(static_cast<double>(b_bytes) * 1e-9 * calls, benchmark::Counter::kIsRate);
}

void bm_eigen(benchmark::State& state, int64_t m, int64_t n, int64_t k, int threads) {
  set_threads_eigen_blas(threads);
  eigen_case e(m, n, k);
  e.run(0);
  std::size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    e.run(i++);
    benchmark::DoNotOptimize(e.c.data());
  }
  const double s = seconds_since(t0) / static_cast<double>(state.iterations());
  eigen_times()[std::make_tuple(m, n, k, threads)] = s;  // the last (longest) run wins
  set_counters(state, m, n, k, s, s, static_cast<std::size_t>(k * n) * sizeof(float));
}

#ifdef SCALIFY_HAVE_OPENBLAS
/// e.c = e.a * b with OpenBLAS: cblas_sgemv for one row of A (y = B^T x), else cblas_sgemm.
void openblas_product(eigen_case& e, const RowMatrixF& b) {
  const int m = static_cast<int>(e.a.rows()), k = static_cast<int>(b.rows()), n = static_cast<int>(b.cols());
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, b.data(), n, e.a.data(), 1, 0.0f, e.c.data(), 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, e.a.data(), k, b.data(), n, 0.0f,
                e.c.data(), n);
  }
}

void bm_openblas(benchmark::State& state, int64_t m, int64_t n, int64_t k, int threads) {
  const double eigen_s = measure_eigen(m, n, k, threads);
  set_threads_eigen_blas(threads);
  eigen_case e(m, n, k);
  std::size_t i = 0;
  auto run = [&] { openblas_product(e, e.b[i++ % e.b.size()]); };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(e.c.data());
  }
  set_counters(state, m, n, k, seconds_since(t0) / static_cast<double>(state.iterations()), eigen_s,
               static_cast<std::size_t>(k * n) * sizeof(float));
}
#endif

// kPacked: B packed once (scalify::packed_matrix), as inference and a training
// step reuse their weights; the calls then time A's packing, the product and
// the epilogue.
template <class T, bool kPacked = false>
void bm_scalify(benchmark::State& state, int64_t m, int64_t n, int64_t k, int threads) {
  const double eigen_s = measure_eigen(m, n, k, threads);
  const auto a = narrow<T>(random_floats(static_cast<std::size_t>(m * k), 1));
  const auto b0 = narrow<T>(random_floats(static_cast<std::size_t>(k * n), 2));
  std::vector<std::vector<T>> b(kPacked ? 1 : copies_for(b0.size() * sizeof(T), m), b0);
  const scalify::packed_matrix packed =
      kPacked ? scalify::packed_matrix(scalify::row_major_view(b0.data(), k, n)) : scalify::packed_matrix();
  std::vector<float> c(static_cast<std::size_t>(m * n));
  std::size_t i = 0;
  auto run = [&] {
    const auto av = scalify::row_major_view(a.data(), m, k);
    const auto cv = scalify::row_major_view(c.data(), m, n);
    if constexpr (kPacked) {
      scalify::gemm(av, packed, cv, {.threads = threads});
    } else {
      scalify::gemm(av, scalify::row_major_view(b[i++ % b.size()].data(), k, n), cv, {.threads = threads});
    }
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, m, n, k, seconds_since(t0) / static_cast<double>(state.iterations()), eigen_s,
               static_cast<std::size_t>(k * n) * sizeof(T));
  state.SetLabel(std::string(scalify::to_string(scalify::active_cpu_path())));
}

// ---------------------------------------------------------------------------
// The GEMV from L2: the instruction rate of its decode and multiply-adds.

/// Seconds per call of `product(w)` over every copy w of the weights in turn
/// (weights from memory), best of 3 passes.
template <class Copies, class F>
double best_pass_seconds(const Copies& copies, F&& product) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& w : copies) product(w);
    best = std::min(best, seconds_since(t0) / static_cast<double>(copies.size()));
  }
  return best;
}

#ifdef SCALIFY_HAVE_OPENBLAS
/// OpenBLAS sgemv GFLOP/s, 1 x 4096 x 4096 with the weights from memory, on
/// `threads` threads; measured once per process and thread count.
double openblas_gemv_memory_gflops(int threads) {
  static std::map<int, double> measured;
  if (const auto it = measured.find(threads); it != measured.end()) return it->second;
  constexpr int64_t n = 4096, k = 4096;
  set_threads_eigen_blas(threads);
  eigen_case e(1, n, k);
  const double s = best_pass_seconds(e.b, [&](const RowMatrixF& b) { openblas_product(e, b); });
  return measured[threads] = 2.0 * n * k / s * 1e-9;
}
#endif

template <class T>
void bm_gemv_in_cache(benchmark::State& state) {
  constexpr int64_t n = 512, k = 256;
  const auto a = narrow<T>(random_floats(static_cast<std::size_t>(k), 1));
  const auto b = narrow<T>(random_floats(static_cast<std::size_t>(k * n), 2));
  std::vector<float> c(static_cast<std::size_t>(n));
  const auto av = scalify::row_major_view(a.data(), 1, k);
  const auto bv = scalify::row_major_view(b.data(), k, n);
  const auto cv = scalify::row_major_view(c.data(), 1, n);
  constexpr long kCalls = 200;
  scalify::gemm(av, bv, cv, {.threads = 1});
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (long r = 0; r < kCalls; ++r) scalify::gemm(av, bv, cv, {.threads = 1});
    benchmark::DoNotOptimize(c.data());
  }
  const double gflops =
      2.0 * n * k * kCalls * static_cast<double>(state.iterations()) / seconds_since(t0) * 1e-9;
  state.counters["GFLOPS"] = gflops;
#ifdef SCALIFY_HAVE_OPENBLAS
  state.counters["x_openblas_memory"] = gflops / openblas_gemv_memory_gflops(1);
#endif
  state.SetLabel(std::string(scalify::to_string(scalify::active_cpu_path())));
}

// ---------------------------------------------------------------------------
// The GEMV's read bound: B's codes read from memory in the streaming GEMV's
// order, and nothing else done with them.

#if SCALIFY_HAVE_X86_SIMD
/// Reads the float8 codes of rows [0, k) (a multiple of 8) and columns
/// [j0, j0 + nj) (a multiple of 64) of b (row stride n bytes) in the order of
/// the streaming GEMV for M = 1 (kernels/detail/gemv-inl.hpp): sweeps of 8
/// rows, 64 columns of each per step, and per step 8 cache lines of the next
/// sweep prefetched in address order (its 8 row segments laid end to end,
/// from byte 8 j at column j0 + j). The bytes are or-ed together: no decode,
/// no multiply-add.
SCALIFY_BEGIN_TARGET_AVX2
int read_like_gemv(const uint8_t* b, int64_t k, int64_t n, int64_t j0, int64_t nj) {
  __m256i acc = _mm256_setzero_si256();
  for (int64_t k0 = 0; k0 < k; k0 += 8) {
    const uint8_t* next[8];
    for (int64_t q = 0; q < 8; ++q) next[q] = b + std::min(k0 + 8 + q, k - 1) * n + j0;
    for (int64_t j = 0; j < nj; j += 64) {
      int64_t r = 8 * j / nj, off = 8 * j - r * nj;
      for (int l = 0; l < 8 && r < 8; ++l, off += 64) {
        if (off >= nj) {  // nj is a multiple of 64: one segment at a time
          off -= nj;
          ++r;
        }
        if (r < 8) _mm_prefetch(reinterpret_cast<const char*>(next[r] + off), _MM_HINT_T0);
      }
#pragma GCC unroll 8
      for (int64_t q = 0; q < 8; ++q) {
        const auto* p = reinterpret_cast<const __m256i*>(b + (k0 + q) * n + j0 + j);
        acc = _mm256_or_si256(acc, _mm256_or_si256(_mm256_loadu_si256(p), _mm256_loadu_si256(p + 1)));
      }
    }
  }
  return _mm256_movemask_epi8(acc);
}
SCALIFY_END_TARGET

/// 1 x 4096 x 4096 float8 weights from memory (copies used in turn, as
/// BM_Gemm's M = 1 rows), read by read_like_gemv on `threads` threads, each
/// its range of columns, as the GEMV splits them. GFLOPS: the rate of a GEMV
/// that streamed its weights this fast (2 flops per byte); x_openblas_memory:
/// that over OpenBLAS sgemv's from memory on as many threads. Meant as the
/// read bound of the GEMV, but it is not a strict one: on a Zen 2 it stayed
/// above the GEMV (2026-12-06), on a Zen 5 the e5m2 GEMV passed it by up to
/// 20 % in the same runs (docs/benchmarks.md).
void bm_gemv_read_bound(benchmark::State& state, int threads) {
  constexpr int64_t n = 4096, k = 4096;
  std::vector<std::vector<uint8_t>> b(copies_for(static_cast<std::size_t>(n * k), 1));
  for (std::size_t c = 0; c < b.size(); ++c) {
    b[c].resize(static_cast<std::size_t>(n * k));
    for (std::size_t i = 0; i < b[c].size(); ++i) b[c][i] = static_cast<uint8_t>(i * 131 + c);
  }
  auto& pool = scalify::kernels::thread_pool::instance();
  const int t_count = std::max(1, std::min(threads, pool.size()));
  std::size_t i = 0;
  std::atomic<int> sink{0};
  const auto run = [&] {
    const uint8_t* codes = b[i++ % b.size()].data();
    pool.run(t_count, t_count, [&](std::ptrdiff_t t) {
      const int64_t nj = n / t_count;
      sink.fetch_or(read_like_gemv(codes, k, n, t * nj, nj), std::memory_order_relaxed);
    });
  };
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) run();
  const double seconds = seconds_since(t0) / static_cast<double>(state.iterations());
  benchmark::DoNotOptimize(sink.load());
  state.counters["GFLOPS"] = 2.0 * n * k / seconds * 1e-9;
  state.counters["GB/s"] = static_cast<double>(n * k) / seconds * 1e-9;
#ifdef SCALIFY_HAVE_OPENBLAS
  state.counters["x_openblas_memory"] = 2.0 * n * k / seconds * 1e-9 / openblas_gemv_memory_gflops(threads);
#endif
}
#endif

// ---------------------------------------------------------------------------
// The dot form: B = W^T with W stored N x K (PyTorch's layout; GPT's output
// head reads its embedding table so), weights from memory.

/// Copies of a 1 x 4096 x 4096 W, used in turn (as BM_Gemm's M = 1 rows).
template <class T>
std::vector<std::vector<T>> gemv_dot_weights() {
  constexpr int64_t n = 4096, k = 4096;
  const auto w0 = narrow<T>(random_floats(static_cast<std::size_t>(n * k), 2));
  return std::vector<std::vector<T>>(copies_for(w0.size() * sizeof(T), 1), w0);
}

#ifdef SCALIFY_HAVE_OPENBLAS
/// OpenBLAS sgemv GFLOP/s, y = W x with W 4096 x 4096 float32 (row-major,
/// not transposed) from memory, on `threads` threads; once per process.
double openblas_gemv_dot_memory_gflops(int threads) {
  static std::map<int, double> measured;
  if (const auto it = measured.find(threads); it != measured.end()) return it->second;
  constexpr int n = 4096, k = 4096;
  set_threads_eigen_blas(threads);
  const auto w = gemv_dot_weights<float>();
  const auto x = random_floats(k, 1);
  std::vector<float> y(n);
  const double s = best_pass_seconds(w, [&](const std::vector<float>& wi) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, wi.data(), k, x.data(), 1, 0.0f, y.data(), 1);
  });
  return measured[threads] = 2.0 * n * k / s * 1e-9;
}
#endif

/// 1 x 4096 x 4096, C = A W^T with W (4096 x 4096, row-major) from memory:
/// scalify::gemm with trans_b (the dot form, kernels/gemv.hpp), T = float
/// with OpenBLAS when kOpenBlas. Counters GFLOPS, GB/s (W's bytes) and, with
/// OpenBLAS, x_openblas (OpenBLAS sgemv on the float32 W, same threads, same
/// process).
template <class T, bool kOpenBlas = false>
void bm_gemv_dot(benchmark::State& state, int threads) {
  constexpr int64_t n = 4096, k = 4096;
  const auto w = gemv_dot_weights<T>();
  const auto a = narrow<T>(random_floats(static_cast<std::size_t>(k), 1));
  std::vector<float> c(static_cast<std::size_t>(n));
  std::size_t i = 0;
  auto run = [&] {
    const T* wi = w[i++ % w.size()].data();
#ifdef SCALIFY_HAVE_OPENBLAS
    if constexpr (kOpenBlas) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, wi, k, a.data(), 1, 0.0f, c.data(), 1);
      return;
    }
#endif
    scalify::gemm(scalify::row_major_view(a.data(), 1, k), scalify::row_major_view(wi, n, k),
                  scalify::row_major_view(c.data(), 1, n), {.trans_b = scalify::trans::yes, .threads = threads});
  };
  set_threads_eigen_blas(threads);
  run();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(c.data());
  }
  const double seconds = seconds_since(t0) / static_cast<double>(state.iterations());
  state.counters["GFLOPS"] = 2.0 * n * k / seconds * 1e-9;
  state.counters["GB/s"] = static_cast<double>(n * k * static_cast<int64_t>(sizeof(T))) / seconds * 1e-9;
#ifdef SCALIFY_HAVE_OPENBLAS
  state.counters["x_openblas"] = 2.0 * n * k / seconds * 1e-9 / openblas_gemv_dot_memory_gflops(threads);
#endif
  if (!kOpenBlas) state.SetLabel(std::string(scalify::to_string(scalify::active_cpu_path())));
}

// ---------------------------------------------------------------------------
// The micro-kernels alone, against the peak of the instruction they use.

/// Best seconds per call of f over `batches` batches of `calls` calls.
template <class F>
double best_seconds_per_call(F&& f, int batches, long calls) {
  double best = 1e30;
  for (int r = 0; r < batches; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < calls; ++i) f();
    best = std::min(best, seconds_since(t0) / static_cast<double>(calls));
  }
  return best;
}

enum class peak_kind { fma8, fma16, dpbf16 };

#if SCALIFY_HAVE_X86_SIMD
// Independent chains (more than the 2 pipes x 4 cycles of latency need), one
// instruction each per step, nothing else in the loop. Returns flops per step.
SCALIFY_BEGIN_TARGET_AVX2
double peak_step_fma8(long steps) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1e-3f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
  for (long t = 0; t < steps; ++t) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < 12; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
  benchmark::DoNotOptimize(acc[0]);
  return 12.0 * 8 * 2;
}
SCALIFY_END_TARGET
SCALIFY_BEGIN_TARGET_AVX512
double peak_step_fma16(long steps) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
  for (long t = 0; t < steps; ++t) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < 24; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  benchmark::DoNotOptimize(acc[0]);
  return 24.0 * 16 * 2;
}
SCALIFY_END_TARGET
SCALIFY_BEGIN_TARGET_AVX512BF16
double peak_step_dpbf16(long steps) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80), b = (__m512bh)_mm512_set1_epi32(0x33D633D6);
  for (long t = 0; t < steps; ++t) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  for (int i = 1; i < 24; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  benchmark::DoNotOptimize(acc[0]);
  return 24.0 * 16 * 4;  // a pair of multiply-adds per lane
}
SCALIFY_END_TARGET
#endif

/// The peak in flops per second, measured once per process.
double peak_flops(peak_kind kind) {
  static std::map<peak_kind, double> cache;
  if (auto it = cache.find(kind); it != cache.end()) return it->second;
  double flops = 0.0;
#if SCALIFY_HAVE_X86_SIMD
  constexpr long kSteps = 1 << 20;
  double (*step)(long) = kind == peak_kind::fma8    ? &peak_step_fma8
                         : kind == peak_kind::fma16 ? &peak_step_fma16
                                                    : &peak_step_dpbf16;
  double per_step = 0.0;
  const double s = best_seconds_per_call([&] { per_step = step(kSteps); }, 20, 1);
  flops = per_step * kSteps / s;
#endif
  cache[kind] = flops;
  return flops;
}

const char* peak_name(peak_kind kind) {
  return kind == peak_kind::fma8 ? "vfmadd231ps_ymm" : kind == peak_kind::fma16 ? "vfmadd231ps_zmm" : "vdpbf16ps_zmm";
}

void bm_peak(benchmark::State& state, peak_kind kind) {
  for (auto _ : state) benchmark::DoNotOptimize(peak_flops(kind));
  state.counters["GFLOPS"] = peak_flops(kind) * 1e-9;
}

/// The micro-kernel `mk` on one core: KC units of 4 A panels in turn (L1/L2)
/// and one B micro-panel (L1), accumulating into one tile.
void bm_microkernel(benchmark::State& state, const scalify::kernels::microkernel& mk, peak_kind kind) {
  const int mr = mk.block.mr, nr = mk.block.nr;
  const std::ptrdiff_t ku = mk.block.kc / mk.k_per_unit();
  // Small normal values; as bfloat16 pairs, 0x3A80 (~1e-3) above a zero.
  std::vector<uint32_t> a(static_cast<std::size_t>(4 * mr * ku), 0x3A800000u), b(static_cast<std::size_t>(nr * ku), 0x3A800000u);
  std::vector<float> c(static_cast<std::size_t>(mr * nr), 0.0f);
  long i = 0;
  auto call = [&] { mk.tile(ku, a.data() + (i++ & 3) * mr * ku, b.data(), c.data(), true); };
  constexpr long kCalls = 1000;
  call();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (long r = 0; r < kCalls; ++r) call();
    benchmark::DoNotOptimize(c.data());
  }
  const double flops = 2.0 * mr * nr * static_cast<double>(ku) * mk.k_per_unit() * kCalls;
  const double rate = flops * static_cast<double>(state.iterations()) / seconds_since(t0);
  state.counters["GFLOPS"] = rate * 1e-9;
  state.counters["x_peak"] = rate / peak_flops(kind);
  state.SetLabel(peak_name(kind));
}

void register_microkernels() {
  using scalify::cpu_path;
  std::vector<std::string> seen;
  std::vector<peak_kind> peaks;
  for (cpu_path p : scalify::all_cpu_paths) {
    if (p == cpu_path::scalar || !scalify::cpu_supports(p)) continue;
    const auto& t = scalify::kernels::kernels_for(p);
    for (const scalify::kernels::microkernel* mk : {t.tile_f32, t.tile_bf16}) {
      if (std::find(seen.begin(), seen.end(), mk->name) != seen.end()) continue;
      seen.emplace_back(mk->name);
      const peak_kind kind = mk->pack == scalify::kernels::packing::bf16x2 ? peak_kind::dpbf16
                             : p == cpu_path::avx2                           ? peak_kind::fma8
                                                                              : peak_kind::fma16;
      if (std::find(peaks.begin(), peaks.end(), kind) == peaks.end()) {
        peaks.push_back(kind);
        benchmark::RegisterBenchmark((std::string("BM_Peak/") + peak_name(kind)).c_str(),
                                     [kind](benchmark::State& s) { bm_peak(s, kind); })
            ->Iterations(1);
      }
      benchmark::RegisterBenchmark((std::string("BM_Microkernel/") + mk->name).c_str(),
                                   [mk, kind](benchmark::State& s) { bm_microkernel(s, *mk, kind); })
          ->UseRealTime();
    }
  }
}

bool want_large(int& argc, char** argv) {
  bool large = false;
  if (const char* e = std::getenv("SCALIFY_BENCH_LARGE"); e != nullptr && *e != '\0' && *e != '0') large = true;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--large") {
      large = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return large;
}

void register_all(bool large) {
  std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {
      {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {2048, 2048, 2048}, {1, 4096, 4096}};
  if (large) {
    shapes.insert(shapes.end() - 1, {{4096, 4096, 4096}, {128, 4096, 4096}, {512, 4096, 4096}});
  }
  using fn = void (*)(benchmark::State&, int64_t, int64_t, int64_t, int);
  std::vector<std::pair<const char*, fn>> impls = {{"eigen_f32", &bm_eigen},
#ifdef SCALIFY_HAVE_OPENBLAS
                                                   {"openblas_f32", &bm_openblas},
#endif
                                                   {"scalify_e4m3", &bm_scalify<scalify::float8_e4m3fn>},
                                                   {"scalify_e5m2", &bm_scalify<scalify::float8_e5m2>},
                                                   {"scalify_bf16", &bm_scalify<scalify::bfloat16>},
                                                   {"scalify_f16", &bm_scalify<scalify::float16>},
                                                   {"scalify_f32", &bm_scalify<float>},
                                                   // Prepacked B: the shapes with M > 1 (M = 1 streams B unpacked).
                                                   {"scalify_e4m3_packed", &bm_scalify<scalify::float8_e4m3fn, true>},
                                                   {"scalify_f32_packed", &bm_scalify<float, true>}};
  for (const auto& [m, n, k] : shapes) {
    for (int threads : {1, 2}) {
      for (const auto& [name, f] : impls) {
        if (m == 1 && std::strstr(name, "_packed") != nullptr) continue;
        const std::string label = std::string("BM_Gemm/") + name + "/" + std::to_string(m) + "/" + std::to_string(n) +
                                  "/" + std::to_string(k) + "/t:" + std::to_string(threads);
        benchmark::RegisterBenchmark(label.c_str(),
                                     [f = f, m = m, n = n, k = k, threads](benchmark::State& s) { f(s, m, n, k, threads); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // The baselines' idle threads wait as scalify's pool does (kernels/
  // thread_pool.hpp: spin ~200 us, then sleep): libgomp 7000 spins of ~30 ns,
  // OpenBLAS 2^19 cycles. Their defaults (libgomp ~9 ms, OpenBLAS 2^28 cycles,
  // ~90 ms) keep a core busy well into the next benchmark; a passive wait
  // would make Eigen pay a kernel wake-up (30-60 us here) that scalify does
  // not. Both libraries read these at load time: set them, then restart.
  // Values already in the environment are kept.
  if (std::getenv("SCALIFY_BENCH_WAIT_SET") == nullptr) {
    setenv("GOMP_SPINCOUNT", "7000", 0);
    setenv("OPENBLAS_THREAD_TIMEOUT", "19", 0);
    setenv("SCALIFY_BENCH_WAIT_SET", "1", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then go on
  }
  const bool large = want_large(argc, argv);
  register_microkernels();
  benchmark::RegisterBenchmark("BM_GemvInCache/scalify_e4m3", bm_gemv_in_cache<scalify::float8_e4m3fn>)->UseRealTime();
  benchmark::RegisterBenchmark("BM_GemvInCache/scalify_e5m2", bm_gemv_in_cache<scalify::float8_e5m2>)->UseRealTime();
  benchmark::RegisterBenchmark("BM_GemvInCache/scalify_f16", bm_gemv_in_cache<scalify::float16>)->UseRealTime();
  benchmark::RegisterBenchmark("BM_GemvInCache/scalify_bf16", bm_gemv_in_cache<scalify::bfloat16>)->UseRealTime();
  benchmark::RegisterBenchmark("BM_GemvInCache/scalify_f32", bm_gemv_in_cache<float>)->UseRealTime();
#if SCALIFY_HAVE_X86_SIMD
  if (scalify::cpu_supports(scalify::cpu_path::avx2)) {
    for (const int t : {1, 2}) {
      benchmark::RegisterBenchmark(("BM_GemvReadBound/t:" + std::to_string(t)).c_str(), bm_gemv_read_bound, t)
          ->UseRealTime();
    }
  }
#endif
  for (const int t : {1, 2}) {
    const std::string suffix = "/1/4096/4096/t:" + std::to_string(t);
    using dot_fn = void (*)(benchmark::State&, int);
    const std::pair<const char*, dot_fn> dots[] = {
#ifdef SCALIFY_HAVE_OPENBLAS
        {"openblas_f32", &bm_gemv_dot<float, true>},
#endif
        {"scalify_e4m3", &bm_gemv_dot<scalify::float8_e4m3fn>}, {"scalify_e5m2", &bm_gemv_dot<scalify::float8_e5m2>},
        {"scalify_bf16", &bm_gemv_dot<scalify::bfloat16>},      {"scalify_f16", &bm_gemv_dot<scalify::float16>},
        {"scalify_f32", &bm_gemv_dot<float>}};
    for (const auto& [name, f] : dots) {
      benchmark::RegisterBenchmark((std::string("BM_GemvDot/") + name + suffix).c_str(), f, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  register_all(large);
  return scalify_bench::run(argc, argv);
}
