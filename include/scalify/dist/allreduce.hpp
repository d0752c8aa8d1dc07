// scalify dist: all-reduce of scaled tensors over MPI, for data-parallel
// training (optional: needs MPI, link scalify::mpi).
//
//   allreduce(tensors, comm, options)         sum or mean of scaled tensors across the ranks
//   allreduce_gradients(params, comm, options) the same on the gradients of nn parameters
//   broadcast_parameters(params, comm, root)  root's weights on every rank
//   mpi_session                               MPI_Init / MPI_Finalize for a program
//
// Scale agreement. Ranks hold the same tensors with different scales and
// values. One small collective (MPI_Allreduce, MAX, of one double per tensor
// plus a flag and a layout fingerprint) gives every rank the global amax A of
// each tensor's values (|data| x scale) and tells whether any rank holds a
// non-finite value. Each tensor then gets the common wire scale
//     s = pow2_round_up(A) / H,   H = 2^(15 - ceil(log2 P))  (float16, e5m2 wire)
//                                 H = 1                      (float32 wire)
// Every rank rebases its data onto s (data x scale / s: exact when the scales
// are powers of two) and rounds it into the wire format: every wire value is
// at most H, so the P-way sum is at most 2^15, inside float16's 65504 and
// e5m2's 57344 with no overflow possible. A tensor whose values are all zero
// gets s = 1.
//
// Reduction. The rebased tensors are packed into flat buckets of at most
// bucket_bytes of wire data. Per bucket, a reduce-scatter (MPI_Alltoallv: rank
// i receives everyone's segment i) and an allgather (MPI_Allgatherv of the
// summed segments): each segment is summed in float32 by its owner, in rank
// order, then rounded once more into the wire format, so every rank ends with
// bit-identical results, whatever the MPI implementation's reduction order.
// Each rank sends 2 (P - 1) / P x the bucket's wire bytes, as a ring
// all-reduce does: float16 halves and e5m2 quarters float32's traffic.
//
// Result: data = the reduced wire values widened to float32, scale = s (sum)
// or s / P (mean). Non-finite values on any rank: every rank sees it in the
// first collective, no data is exchanged, every tensor's scale becomes NaN on
// every rank (so the nn optimizers skip the step everywhere, consistently)
// and the result says finite = false. Different tensor counts or shapes
// across ranks: std::invalid_argument on every rank, nothing changed.
#ifndef SCALIFY_DIST_ALLREDUCE_HPP_
#define SCALIFY_DIST_ALLREDUCE_HPP_

#include <mpi.h>

#include <algorithm>    // std::max, std::min, std::clamp, std::copy_n
#include <cmath>        // std::isfinite, std::ldexp, std::ilogb, std::ceil, std::log2
#include <cstdint>      // uint64_t
#include <cstring>      // std::memcpy
#include <limits>       // std::numeric_limits
#include <span>         // std::span
#include <stdexcept>    // std::invalid_argument, std::runtime_error
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <utility>      // std::pair
#include <vector>       // std::vector

#include "scalify/core/pow2.hpp"        // pow2_round_up
#include "scalify/errors.hpp"           // SCALIFY_CHECK, format_error
#include "scalify/formats/convert.hpp"  // convert, convert_options
#include "scalify/formats/float16.hpp"  // float16
#include "scalify/formats/float8.hpp"   // float8_e5m2
#include "scalify/nn/mlp.hpp"           // param_ref
#include "scalify/nn/tensor.hpp"        // Tensor

