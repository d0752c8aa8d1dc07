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
// The float16 routines (the default state format) read p as float16 codes
// and round in the same pass: v * fv to nearest even into float16 codes, and
// u * fu into float16 (stochastically with stochastic_bits(), or to nearest
// even), written back widened to float: what the bulk casts of
// formats/convert.hpp give, bit for bit, without their passes over buffers.
//
//   sgd_kernels_for(path)   the table: scalar on the scalar path, the AVX2
//                           routines on every SIMD path (a pass over memory:
//                           wider vectors would not make it faster)
#ifndef SCALIFY_NN_DETAIL_SGD_KERNELS_HPP_
#define SCALIFY_NN_DETAIL_SGD_KERNELS_HPP_

#include <algorithm>  // std::min
#include <bit>        // std::bit_cast
#include <cmath>      // std::fma
#include <cstddef>    // ptrdiff_t
#include <cstdint>    // uint16_t, uint32_t, uint64_t
#include <cstring>    // std::memcpy

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/cpu.hpp"     // cpu_path
#include "scalify/formats/cast.hpp"  // round_cast, stochastic_bits, float16

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, FMA
#endif

namespace scalify::nn::detail {

/// One block of an SGD step: the operands from the block's first element
/// (p null: no previous momentum; the float16 routines read `p_half`, the
/// momentum's float16 codes, instead) and the coefficients.
struct sgd_block {
  const float* w;
  const float* g;
  const float* p;
  float ws, gs, ps;
  float mu, wd, lr;
  const float16* p_half = nullptr;
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

/// The stores of the float16 routines: v * fv rounded to nearest even into
/// `v_codes` (if not null); u * fu rounded into float16, stochastically with
/// stochastic_bits(keys, offset + i) for element i if `stochastic`, else to
/// nearest even, and written widened to float into `u_out`. `saturate` as
/// in convert_options (stochastic rounding always saturates). v_codes may be
/// b.p_half and u_out b.w.
struct sgd_half_outputs {
  float16* v_codes = nullptr;
  float fv = 1.0f;
  float* u_out = nullptr;
  float fu = 1.0f;
  bool saturate = false;
  bool stochastic = false;
  scalify::detail::stochastic_keys keys{};
  uint64_t offset = 0;
};

/// A float16 routine: elements [0, n) of `b` (momentum from b.p_half);
/// with `out` null, returns the sums, else stores into *out.
using sgd_half_fn = step_sums (*)(const sgd_block& b, std::ptrdiff_t n, const sgd_half_outputs* out);

/// A float16 widened to float as the bulk casts widen it (NaN: the quiet
/// NaN 0x7FC00000 with its sign).
inline float widen_half(float16 x) {
  const uint32_t code = float16_bits(x);
  if ((code & 0x7FFFu) > 0x7C00u) return std::bit_cast<float>(0x7FC0'0000u | (code & 0x8000u) << 16);
  return static_cast<float>(x);
}

/// Element i's stores (sgd_half_outputs), one rounding each.
inline void store_half(const sgd_half_outputs& out, std::ptrdiff_t i, float v, float u) {
  if (out.v_codes != nullptr) {
    out.v_codes[i] = round_cast<float16>(v * out.fv, rounding::nearest_even, out.saturate);
  }
  const auto at = static_cast<uint64_t>(i);
  const float16 h = out.stochastic ? round_cast<float16>(u * out.fu, rounding::stochastic, true,
                                                         scalify::detail::stochastic_bits(out.keys, out.offset + at))
                                   : round_cast<float16>(u * out.fu, rounding::nearest_even, out.saturate);
  out.u_out[i] = widen_half(h);
}
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

/// The portable float16 routine, the reference of the others.
template <bool kDecay, bool kPrevious>
step_sums sgd_half_scalar(const sgd_block& b, std::ptrdiff_t n, const sgd_half_outputs* out) {
  float lane_v[16] = {}, lane_u[16] = {};
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const float w = b.w[i] * b.ws;
    float v = b.g[i] * b.gs;
    if constexpr (kDecay) v = std::fma(b.wd, w, v);
    if constexpr (kPrevious) v = std::fma(b.mu, widen_half(b.p_half[i]) * b.ps, v);
    const float u = std::fma(-b.lr, v, w);
    if (out == nullptr) {
      lane_v[i % 16] = std::fma(v, v, lane_v[i % 16]);
      lane_u[i % 16] = std::fma(u, u, lane_u[i % 16]);
      continue;
    }
    store_half(*out, i, v, u);
  }
  if (out != nullptr) return {};
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

SCALIFY_ALWAYS_INLINE __m256i hash32(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846ca68bu)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

/// sgd_half_scalar with AVX2, FMA and F16C, 8 elements at a time. The
/// momentum widens with vcvtph2ps (exact). v rounds with vcvtps2ph (nearest
/// even, after a clamp to +-65504 when saturating). u rounds stochastically
/// as the bulk cast's fast kernel does (formats/detail/convert_simd-inl.hpp),
/// and the float16 value comes back as float bits at once: for a result in
/// float16's normal range, adding the complement of the random bits' top 13
/// bits to u's float bits and clearing the 13 low bits gives the widened
/// result (a carry may reach the exponent), min'ed with 65504's bits to
/// saturate; a zero stays zero. A vector with a non-finite value or (for
/// stochastic rounding) a nonzero u below 2^-14 goes element by element
/// through store_half(), as does a block whose indices wrap the low 32 bits.
template <bool kDecay, bool kPrevious>
step_sums sgd_half(const detail::sgd_block& b, std::ptrdiff_t n, const sgd_half_outputs* out) {
  if (out != nullptr && out->stochastic && static_cast<uint32_t>(out->offset) > 0xFFFF'FFFFu - static_cast<uint64_t>(n)) {
    return sgd_half_scalar<kDecay, kPrevious>(b, n, out);
  }
  const __m256 ws = _mm256_set1_ps(b.ws), gs = _mm256_set1_ps(b.gs), ps = _mm256_set1_ps(b.ps);
  const __m256 mu = _mm256_set1_ps(b.mu), wd = _mm256_set1_ps(b.wd), neg_lr = _mm256_set1_ps(-b.lr);
  const __m256 fv = _mm256_set1_ps(out != nullptr ? out->fv : 1.0f), fu = _mm256_set1_ps(out != nullptr ? out->fu : 1.0f);
  const __m256 k_max = _mm256_set1_ps(65504.0f), k_min = _mm256_set1_ps(-65504.0f);
  const __m256i k_abs = _mm256_set1_epi32(0x7FFF'FFFF), k_max_finite = _mm256_set1_epi32(0x7F7F'FFFF);
  const __m256i k_min_normal = _mm256_set1_epi32(0x3880'0000);  // 2^-14
  const __m256i k_low13 = _mm256_set1_epi32(~0x1FFF), k_max_bits = _mm256_set1_epi32(0x477F'E000);  // 65504
  const __m256i k_ones = _mm256_set1_epi32(-1), k_zero = _mm256_setzero_si256();
  const __m256i k_key_lo = _mm256_set1_epi32(static_cast<int>(out != nullptr ? out->keys.lo : 0u));
  const __m256i k_key_hi = _mm256_set1_epi32(
      static_cast<int>(out != nullptr ? out->keys.hi ^ static_cast<uint32_t>(out->offset >> 32) : 0u));
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const uint32_t base = out != nullptr ? static_cast<uint32_t>(out->offset) : 0u;
  // Pointers in locals: the code stores may alias anything, b and *out included.
  const float* const w_in = b.w;
  const float* const g_in = b.g;
  const float16* const p_in = b.p_half;
  float16* const v_codes = out != nullptr ? out->v_codes : nullptr;
  float* const u_out = out != nullptr ? out->u_out : nullptr;
  const bool stochastic = out != nullptr && out->stochastic, saturate = out != nullptr && out->saturate;
  // v and u of elements [i, i + count) (count 8: a whole vector; the other lanes are 0).
  const auto values = [&](std::ptrdiff_t i, std::ptrdiff_t count, __m256i mask, __m256& v,
                          __m256& u) SCALIFY_LAMBDA_ALWAYS_INLINE {
    const bool whole = count == 8;
    const auto load = [&](const float* p) SCALIFY_LAMBDA_ALWAYS_INLINE {
      return whole ? _mm256_loadu_ps(p + i) : _mm256_maskload_ps(p + i, mask);
    };
    const __m256 w = _mm256_mul_ps(load(w_in), ws);
    v = _mm256_mul_ps(load(g_in), gs);
    if constexpr (kDecay) v = _mm256_fmadd_ps(wd, w, v);
    if constexpr (kPrevious) {
      __m128i codes;
      if (whole) {
        codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_in + i));
      } else {
        uint16_t part[8] = {};
        std::memcpy(part, p_in + i, static_cast<size_t>(count) * sizeof(float16));
        codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(part));
      }
      v = _mm256_fmadd_ps(mu, _mm256_mul_ps(_mm256_cvtph_ps(codes), ps), v);
    }
    u = _mm256_fmadd_ps(neg_lr, v, w);
  };
  const auto tail_mask = [&](std::ptrdiff_t count) SCALIFY_LAMBDA_ALWAYS_INLINE {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), iota);
  };

