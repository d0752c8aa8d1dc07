// bench_allreduce: scalify::dist::allreduce of gradients across MPI processes,
// per wire format. Run it under mpirun; rank 0 prints, the others run the same
// iterations silently (the collectives must match):
//
//   mpirun -np 2 build/benchmarks/bench_allreduce
//   (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun ...)
//
// BM_Allreduce/<wire>/<elements>: the mean of `elements` float32 gradient values
// split into 8 tensors (one call, the default 8 MiB buckets), fp32, fp16 and
// e5m2 on the wire. Counters: `wire_MB` (bytes this rank sent per call),
// `grad_GB/s` (float32 gradient bytes reduced per second), `best_ms` and, for
// fp16 and e5m2, `vs_fp32` (best time over fp32's, same process and run). A
// fixed iteration count on every rank; wall time; a barrier (not timed) before
// each call.
#include <benchmark/benchmark.h>
#include <mpi.h>

#include <algorithm>  // std::min
#include <chrono>     // std::chrono::steady_clock
#include <cmath>      // std::ldexp
#include <map>        // std::map
#include <random>     // std::mt19937
#include <string>     // std::string
#include <vector>     // std::vector

#include "context.hpp"                 // scalify_bench::add_scalify_context
#include "scalify/dist/allreduce.hpp"  // allreduce

namespace dist = scalify::dist;
namespace nn = scalify::nn;

namespace {

std::map<std::string, double>& best_call() {
  static std::map<std::string, double> m;
  return m;
}

void BM_Allreduce(benchmark::State& state, dist::wire_format wire) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const auto elements = static_cast<Eigen::Index>(state.range(0));
  const Eigen::Index per_tensor = elements / 8;
  std::mt19937 gen(static_cast<uint32_t>(17 + rank));
  std::normal_distribution<float> normal;
  std::vector<nn::Tensor> original;
  for (int i = 0; i < 8; ++i) {
    nn::Matrix d(1, per_tensor);
    for (Eigen::Index k = 0; k < d.size(); ++k) d.data()[k] = normal(gen);
    original.emplace_back(std::move(d), std::ldexp(1.0f, -10 + i + 3 * rank));  // scales differ across tensors and ranks
  }
  std::vector<nn::Tensor> work = original;
  std::vector<nn::Tensor*> ptrs;
  for (auto& t : work) ptrs.push_back(&t);
  double best = 1e30;
  size_t wire_bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t i = 0; i < work.size(); ++i) work[i] = original[i];  // the same input every call
    MPI_Barrier(MPI_COMM_WORLD);
    state.ResumeTiming();
    const auto start = std::chrono::steady_clock::now();
    const dist::allreduce_result r = dist::allreduce(ptrs, MPI_COMM_WORLD, {.wire = wire});
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    wire_bytes = r.wire_bytes;
  }
  const std::string name = dist::wire_name(wire), size = "/" + std::to_string(elements);
  state.counters["wire_MB"] = static_cast<double>(wire_bytes) * 1e-6;
  state.counters["grad_GB/s"] = benchmark::Counter(static_cast<double>(8 * per_tensor) * 4e-9,
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_ms"] = best * 1e3;
  best_call()[name + size] = best;
  if (name != "fp32" && best_call().count("fp32" + size) != 0) {
    state.counters["vs_fp32"] = best / best_call()["fp32" + size];
  }
}

// fp32 first: the others divide by its time. 16 Mi elements is the size; 1 Mi a quick one.
BENCHMARK_CAPTURE(BM_Allreduce, fp32, dist::wire_format::float32)->Arg(1 << 24)->Arg(1 << 20)->Iterations(8)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Allreduce, fp16, dist::wire_format::float16)->Arg(1 << 24)->Arg(1 << 20)->Iterations(8)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Allreduce, e5m2, dist::wire_format::e5m2)->Arg(1 << 24)->Arg(1 << 20)->Iterations(8)->UseRealTime()->Unit(benchmark::kMillisecond);

/// Prints nothing: the reporter of the ranks other than 0.
class silent_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  const dist::mpi_session mpi(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  scalify_bench::add_scalify_context();
  benchmark::AddCustomContext("mpi_processes", std::to_string(mpi.size()));
  if (mpi.rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    silent_reporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  return 0;
}