namespace scalify::dist {

/// The number format of the values on the wire.
enum class wire_format {
  float32,  ///< 4 bytes per value
  float16,  ///< 2 bytes: half the traffic
  e5m2,     ///< 1 byte: compressed gradients (2 mantissa bits)
};

/// "fp32", "fp16", "e5m2".
inline const char* wire_name(wire_format w) {
  switch (w) {
    case wire_format::float32: return "fp32";
    case wire_format::float16: return "fp16";
    case wire_format::e5m2: return "e5m2";
  }
  throw std::invalid_argument("scalify::dist: unknown wire_format " + std::to_string(static_cast<int>(w)));
}
/// Parses wire_name() (also "float32", "float16"); format_error otherwise.
inline wire_format parse_wire(std::string_view s) {
  if (s == "fp32" || s == "float32") return wire_format::float32;
  if (s == "fp16" || s == "float16") return wire_format::float16;
  if (s == "e5m2") return wire_format::e5m2;
  throw format_error("scalify::dist::parse_wire: unknown wire format '" + std::string(s) +
                     "' (expected fp32, fp16 or e5m2)");
}
/// Bytes per value on the wire.
inline size_t wire_size(wire_format w) {
  switch (w) {
    case wire_format::float32: return 4;
    case wire_format::float16: return 2;
    case wire_format::e5m2: return 1;
  }
  throw std::invalid_argument("scalify::dist: unknown wire_format " + std::to_string(static_cast<int>(w)));
}

/// The options of allreduce().
///
/// | field | meaning |
/// |---|---|
/// | `wire` | the format of the values sent |
/// | `mean` | divide by the number of ranks (in the scale); else the sum |
/// | `bucket_bytes` | wire bytes per bucket (one reduce-scatter + allgather each) |
/// | `round`, `seed` | rounding into float16/e5m2 (stochastic: unbiased compressed gradients; vary the seed per call, e.g. the step) |
struct allreduce_options {
  wire_format wire = wire_format::float32;
  bool mean = true;
  size_t bucket_bytes = size_t{8} << 20;
  rounding round = rounding::nearest_even;
  uint64_t seed = 0;
};

/// What an allreduce() did.
struct allreduce_result {
  bool finite = true;     ///< false: a rank had a non-finite value; every scale is NaN, no data was sent
  size_t buckets = 0;     ///< reduce-scatter + allgather rounds
  size_t wire_bytes = 0;  ///< bytes this rank sent to the others (2 (P-1)/P x the wire data)
};

namespace detail {

inline int comm_size(MPI_Comm comm) {
  int p = 0;
  MPI_Comm_size(comm, &p);
  return p;
}
inline int comm_rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

/// A fingerprint of the tensors' count and shapes (FNV-1a, 52 bits: exact in a double).
inline double layout_fingerprint(std::span<nn::Tensor* const> tensors) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix(tensors.size());
  for (const nn::Tensor* t : tensors) {
    mix(static_cast<uint64_t>(t->rows()));
    mix(static_cast<uint64_t>(t->cols()));
  }
  return static_cast<double>(h & ((uint64_t{1} << 52) - 1));
}

/// max |data| x scale of `t` in double, or -1 if a value or the scale is not finite
/// (one vectorized pass: the max propagates NaN, and inf is its own max).
inline double value_amax(const nn::Tensor& t) {
  if (t.size() == 0) return 0.0;
  const double s = static_cast<double>(t.scale());
  const float m = t.data().array().abs().maxCoeff<Eigen::PropagateNaN>();
  if (!std::isfinite(s) || !std::isfinite(m)) return -1.0;
  return static_cast<double>(m) * s;
}

/// The common wire scale of a tensor whose values reach `amax` (see the file comment).
inline float wire_scale(double amax, wire_format w, int ranks) {
  if (!(amax > 0.0)) return 1.0f;
  const int k = static_cast<int>(std::ceil(std::log2(static_cast<double>(std::max(ranks, 1)))));
  const int headroom = w == wire_format::float32 ? 0 : 15 - k;
  const int e = std::ilogb(pow2_round_up(amax));
  const int se = std::clamp(e - headroom, -126, 127);  // a normal float
  return std::ldexp(1.0f, se);
}

/// Rounds `n` floats into the wire format at `out`.
inline void encode(const float* in, size_t n, wire_format w, unsigned char* out, const convert_options& o) {
  switch (w) {
    case wire_format::float32: std::memcpy(out, in, n * 4); return;
    case wire_format::float16:
      convert(std::span<const float>(in, n), std::span<float16>(reinterpret_cast<float16*>(out), n), o);
      return;
    case wire_format::e5m2:
      convert(std::span<const float>(in, n), std::span<float8_e5m2>(reinterpret_cast<float8_e5m2*>(out), n), o);
      return;
  }
}
/// Widens `n` wire values at `in` into floats.
inline void decode(const unsigned char* in, size_t n, wire_format w, float* out) {
  switch (w) {
    case wire_format::float32: std::memcpy(out, in, n * 4); return;
    case wire_format::float16:
      convert(std::span<const float16>(reinterpret_cast<const float16*>(in), n), std::span<float>(out, n));
      return;
    case wire_format::e5m2:
      convert(std::span<const float8_e5m2>(reinterpret_cast<const float8_e5m2*>(in), n), std::span<float>(out, n));
      return;
  }
}

/// A tensor's place in the flat sequence of all values, and its rebasing factor.
struct slot {
  nn::Tensor* tensor;
  size_t begin;   ///< index of its first value in the flat sequence
  float factor;   ///< its scale / the wire scale = factor x factor2
  float factor2;  ///< 1, or the rest of a ratio beyond float's range (tiny data on a huge scale)
};

/// A ratio of scales as two float factors whose product it is, each within
/// float's range: data x r can fit where r alone does not (data 2^-100 on a
/// scale of 2^100).
inline std::pair<float, float> split_factor(double r) {
  if (r == 0.0 || (r >= 0x1p-100 && r <= 0x1p100)) return {static_cast<float>(r), 1.0f};
  const int e = std::ilogb(r) / 2;
  return {static_cast<float>(std::ldexp(r, -e)), std::ldexp(1.0f, e)};
}

/// The buffers of one reduction, kept per thread from call to call (a training
/// loop reduces the same sizes every step: no allocation, no page faults).
struct workspace {
  std::vector<unsigned char> wire, gathered, segment;
  std::vector<float> sum, part, scratch;
  template <class V>
  static void fit(V& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }
};
inline workspace& thread_workspace() {
  thread_local workspace w;
  return w;
}

/// The slots overlapping the flat range [b, e), with f(slot, first, count, at):
/// values [first, first + count) of the slot's tensor are flat positions at, at + 1, ...
template <class F>
void for_range(const std::vector<slot>& slots, size_t b, size_t e, F&& f) {
  for (const slot& s : slots) {
    const size_t n = static_cast<size_t>(s.tensor->size());
    const size_t lo = std::max(b, s.begin), hi = std::min(e, s.begin + n);
    if (lo < hi) f(s, lo - s.begin, hi - lo, lo);
  }
}

/// Sum across the ranks of the flat values [b, e) (see the file comment): read
/// from the tensors (rebased, rounded into the wire format), written back to
/// them as the widened wire values of the sum.
inline void reduce_bucket(const std::vector<slot>& slots, size_t b, size_t e, MPI_Comm comm,
                          const allreduce_options& o, allreduce_result& result) {
  const int p = comm_size(comm), rank = comm_rank(comm);
  const size_t ws = wire_size(o.wire), m = e - b;
  workspace& w = thread_workspace();
  std::vector<int> counts(static_cast<size_t>(p)), displs(static_cast<size_t>(p));
  for (int i = 0; i < p; ++i) {
    const size_t begin = m * static_cast<size_t>(i) / static_cast<size_t>(p);
    const size_t end = m * static_cast<size_t>(i + 1) / static_cast<size_t>(p);
    counts[static_cast<size_t>(i)] = static_cast<int>((end - begin) * ws);
    displs[static_cast<size_t>(i)] = static_cast<int>(begin * ws);
  }
  // Stochastic rounding: a stream per rank (the ranks' rounding errors are independent).
  convert_options co{.saturate = true, .round = o.round,
                     .seed = o.seed + 0x9E37'79B9'7F4A'7C15ull * static_cast<uint64_t>(rank), .offset = 0};
  workspace::fit(w.wire, m * ws);
  constexpr size_t kChunk = 4096;  // rebased values in L1 before the cast
  workspace::fit(w.scratch, kChunk);
  for_range(slots, b, e, [&](const slot& s, size_t first, size_t count, size_t at) {
    const float* data = s.tensor->data().data() + first;
    for (size_t c = 0; c < count; c += kChunk) {
      const size_t k = std::min(kChunk, count - c);
      unsigned char* out = w.wire.data() + (at - b + c) * ws;
      const auto n = static_cast<Eigen::Index>(k);
      const Eigen::Map<const Eigen::ArrayXf> in(data + c, n);
      if (o.wire == wire_format::float32) {
        Eigen::Map<Eigen::ArrayXf>(reinterpret_cast<float*>(out), n) = in * s.factor * s.factor2;
      } else {
        Eigen::Map<Eigen::ArrayXf>(w.scratch.data(), n) = in * s.factor * s.factor2;
        co.offset = 2 * static_cast<uint64_t>(at + c);
        encode(w.scratch.data(), k, o.wire, out, co);
      }
    }
  });
  // Reduce-scatter: my segment from every rank, packed rank after rank.
  const int mine_bytes = counts[static_cast<size_t>(rank)];
  const size_t mine = static_cast<size_t>(mine_bytes) / ws;
  std::vector<int> recv_counts(static_cast<size_t>(p), mine_bytes), recv_displs(static_cast<size_t>(p));
  for (int i = 0; i < p; ++i) recv_displs[static_cast<size_t>(i)] = i * mine_bytes;
  workspace::fit(w.gathered, mine * ws * static_cast<size_t>(p));
  MPI_Alltoallv(w.wire.data(), counts.data(), displs.data(), MPI_BYTE, w.gathered.data(), recv_counts.data(),
                recv_displs.data(), MPI_BYTE, comm);
  workspace::fit(w.sum, mine);
  workspace::fit(w.part, mine);
  float* sum = w.sum.data();
  for (int i = 0; i < p; ++i) {  // rank order: the same sum on every owner
    const unsigned char* in = w.gathered.data() + static_cast<size_t>(i) * mine * ws;
    const float* part = reinterpret_cast<const float*>(in);
    if (o.wire != wire_format::float32) {
      decode(in, mine, o.wire, w.part.data());
      part = w.part.data();
    }
    if (i == 0) {
      std::copy_n(part, mine, sum);
    } else {
      const auto k = static_cast<Eigen::Index>(mine);
      Eigen::Map<Eigen::ArrayXf>(sum, k) += Eigen::Map<const Eigen::ArrayXf>(part, k);
    }
  }
  workspace::fit(w.segment, mine * ws);
  co.offset = 2 * static_cast<uint64_t>(b + static_cast<size_t>(displs[static_cast<size_t>(rank)]) / ws) + 1;
  encode(sum, mine, o.wire, w.segment.data(), co);
  MPI_Allgatherv(w.segment.data(), mine_bytes, MPI_BYTE, w.wire.data(), counts.data(), displs.data(), MPI_BYTE, comm);
  for_range(slots, b, e, [&](const slot& s, size_t first, size_t count, size_t at) {
    decode(w.wire.data() + (at - b) * ws, count, o.wire, s.tensor->data().data() + first);
  });
  ++result.buckets;
  result.wire_bytes += (m * ws - mine * ws) + mine * ws * static_cast<size_t>(p - 1);
}

}  // namespace detail

/// All-reduces `tensors` (the same count and shapes, in the same order, on
/// every rank of `comm`) in place: sum, or mean with `o.mean` (see the file
/// comment for the scale agreement, the wire formats and non-finite values).
/// A collective: every rank must call it with the same options. Throws
/// std::invalid_argument (on every rank, nothing changed) for a null
/// tensor, a zero bucket size or tensors that differ across ranks.
///
/// **Example**: `scalify::dist::allreduce(grads, MPI_COMM_WORLD, {.wire = scalify::dist::wire_format::e5m2});`
inline allreduce_result allreduce(std::span<nn::Tensor* const> tensors, MPI_Comm comm, const allreduce_options& o = {}) {
  for (const nn::Tensor* t : tensors) {
    SCALIFY_CHECK(t != nullptr, std::invalid_argument, "scalify::dist::allreduce: null tensor");
  }
  SCALIFY_CHECK(o.bucket_bytes >= wire_size(o.wire), std::invalid_argument,
                "scalify::dist::allreduce: bucket_bytes must hold at least one value");
  const int p = detail::comm_size(comm);
  const size_t n = tensors.size();
  // One collective: amax per tensor, the non-finite flag, the layout fingerprint and its negative.
  std::vector<double> info(n + 3);
  for (size_t i = 0; i < n; ++i) {
    const double a = detail::value_amax(*tensors[i]);
    info[i] = std::max(a, 0.0);
    if (a < 0.0) info[n] = 1.0;
  }
  info[n + 1] = detail::layout_fingerprint(tensors);
  info[n + 2] = -info[n + 1];
  // Ranks with another tensor count would disagree on the message length: send the count first.
  const double count[2] = {static_cast<double>(n), -static_cast<double>(n)};
  double count_max[2];
  MPI_Allreduce(count, count_max, 2, MPI_DOUBLE, MPI_MAX, comm);
  SCALIFY_CHECK(count_max[0] == -count_max[1], std::invalid_argument,
                "scalify::dist::allreduce: the ranks pass different numbers of tensors");
  std::vector<double> global(n + 3);
  MPI_Allreduce(info.data(), global.data(), static_cast<int>(n + 3), MPI_DOUBLE, MPI_MAX, comm);
  SCALIFY_CHECK(global[n + 1] == -global[n + 2], std::invalid_argument,
                "scalify::dist::allreduce: the tensors' shapes differ across the ranks");
  allreduce_result result;
  if (global[n] != 0.0) {
    for (nn::Tensor* t : tensors) t->set_scale(scalify::detail::unchecked_scale, std::numeric_limits<float>::quiet_NaN());
    result.finite = false;
    return result;
  }
  // Every tensor rebased onto its wire scale, as one flat sequence cut into buckets.
  std::vector<detail::slot> slots;
  std::vector<float> scales(n);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    scales[i] = detail::wire_scale(global[i], o.wire, p);
    nn::Tensor& t = *tensors[i];
    const auto [f1, f2] = detail::split_factor(static_cast<double>(t.scale()) / static_cast<double>(scales[i]));
    slots.push_back({&t, total, f1, f2});
    total += static_cast<size_t>(t.size());
  }
  // At most 1 GiB per bucket: MPI's counts are ints.
  const size_t bucket = std::max<size_t>(1, std::min<size_t>(o.bucket_bytes, size_t{1} << 30) / wire_size(o.wire));
  for (size_t b = 0; b < total; b += bucket) detail::reduce_bucket(slots, b, std::min(total, b + bucket), comm, o, result);
  for (size_t i = 0; i < n; ++i) {
    const double s = o.mean ? static_cast<double>(scales[i]) / p : static_cast<double>(scales[i]);
    tensors[i]->set_scale(static_cast<float>(s));
  }
  return result;
}