  if (out == nullptr) {  // the sums, lane groups as in sgd_block
    __m256 sum_v0 = _mm256_setzero_ps(), sum_v1 = sum_v0, sum_u0 = sum_v0, sum_u1 = sum_v0, v, u;
    std::ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
      values(i, 8, k_ones, v, u);
      sum_v0 = _mm256_fmadd_ps(v, v, sum_v0);
      sum_u0 = _mm256_fmadd_ps(u, u, sum_u0);
      values(i + 8, 8, k_ones, v, u);
      sum_v1 = _mm256_fmadd_ps(v, v, sum_v1);
      sum_u1 = _mm256_fmadd_ps(u, u, sum_u1);
    }
    if (i < n) {
      const std::ptrdiff_t count = std::min<std::ptrdiff_t>(8, n - i);
      values(i, count, tail_mask(count), v, u);
      sum_v0 = _mm256_fmadd_ps(v, v, sum_v0);
      sum_u0 = _mm256_fmadd_ps(u, u, sum_u0);
    }
    if (i + 8 < n) {
      values(i + 8, n - i - 8, tail_mask(n - i - 8), v, u);
      sum_v1 = _mm256_fmadd_ps(v, v, sum_v1);
      sum_u1 = _mm256_fmadd_ps(u, u, sum_u1);
    }
    return {add_lanes(sum_v0, sum_v1), add_lanes(sum_u0, sum_u1)};
  }

  // The stores of elements [i, i + count).
  const auto store = [&]<bool kStochastic>(std::ptrdiff_t i, std::ptrdiff_t count) SCALIFY_LAMBDA_ALWAYS_INLINE {
    const bool whole = count == 8;
    const __m256i mask = whole ? k_ones : tail_mask(count);
    __m256 v, u;
    values(i, count, mask, v, u);
    const __m256 vs = _mm256_mul_ps(v, fv), us = _mm256_mul_ps(u, fu);
    const __m256i va = _mm256_and_si256(_mm256_castps_si256(vs), k_abs);
    const __m256i ua = _mm256_and_si256(_mm256_castps_si256(us), k_abs);
    __m256i special = _mm256_or_si256(_mm256_cmpgt_epi32(va, k_max_finite), _mm256_cmpgt_epi32(ua, k_max_finite));
    if constexpr (kStochastic) {
      special = _mm256_or_si256(special, _mm256_and_si256(_mm256_cmpgt_epi32(k_min_normal, ua),
                                                          _mm256_cmpgt_epi32(ua, k_zero)));
    }
    if (!_mm256_testz_si256(special, mask)) {
      float v_lanes[8], u_lanes[8];
      _mm256_storeu_ps(v_lanes, v);
      _mm256_storeu_ps(u_lanes, u);
      for (std::ptrdiff_t j = 0; j < count; ++j) store_half(*out, i + j, v_lanes[j], u_lanes[j]);
      return;
    }
    if (v_codes != nullptr) {
      const __m256 vc = saturate ? _mm256_min_ps(_mm256_max_ps(vs, k_min), k_max) : vs;
      const __m128i codes = _mm256_cvtps_ph(vc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (whole) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(v_codes + i), codes);
      } else {
        uint16_t part[8];
        _mm_storeu_si128(reinterpret_cast<__m128i*>(part), codes);
        std::memcpy(v_codes + i, part, static_cast<size_t>(count) * sizeof(float16));
      }
    }
    __m256 r;
    if constexpr (kStochastic) {
      const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base + static_cast<uint32_t>(i))), iota);
      const __m256i random = hash32(_mm256_xor_si256(hash32(_mm256_xor_si256(lo, k_key_lo)), k_key_hi));
      const __m256i up = _mm256_srli_epi32(_mm256_xor_si256(random, k_ones), 32 - 13);
      const __m256i t = _mm256_min_epi32(_mm256_and_si256(_mm256_add_epi32(ua, up), k_low13), k_max_bits);
      r = _mm256_or_ps(_mm256_castsi256_ps(t), _mm256_andnot_ps(_mm256_castsi256_ps(k_abs), us));
    } else {
      const __m256 uc = saturate ? _mm256_min_ps(_mm256_max_ps(us, k_min), k_max) : us;
      r = _mm256_cvtph_ps(_mm256_cvtps_ph(uc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    if (whole) {
      _mm256_storeu_ps(u_out + i, r);
    } else {
      _mm256_maskstore_ps(u_out + i, mask, r);
    }
  };
  const auto store_all = [&]<bool kStochastic>() SCALIFY_LAMBDA_ALWAYS_INLINE {
    std::ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) store.template operator()<kStochastic>(i, 8);
    if (i < n) store.template operator()<kStochastic>(i, n - i);
  };
  if (stochastic) {
    store_all.template operator()<true>();
  } else {
    store_all.template operator()<false>();
  }
  return {};
}

}  // namespace scalify::nn::detail::avx2
SCALIFY_END_TARGET
#endif  // SCALIFY_HAVE_X86_SIMD

