// scalify nn: the arithmetic of an SGD step over one block of a parameter,
// on every CPU path (nn/optim.hpp's sgd::step runs it, then rounds the
// results into the state format with the bulk casts).
//
// For element i of the block, with w and g the float data of the weights and
// the gradient (scales ws, gs) and p the previous momentum widened to float
// (scale ps):
//
//   v = fma(wd, w * ws, g * gs)     the gradient with weight decay (g * gs if wd == 0)
//   v = fma(mu, p * ps, v)          plus the momentum (if there is a previous one)
//   u = fma(-lr, v, w * ws)         the new weight value
//
// then, as asked: v * fv and u * fu written out (the values rebased onto
// their stores' scales), or the squares of v and u summed (for those scales).
// The sums run in 16 lanes, element i into lane i mod 16 with a fused
// multiply-add, and the lanes are added as AVX2 adds two 8-lane registers
// and halves the result three times. Every operation is in float32, in this
// order, with explicit fused multiply-adds, so every path gives the same bits
// (no compiler contraction can differ).
//
//   sgd_kernels_for(path)   the table: scalar on the scalar path, the AVX2
//                           routine on every SIMD path (a pass over memory:
//                           wider vectors would not make it faster)
#ifndef SCALIFY_NN_DETAIL_SGD_KERNELS_HPP_
#define SCALIFY_NN_DETAIL_SGD_KERNELS_HPP_

#include <cmath>    // std::fma
#include <cstddef>  // ptrdiff_t

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/cpu.hpp"     // cpu_path

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, FMA
#endif