/// allreduce() of the gradients of `params` (e.g. model.parameters()), before
/// the optimizer's step. Throws std::invalid_argument for a null gradient.
///
/// **Example**:
/// ```
/// model.backward(dlogits);
/// scalify::dist::allreduce_gradients(model.parameters(), MPI_COMM_WORLD, {.wire = wire_format::float16});
/// opt.step();   // skipped on every rank if any rank's gradient was not finite
/// ```
inline allreduce_result allreduce_gradients(const std::vector<nn::param_ref>& params, MPI_Comm comm,
                                            const allreduce_options& o = {}) {
  std::vector<nn::Tensor*> grads;
  for (const auto& p : params) {
    SCALIFY_CHECK(p.grad != nullptr, std::invalid_argument,
                  "scalify::dist::allreduce_gradients: parameter '" + p.name + "' has a null gradient");
    grads.push_back(p.grad);
  }
  return allreduce(grads, comm, o);
}

/// Copies the parameters of rank `root` to every rank of `comm` (data and
/// scale; the same shapes everywhere, else std::invalid_argument on every
/// rank): identical starting weights.
inline void broadcast_parameters(const std::vector<nn::param_ref>& params, MPI_Comm comm, int root = 0) {
  std::vector<nn::Tensor*> values;
  for (const auto& p : params) {
    SCALIFY_CHECK(p.value != nullptr, std::invalid_argument,
                  "scalify::dist::broadcast_parameters: parameter '" + p.name + "' is null");
    values.push_back(p.value);
  }
  double f[2] = {detail::layout_fingerprint(values), 0.0};
  f[1] = -f[0];
  double g[2];
  MPI_Allreduce(f, g, 2, MPI_DOUBLE, MPI_MAX, comm);
  SCALIFY_CHECK(g[0] == -g[1], std::invalid_argument,
                "scalify::dist::broadcast_parameters: the parameters' shapes differ across the ranks");
  for (nn::Tensor* t : values) {
    float s = t->scale();
    MPI_Bcast(&s, 1, MPI_FLOAT, root, comm);
    if (t->size() > 0) MPI_Bcast(t->data().data(), static_cast<int>(t->size()), MPI_FLOAT, root, comm);
    t->set_scale(scalify::detail::unchecked_scale, s);
  }
}

/// MPI_Init (if MPI is not initialized yet) and MPI_Finalize (if it did the
/// init) for a program's main(); rank() and size() of MPI_COMM_WORLD.
class mpi_session {
 public:
  mpi_session(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      MPI_Init(argc, argv);
      owner_ = true;
    }
    rank_ = detail::comm_rank(MPI_COMM_WORLD);
    size_ = detail::comm_size(MPI_COMM_WORLD);
  }
  ~mpi_session() {
    if (owner_) MPI_Finalize();
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  bool owner_ = false;
  int rank_ = 0, size_ = 1;
};

}  // namespace scalify::dist

#endif  // SCALIFY_DIST_ALLREDUCE_HPP_
