// scalify benchmarks: what every benchmark's output records beside the
// machine's own context (Google Benchmark's "context" in --benchmark_format=json):
// the scalify version, the CPU path the kernels run on, and the thread limit;
// and the end of every benchmark's main() (scalify_bench::run).
#ifndef SCALIFY_BENCHMARKS_CONTEXT_HPP_
#define SCALIFY_BENCHMARKS_CONTEXT_HPP_

#include <benchmark/benchmark.h>

#include <string>  // std::string, std::to_string

#include "scalify/cpu.hpp"                  // active_cpu_path, to_string
#include "scalify/kernels/thread_pool.hpp"  // thread_limit
#include "scalify/version.hpp"              // SCALIFY_VERSION

namespace scalify_bench {

/// Adds scalify_version, scalify_cpu_path and scalify_threads to the output's context.
inline void add_scalify_context() {
  benchmark::AddCustomContext("scalify_version", SCALIFY_VERSION);
  benchmark::AddCustomContext("scalify_cpu_path", std::string(scalify::to_string(scalify::active_cpu_path())));
  benchmark::AddCustomContext("scalify_threads", std::to_string(scalify::thread_limit()));
}

/// The rest of every benchmark's main(), once the benchmarks are registered:
/// parse the flags (1 on an unknown one), add the context above, run.
inline int run(int& argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  add_scalify_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace scalify_bench

#endif  // SCALIFY_BENCHMARKS_CONTEXT_HPP_