namespace scalify::nn::detail {

/// One block of an SGD step: the operands from the block's first element
/// (p null: no previous momentum) and the coefficients.
struct sgd_block {
  const float* w;
  const float* g;
  const float* p;
  float ws, gs, ps;
  float mu, wd, lr;
};

/// Sums of squares of the values an sgd step stores.
struct step_sums {
  float v = 0.0f;  ///< of the new momentum v
  float w = 0.0f;  ///< of the new weights u = w - lr v
};

/// What a block routine does with v and u: write v * fv into `v_out` (if
/// not null) and u * fu into `u_out`, or (`sums`) only sum their squares.
/// v_out may be b.p and u_out may be b.w (each element is read before it is
/// written).
struct sgd_outputs {
  float* v_out = nullptr;
  float fv = 1.0f;
  float* u_out = nullptr;
  float fu = 1.0f;
  bool sums = false;
};

/// A block routine: elements [0, n) of `b`; returns the sums if out.sums.
using sgd_block_fn = step_sums (*)(const sgd_block& b, std::ptrdiff_t n, const sgd_outputs& out);

/// The 16 lanes of a sum added in the order of the AVX2 routine (see the file comment).
inline float add_lanes(const float* lane) {
  float a[8], b[4];
  for (int j = 0; j < 8; ++j) a[j] = lane[j] + lane[j + 8];
  for (int j = 0; j < 4; ++j) b[j] = a[j] + a[j + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

/// The portable routine, the reference of the others.
template <bool kDecay, bool kPrevious>
step_sums sgd_block_scalar(const sgd_block& b, std::ptrdiff_t n, const sgd_outputs& out) {
  float lane_v[16] = {}, lane_u[16] = {};
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const float w = b.w[i] * b.ws;
    float v = b.g[i] * b.gs;
    if constexpr (kDecay) v = std::fma(b.wd, w, v);
    if constexpr (kPrevious) v = std::fma(b.mu, b.p[i] * b.ps, v);
    const float u = std::fma(-b.lr, v, w);
    if (out.sums) {
      lane_v[i % 16] = std::fma(v, v, lane_v[i % 16]);
      lane_u[i % 16] = std::fma(u, u, lane_u[i % 16]);
      continue;
    }
    if (out.v_out != nullptr) out.v_out[i] = v * out.fv;
    out.u_out[i] = u * out.fu;
  }
  if (!out.sums) return {};
  return {add_lanes(lane_v), add_lanes(lane_u)};
}

}  // namespace scalify::nn::detail

#if SCALIFY_HAVE_X86_SIMD
SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::nn::detail::avx2 {

SCALIFY_ALWAYS_INLINE float add_lanes(__m256 lo, __m256 hi) {
  const __m256 a = _mm256_add_ps(lo, hi);
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

/// sgd_block_scalar with AVX2 and FMA, 8 elements at a time (masked loads
/// and stores for the last 1-15).
template <bool kDecay, bool kPrevious>
step_sums sgd_block(const sgd_block& b, std::ptrdiff_t n, const sgd_outputs& out) {
  const __m256 ws = _mm256_set1_ps(b.ws), gs = _mm256_set1_ps(b.gs), ps = _mm256_set1_ps(b.ps);
  const __m256 mu = _mm256_set1_ps(b.mu), wd = _mm256_set1_ps(b.wd), neg_lr = _mm256_set1_ps(-b.lr);
  const __m256 fv = _mm256_set1_ps(out.fv), fu = _mm256_set1_ps(out.fu);
  __m256 sum_v[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, sum_u[2] = {sum_v[0], sum_v[1]};
  // Elements [i, i + 8) under `mask` (all lanes: a null mask), summed into lane group `half`.
  const auto eight = [&](std::ptrdiff_t i, const __m256i* mask, int half) SCALIFY_LAMBDA_ALWAYS_INLINE {
    const auto load = [&](const float* p) SCALIFY_LAMBDA_ALWAYS_INLINE {
      return mask != nullptr ? _mm256_maskload_ps(p + i, *mask) : _mm256_loadu_ps(p + i);
    };
    const auto store = [&](float* p, __m256 x) SCALIFY_LAMBDA_ALWAYS_INLINE {
      if (mask != nullptr) {
        _mm256_maskstore_ps(p + i, *mask, x);
      } else {
        _mm256_storeu_ps(p + i, x);
      }
    };
    const __m256 w = _mm256_mul_ps(load(b.w), ws);
    __m256 v = _mm256_mul_ps(load(b.g), gs);
    if constexpr (kDecay) v = _mm256_fmadd_ps(wd, w, v);
    if constexpr (kPrevious) v = _mm256_fmadd_ps(mu, _mm256_mul_ps(load(b.p), ps), v);
    const __m256 u = _mm256_fmadd_ps(neg_lr, v, w);
    if (out.sums) {
      sum_v[half] = _mm256_fmadd_ps(v, v, sum_v[half]);
      sum_u[half] = _mm256_fmadd_ps(u, u, sum_u[half]);
      return;
    }
    if (out.v_out != nullptr) store(out.v_out, _mm256_mul_ps(v, fv));
    store(out.u_out, _mm256_mul_ps(u, fu));
  };
  std::ptrdiff_t i = 0;
  for (; i + 16 <= n; i += 16) {
    eight(i, nullptr, 0);
    eight(i + 8, nullptr, 1);
  }
  for (int half = 0; half < 2 && i < n; ++half, i += 8) {
    // Lanes below n - i. Masked-off lanes load 0 and add 0 to the sums (NaN
    // if a scale is infinite: then the block's real lanes are not finite either).
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    eight(i, &mask, half);
  }
  if (!out.sums) return {};
  return {add_lanes(sum_v[0], sum_v[1]), add_lanes(sum_u[0], sum_u[1])};
}

}  // namespace scalify::nn::detail::avx2
SCALIFY_END_TARGET
#endif  // SCALIFY_HAVE_X86_SIMD

namespace scalify::nn::detail {

/// The block routines of one CPU path, by [weight decay][previous momentum].
struct sgd_kernels {
  sgd_block_fn block[2][2];
};

/// The table of `path`.
inline const sgd_kernels& sgd_kernels_for(cpu_path path) {
  static constexpr sgd_kernels kScalar{{{&sgd_block_scalar<false, false>, &sgd_block_scalar<false, true>},
                                        {&sgd_block_scalar<true, false>, &sgd_block_scalar<true, true>}}};
#if SCALIFY_HAVE_X86_SIMD
  static constexpr sgd_kernels kAvx2{{{&avx2::sgd_block<false, false>, &avx2::sgd_block<false, true>},
                                      {&avx2::sgd_block<true, false>, &avx2::sgd_block<true, true>}}};
  switch (path) {
    case cpu_path::scalar: return kScalar;
    case cpu_path::avx2:
    case cpu_path::avx512:
    case cpu_path::avx512bf16: return kAvx2;
  }
#else
  (void)path;
#endif
  return kScalar;
}

}  // namespace scalify::nn::detail

#endif  // SCALIFY_NN_DETAIL_SGD_KERNELS_HPP_
