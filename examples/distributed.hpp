// The examples' data parallelism: the same program runs alone or under
// `mpirun -np P` (when built with MPI: SCALIFY_EXAMPLES_MPI, scalify/dist/).
//
//   examples::ranks r(&argc, &argv);   MPI only when started by mpirun (else one process, no MPI)
//   r.rank(), r.size(), r.root()       rank 0 prints, writes --json and --save
//   r.sum(x)                           a double summed over the ranks
//   r.reduce_gradients(params, share, wire)
//                                      the global batch's mean gradient: each rank's mean
//                                      gradient weighted by its share of the batch, all-reduced
//                                      (scalify::dist::allreduce_gradients, sum)
#pragma once

#ifndef SCALIFY_EXAMPLES_MPI
#define SCALIFY_EXAMPLES_MPI 0
#endif

#include <cstdio>   // std::freopen
#include <cstdlib>  // std::getenv
#include <memory>   // std::unique_ptr
#include <string>   // std::string
#include <vector>   // std::vector

#include "scalify/nn/mlp.hpp"  // param_ref

#if SCALIFY_EXAMPLES_MPI
#include "scalify/dist/allreduce.hpp"  // allreduce_gradients, mpi_session, wire_format
#endif

namespace examples {

/// The wire formats --wire takes (the all-reduce's, scalify/dist/).
inline const std::vector<std::string>& wire_choices() {
  static const std::vector<std::string> c = {"fp32", "fp16", "e5m2"};
  return c;
}

/// The processes of a run.
class ranks {
 public:
  ranks(int* argc, char*** argv) {
#if SCALIFY_EXAMPLES_MPI
    // Started by a launcher (Open MPI, PMIx, MPICH/Hydra): join it. Alone: no MPI at all.
    if (std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_SIZE")) {
      session_ = std::make_unique<scalify::dist::mpi_session>(argc, argv);
      rank_ = session_->rank();
      size_ = session_->size();
      if (rank_ != 0) (void)std::freopen("/dev/null", "w", stdout);  // rank 0 prints
    }
#else
    (void)argc;
    (void)argv;
#endif
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  /// True when this build can run under mpirun.
  static constexpr bool mpi_built() { return SCALIFY_EXAMPLES_MPI != 0; }

  /// x summed over the ranks (x alone in one process).
  double sum(double x) const {
#if SCALIFY_EXAMPLES_MPI
    if (size_ > 1) {
      double total = 0.0;
      MPI_Allreduce(&x, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      return total;
    }
#endif
    return x;
  }

  /// Turns each rank's mean gradients (over its shard, `share` of the global
  /// batch) into the global batch's mean gradient on every rank, with `wire`
  /// on the wire. Nothing to do in one process (share is 1).
  void reduce_gradients(const std::vector<scalify::nn::param_ref>& params, double share,
                        const std::string& wire) const {
#if SCALIFY_EXAMPLES_MPI
    if (size_ <= 1) return;
    for (const auto& p : params) {
      p.grad->set_scale(scalify::detail::unchecked_scale, static_cast<float>(p.grad->scale() * share));
    }
    scalify::dist::allreduce_gradients(params, MPI_COMM_WORLD,
                                       {.wire = scalify::dist::parse_wire(wire), .mean = false});
#else
    (void)params;
    (void)share;
    (void)wire;
#endif
  }

 private:
  int rank_ = 0, size_ = 1;
#if SCALIFY_EXAMPLES_MPI
  std::unique_ptr<scalify::dist::mpi_session> session_;
#endif
};

}  // namespace examples
