// scalify benchmark: bulk casts, GB/s per CPU path, beside memcpy.
//
//   BM_Cast/<from>_to_<to>/<options>/<path>/<elements>
//   BM_Memcpy/<bytes of the cast's source>
//
// Counters: `GB/s` counts the bytes the cast reads plus the bytes it writes
// (memcpy: the bytes it reads plus writes, for a buffer the size of the cast's
// source), so the two are comparable traffic; `Gelem/s` counts elements.
// Sizes: 64Ki elements (caches) and 16Mi elements (memory).
//
//   build/benchmarks/bench_cast --benchmark_filter='e4m3fn|Memcpy'
#include <benchmark/benchmark.h>

#include <cstring>  // std::memcpy
#include <random>   // std::mt19937, std::normal_distribution
#include <string>   // std::string
#include <vector>   // std::vector

#include "scalify/scalify.hpp"

#include "context.hpp"  // scalify_bench::run

namespace {

constexpr std::int64_t kSizes[] = {1 << 16, 1 << 24};

std::vector<float> make_input(std::size_t n) {
  std::mt19937 gen(42);
  std::normal_distribution<float> dist(0.0f, 8.0f);  // a few values beyond e4m3fn's range
  std::vector<float> x(n);
  for (float& v : x) v = dist(gen);
  return x;
}

void set_counters(benchmark::State& state, std::size_t n, std::size_t bytes_per_elem) {
  const double elems = static_cast<double>(state.iterations()) * static_cast<double>(n);
  state.counters["GB/s"] = benchmark::Counter(elems * static_cast<double>(bytes_per_elem) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["Gelem/s"] = benchmark::Counter(elems / 1e9, benchmark::Counter::kIsRate);
}

enum class mode { plain, saturate, stochastic, stats };

template <class To>
void bm_narrow(benchmark::State& state, scalify::cpu_path path, mode m) {
  scalify::scoped_cpu_path guard(path);
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> x = make_input(n);
  std::vector<To> y(n);
  scalify::convert_options options;
  options.saturate = m == mode::saturate;
  if (m == mode::stochastic) options.round = scalify::rounding::stochastic;
  for (auto _ : state) {
    if (m == mode::stats) {
      benchmark::DoNotOptimize(scalify::convert_with_stats(x, y, options));
    } else {
      scalify::convert(x, y, options);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, sizeof(float) + sizeof(To));
}

template <class From>
void bm_widen(benchmark::State& state, scalify::cpu_path path) {
  scalify::scoped_cpu_path guard(path);
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<From> x(n);
  scalify::convert(make_input(n), x);
  std::vector<float> y(n);
  for (auto _ : state) {
    scalify::convert(x, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, sizeof(From) + sizeof(float));
}

void bm_memcpy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> x = make_input(n);
  std::vector<float> y(n);
  for (auto _ : state) {
    std::memcpy(y.data(), x.data(), n * sizeof(float));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 2 * sizeof(float));
}

template <class T>
void register_type(const std::string& name, scalify::cpu_path path) {
  const std::string p = std::string(scalify::to_string(path));
  const std::pair<const char*, mode> modes[] = {
      {"nearest", mode::plain}, {"saturate", mode::saturate}, {"stochastic", mode::stochastic}, {"stats", mode::stats}};
  for (const auto& [label, m] : modes) {
    auto* b = benchmark::RegisterBenchmark(("BM_Cast/f32_to_" + name + "/" + label + "/" + p).c_str(),
                                           [path, m = m](benchmark::State& s) { bm_narrow<T>(s, path, m); });
    for (auto n : kSizes) b->Arg(n);
  }
  auto* b = benchmark::RegisterBenchmark(("BM_Cast/" + name + "_to_f32/exact/" + p).c_str(),
                                         [path](benchmark::State& s) { bm_widen<T>(s, path); });
  for (auto n : kSizes) b->Arg(n);
}

}  // namespace

int main(int argc, char** argv) {
  auto* memcpy_bench = benchmark::RegisterBenchmark("BM_Memcpy", bm_memcpy);
  for (auto n : kSizes) memcpy_bench->Arg(n);
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (path == scalify::cpu_path::avx512bf16) continue;  // the casts use the avx512 kernels
    if (!scalify::cpu_supports(path)) {
      std::fprintf(stderr, "bench_cast: skipping path %s: not supported by this CPU\n",
                   std::string(scalify::to_string(path)).c_str());
      continue;
    }
    register_type<scalify::float8_e4m3fn>("e4m3fn", path);
    register_type<scalify::float8_e5m2>("e5m2", path);
    register_type<scalify::float16>("f16", path);
    register_type<scalify::bfloat16>("bf16", path);
  }
  return scalify_bench::run(argc, argv);
}