namespace scalify::nn::detail {

/// The block routines of one CPU path, by [weight decay][previous momentum]:
/// float operands and results (`block`), float16 momentum and stores (`half`).
struct sgd_kernels {
  sgd_block_fn block[2][2];
  sgd_half_fn half[2][2];
};

/// The table of `path`.
inline const sgd_kernels& sgd_kernels_for(cpu_path path) {
  static constexpr sgd_kernels kScalar{{{&sgd_block_scalar<false, false>, &sgd_block_scalar<false, true>},
                                        {&sgd_block_scalar<true, false>, &sgd_block_scalar<true, true>}},
                                       {{&sgd_half_scalar<false, false>, &sgd_half_scalar<false, true>},
                                        {&sgd_half_scalar<true, false>, &sgd_half_scalar<true, true>}}};
#if SCALIFY_HAVE_X86_SIMD
  static constexpr sgd_kernels kAvx2{{{&avx2::sgd_block<false, false>, &avx2::sgd_block<false, true>},
                                      {&avx2::sgd_block<true, false>, &avx2::sgd_block<true, true>}},
                                     {{&avx2::sgd_half<false, false>, &avx2::sgd_half<false, true>},
                                      {&avx2::sgd_half<true, false>, &avx2::sgd_half<true, true>}}};
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
