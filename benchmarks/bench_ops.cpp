// scalify benchmark: a fused scaled expression, z = x * y + w, over 16Mi
// elements (and 256Ki: an activation of a training step, where splitting
// across threads must still pay), against the same expression in plain Eigen
// float32.
//
//   BM_FusedXYplusW/eigen_f32/rows:R/cols:C                      Eigen::ArrayXXf: z = x * y + w
//   BM_FusedXYplusW/scalify_<in>/rows:R/cols:C/threads:T         x, y, w, z: ScaledMatrix<in>  (fp8 in, fp8 out)
//   BM_FusedXYplusW/scalify_<in>_to_f16/rows:R/cols:C/threads:T  z: ScaledMatrix<float16>
//   BM_FusedXYplusW/scalify_<in>_to_f32/rows:R/cols:C/threads:T  z: ScaledMatrix<float>
//
// T is scalify_config::threads, the threads that evaluate a stored result
// (1: the calling thread only, as Eigen, which never splits coefficient-wise
// expressions; 0: every hardware thread, scalify's default).
//
// The scaled ones evaluate `z = x * y + w` (scalify/ops/elementwise.hpp): the
// scales at once, the data in one fused pass in float32, rounded once into z.
// Shape (4096, n / 4096), row-major; scales 0.5, 2 and 1 (x, y, w).
//
// Counters: `GB/s` counts the bytes read (x, y, w) plus written (z) per
// element (float32: 16; fp8 -> fp8: 4); `Gelem/s` counts elements; the scaled
// rows also report `vs_eigen_f32`, the speed-up over the float32 expression:
// its fastest run divided by theirs, both measured in the same process in wall
// time (the scaled runs may use several threads). The machine may be shared:
// compare ratios, and rerun when other work was running.
//
// The float8 <-> float casts vectorize inside Eigen only when Eigen does (this
// benchmark is built with -mavx2 -mfma -mf16c, see benchmarks/CMakeLists.txt
// and formats/eigen_packet.hpp); `packet_casts` says whether they were built.
//
// BM_FusedXYplusW/primitives_e4m3fn (AVX2 builds; 256 x 1024, in cache) is
// the fp8 -> fp8 pass without Eigen's evaluator, on one thread: each chunk of
// 8192 elements screened for NaN codes (simd::avx2::any_e4m3fn_nan), widened
// with the decode the screened packets use when their 2^8 is folded into the
// constant factors (widen8_e4m3fn_no_nan_over_256),
// z = x * y + w computed in float32 into a buffer, then rounded with
// scalify::convert, as the library's evaluation does: the bound of those
// instructions. Its distance from scalify_e4m3fn/threads:1 is what Eigen's
// evaluator (per-packet window checks, pointer bookkeeping) and the
// assignment (scales, the thread split) add.
//
//   build/benchmarks/bench_ops --benchmark_filter=FusedXYplusW
#include <benchmark/benchmark.h>

#include <algorithm>    // std::min
#include <cstdint>      // std::int64_t
#include <chrono>       // std::chrono::steady_clock
#include <map>          // std::map (cached baselines)
#include <random>       // std::mt19937, std::normal_distribution
#include <span>         // std::span (scalify::convert)
#include <type_traits>  // std::is_same_v
#include <vector>       // std::vector (a chunk's float buffer)

#include "scalify/ops/elementwise.hpp"  // operator*, operator+ on ScaledArray
#include "scalify/scalify.hpp"
#include "scalify/simd/float8_avx2.hpp"  // any_e4m3fn_nan, widen8_e4m3fn_no_nan_over_256

#include "context.hpp"  // scalify_bench::run

namespace {

/// Shapes (rows, cols): 4096 x 4096 (16Mi elements) and 256 x 1024 (256Ki: a
/// batch of 256 activations of a 1024-wide layer).
constexpr std::int64_t kShapes[][2] = {{256, 1024}, {4096, 4096}};

using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// (rows, cols) values drawn from N(0, 1), in the storage order of A.
template <class A = Eigen::ArrayXXf>
A random_values(std::int64_t rows, std::int64_t cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  A v(rows, cols);
  for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = dist(gen);
  return v;
}

void set_counters(benchmark::State& state, std::int64_t n, double bytes_per_elem) {
  const double elems = static_cast<double>(state.iterations()) * static_cast<double>(n);
  state.counters["GB/s"] =
      benchmark::Counter(elems * bytes_per_elem / 1e9, benchmark::Counter::kIsRate);
  state.counters["Gelem/s"] = benchmark::Counter(elems / 1e9, benchmark::Counter::kIsRate);
  state.counters["packet_casts"] = SCALIFY_EIGEN_PACKET_FLOAT8;
}

// Wall seconds of one float32 z = x * y + w at this shape: the best of
// a few runs, measured once per shape.
double eigen_f32_seconds(std::int64_t rows, std::int64_t cols) {
  static std::map<std::int64_t, double> cache;
  const auto found = cache.find(rows * cols);
  if (found != cache.end()) return found->second;
  const Eigen::ArrayXXf x = random_values(rows, cols, 1), y = random_values(rows, cols, 2),
                        w = random_values(rows, cols, 3);
  Eigen::ArrayXXf z(rows, cols);
  double best = 1e30;
  for (int run = 0; run < 10; ++run) {
    const double t0 = wall_seconds();
    z = x * y + w;
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
    best = std::min(best, wall_seconds() - t0);
  }
  return cache[rows * cols] = best;
}

void bm_eigen_f32(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  const Eigen::ArrayXXf x = random_values(rows, cols, 1), y = random_values(rows, cols, 2),
                        w = random_values(rows, cols, 3);
  Eigen::ArrayXXf z(rows, cols);
  for (auto _ : state) {
    z = x * y + w;
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, rows * cols, 4.0 * sizeof(float));
}

// x, y, w stored as In, z as Out; z = x * y + w.
template <class In, class Out>
void bm_scalify(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  using Data = typename scalify::ScaledMatrix<In>::data_type;  // row-major
  using RowArrayXXf = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto stored = [&](unsigned seed, float scale) {  // data ~ N(0, 1): values ~ N(0, scale^2)
    return scalify::ScaledMatrix<In>(
        Data(random_values<RowArrayXXf>(rows, cols, seed).matrix().template cast<In>()), scale);
  };
  const scalify::ScaledMatrix<In> x = stored(1, 0.5f), y = stored(2, 2.0f), w = stored(3, 1.0f);
  scalify::scalify_config config = scalify::current_config();
  config.threads = static_cast<int>(state.range(2));
  const scalify::config_scope scope(config);
  scalify::ScaledMatrix<Out> z = x * y + w;
  const double baseline = eigen_f32_seconds(rows, cols);
  double best = 1e30;
  for (auto _ : state) {
    const double t0 = wall_seconds();
    z = x * y + w;
    benchmark::DoNotOptimize(z.data().data());
    benchmark::ClobberMemory();
    best = std::min(best, wall_seconds() - t0);
  }
  set_counters(state, rows * cols, 3.0 * sizeof(In) + sizeof(Out));
  state.counters["vs_eigen_f32"] = baseline / best;  // best run against best run
}

#if SCALIFY_EIGEN_PACKET_FLOAT8
// z = x * y + w from float8_e4m3fn codes, by hand with scalify's primitives
// (see the header comment): the bound of the library's two passes.
void bm_primitives_e4m3fn(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1), n = rows * cols;
  using RowArrayXXf = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto codes = [&](unsigned seed) {
    return scalify::ScaledMatrix<float8_e4m3fn>::data_type(
        random_values<RowArrayXXf>(rows, cols, seed).matrix().template cast<float8_e4m3fn>());
  };
  const auto x = codes(1), y = codes(2), w = codes(3);
  scalify::ScaledMatrix<float8_e4m3fn>::data_type z(rows, cols);
  const auto* px = reinterpret_cast<const std::uint8_t*>(x.data());
  const auto* py = reinterpret_cast<const std::uint8_t*>(y.data());
  const auto* pw = reinterpret_cast<const std::uint8_t*>(w.data());
  constexpr std::int64_t kChunk = 8192;  // as core/scaled_array.hpp's evaluation
  std::vector<float> buffer(kChunk);
  // The data factors the scaled expression multiplies by: 1 and 1 for x, y, w
  // of scales 0.5, 2 and 1 (x * y has scale 1, and add's rule keeps 1), times
  // the decodes' 2^8 each, folded into them as the library's evaluation does
  // (formats/detail/eigen_fold.hpp).
  const __m256 kxy = _mm256_set1_ps(1.0f * 65536.0f), kw = _mm256_set1_ps(1.0f * 256.0f);
  const scalify::convert_options store = {.saturate = true};
  const auto widen = [](const std::uint8_t* p) {
    return scalify::simd::avx2::widen8_e4m3fn_no_nan_over_256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  };
  const double baseline = eigen_f32_seconds(rows, cols);
  double best = 1e30;
  for (auto _ : state) {
    const double t0 = wall_seconds();
    for (std::int64_t b = 0; b < n; b += kChunk) {
      const std::int64_t count = std::min(kChunk, n - b);
      if (count % 8 != 0 || scalify::simd::avx2::any_e4m3fn_nan(px + b, count) ||
          scalify::simd::avx2::any_e4m3fn_nan(py + b, count) || scalify::simd::avx2::any_e4m3fn_nan(pw + b, count)) {
        state.SkipWithError("the data hold a NaN code, or a chunk is not a multiple of 8");
        return;
      }
      for (std::int64_t i = 0; i < count; i += 8) {
        const std::int64_t k = b + i;
        const __m256 v = _mm256_fmadd_ps(_mm256_mul_ps(widen(px + k), widen(py + k)), kxy,
                                         _mm256_mul_ps(widen(pw + k), kw));
        _mm256_storeu_ps(buffer.data() + i, v);
      }
      scalify::convert(std::span<const float>(buffer.data(), static_cast<std::size_t>(count)),
                       std::span<float8_e4m3fn>(z.data() + b, static_cast<std::size_t>(count)), store);
    }
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
    best = std::min(best, wall_seconds() - t0);
  }
  set_counters(state, n, 4.0);
  state.counters["vs_eigen_f32"] = baseline / best;
}
#endif

void register_all() {
  for (const auto& shape : kShapes) {
    benchmark::RegisterBenchmark("BM_FusedXYplusW/eigen_f32", bm_eigen_f32)
        ->Args({shape[0], shape[1]})
        ->ArgNames({"rows", "cols"})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  const auto add = [](const char* name, void (*fn)(benchmark::State&)) {
    for (const auto& shape : kShapes) {
      benchmark::RegisterBenchmark(name, fn)
          ->ArgsProduct({{shape[0]}, {shape[1]}, {1, 0}})
          ->ArgNames({"rows", "cols", "threads"})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  };
  add("BM_FusedXYplusW/scalify_e4m3fn", bm_scalify<float8_e4m3fn, float8_e4m3fn>);
  add("BM_FusedXYplusW/scalify_e4m3fn_to_f16", bm_scalify<float8_e4m3fn, float16>);
  add("BM_FusedXYplusW/scalify_e4m3fn_to_f32", bm_scalify<float8_e4m3fn, float>);
  add("BM_FusedXYplusW/scalify_e5m2", bm_scalify<float8_e5m2, float8_e5m2>);
  add("BM_FusedXYplusW/scalify_e5m2_to_f32", bm_scalify<float8_e5m2, float>);
#if SCALIFY_EIGEN_PACKET_FLOAT8
  // In cache only: the instructions' bound. (From memory it is slower than
  // the library: each chunk is screened in a pass of its own, ahead of the
  // loop that widens it.)
  benchmark::RegisterBenchmark("BM_FusedXYplusW/primitives_e4m3fn", bm_primitives_e4m3fn)
      ->Args({kShapes[0][0], kShapes[0][1]})
      ->ArgNames({"rows", "cols"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return scalify_bench::run(argc, argv);
}
