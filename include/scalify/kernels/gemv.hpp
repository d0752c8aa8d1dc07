// scalify: the small-M GEMM path (M = 1..4), streaming B without packing.
//
// For C (M x N) = A (M x K) * B (K x N), each thread owns a range of columns;
// every B element is read once and widened once, in registers.
//   B's rows contiguous (weights stored K x N): for k = 0, 1, ..., add
//     A(i, k) * B(k, j) into float32 accumulators with one fused multiply-add:
//     the k order and the FMAs of the blocked GEMM, so the same bits.
//   B's columns contiguous (weights stored N x K, used transposed): one dot
//     product per column in 16 lanes (another order: bounded, not bit-exact;
//     SIMD paths only, the scalar path keeps the k-ordered loop).
// The axpy form is written once (kernels/detail/gemv-inl.hpp) and compiled
// for AVX2 and AVX-512 (same bits); the dot form runs its AVX2 version on the
// avx512 paths too.
#ifndef SCALIFY_KERNELS_GEMV_HPP_
#define SCALIFY_KERNELS_GEMV_HPP_

#include <bit>          // std::bit_cast
#include <cmath>        // std::fma, std::fabs
#include <cstddef>      // ptrdiff_t
#include <cstdint>      // uint8_t, uint16_t
#include <limits>       // std::numeric_limits
#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"       // SCALIFY_HAVE_X86_SIMD
#include "scalify/kernels/pack.hpp"  // strided, gemm_input, widen_f32_bits
#include "scalify/kernels/detail/widen_avx2.hpp"  // kernels::avx2::widen16, kGemvScale
#include "scalify/kernels/detail/widen_avx512.hpp"  // kernels::avx512::widen32, widen_pair

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, FMA, F16C
#endif

namespace scalify::kernels {

/// The largest M the streaming path takes.
inline constexpr std::ptrdiff_t kGemvMaxRows = 4;

/// The axpy loop prefetches the next sweep's rows of B when B spans more
/// than this many bytes (its rows times its row stride, whatever the thread
/// split). Weights that large mostly come from memory, where the prefetch
/// makes a 16-bit GEMV 1.7-2x faster; from cache it can cost up to 25 %
/// (docs/kernels.md, "The streaming path").
inline constexpr std::ptrdiff_t kGemvPrefetchBytes = std::ptrdiff_t{4} << 20;

/// acc[i * ld + j] = sum_k A(i, k) * B(k, j0 + j) for i < m, j < n (scalar reference).
template <gemm_input TA, gemm_input TB>
void gemv_block_scalar(const strided<TA>& a, const strided<TB>& b, std::ptrdiff_t m, std::ptrdiff_t k_size,
                       std::ptrdiff_t j0, std::ptrdiff_t n, float* acc, std::ptrdiff_t ld) {
  for (std::ptrdiff_t i = 0; i < m; ++i) {
    for (std::ptrdiff_t j = 0; j < n; ++j) acc[i * ld + j] = 0.0f;
  }
  for (std::ptrdiff_t k = 0; k < k_size; ++k) {
    const TB* row = b.data + k * b.rs + j0 * b.cs;
    for (std::ptrdiff_t i = 0; i < m; ++i) {
      const float ai = std::bit_cast<float>(widen_f32_bits(a.at(i, k)));
      float* out = acc + i * ld;
      for (std::ptrdiff_t j = 0; j < n; ++j) {
        out[j] = std::fma(ai, std::bit_cast<float>(widen_f32_bits(row[j * b.cs])), out[j]);
      }
    }
  }
}

}  // namespace scalify::kernels

// The axpy loop (B's rows contiguous), once per SIMD path: kernels::avx2::gemv_block,
// kernels::avx512::gemv_block.
#define SCALIFY_PATH_INCLUDE "scalify/kernels/detail/gemv-inl.hpp"
#include "scalify/simd/foreach_path.hpp"

#if SCALIFY_HAVE_X86_SIMD
SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::kernels::avx2 {

using namespace ::scalify::simd::avx2;  // the path's vector types (simd/)

/// The dot-product form over `count` <= G columns of B at once (B's columns
/// contiguous, b.rs == 1): acc[i * ld + g] = sum_k A(i, k) B(k, jb + g) for g <
/// count, with A already widened and scaled by kGemvScale<TB> in `aw` (M rows
/// of k_size floats). Each column's sum is its own: partial sums in 16 lanes
/// (lane l takes k = l, l + 16, ...), then added up in a fixed order, then the
/// k_size % 16 last products by FMA. Summing G columns together only gives
/// the core 2 G M independent chains of FMAs: one column alone (2 M chains)
/// waits on the FMA latency when M is small. With count < G the last column
/// is summed again in the spare places (one instantiation for every count).
/// With `prefetch`, the next_count columns from j_next on (the next group's)
/// are prefetched as these are read. kBits (e4m3fn B): `aw` holds A *
/// kGemvBitsScale instead, and the columns without a NaN code decode straight
/// to float32 bits (widen_quad_bits_no_nan; the conditions of gemv_block_with).
template <int M, int G, class TA, class TB, bool kBits = false>
SCALIFY_ALWAYS_INLINE void gemv_dot_columns(const kernels::strided<TA>& a, const kernels::strided<TB>& b,
                                            std::ptrdiff_t k_size, std::ptrdiff_t jb, int count,
                                            std::ptrdiff_t j_next, int next_count, bool prefetch, float* acc,
                                            std::ptrdiff_t ld, const float* aw) {
  const std::ptrdiff_t k16 = k_size / 16 * 16;
  const TB* col[G];
  for (int g = 0; g < G; ++g) col[g] = b.data + (jb + (g < count ? g : count - 1)) * b.cs;
  // The next group's columns, prefetched in address order as this group's
  // are read: next_count bytes of them per byte of a column read here (their
  // segments laid end to end).
  const char* next[G];
  const std::ptrdiff_t jn = next_count > 0 ? j_next : jb;  // no next group: any column of B (not fetched)
  for (int g = 0; g < G; ++g) {
    next[g] = reinterpret_cast<const char*>(b.data + (jn + (g < next_count ? g : 0)) * b.cs);
  }
  const std::ptrdiff_t col_bytes = k_size * static_cast<std::ptrdiff_t>(sizeof(TB));
  std::ptrdiff_t pf_pos = 0, pf_off = 0;  // bytes prefetched; the next line's offset in column pf_col
  int pf_col = 0;
  auto prefetch_to = [&](std::ptrdiff_t k_end) __attribute__((always_inline)) {
    const std::ptrdiff_t target = next_count * k_end * static_cast<std::ptrdiff_t>(sizeof(TB));
    for (; pf_pos < target && pf_col < next_count; pf_pos += 64) {
      _mm_prefetch(next[pf_col] + pf_off, _MM_HINT_T0);
      for (pf_off += 64; pf_off >= col_bytes && pf_col < next_count; pf_off -= col_bytes) ++pf_col;
    }
  };
  __m256 s0[G][M], s1[G][M];
  // e4m3fn: the columns are widened without the NaN step and checked for the
  // NaN code (see gemv_block); if one had it, the G columns are summed again
  // with widen16 (the same bits for the columns without one).
  auto sum = [&](auto exact) __attribute__((always_inline)) {
    [[maybe_unused]] nan_screen screen;
    constexpr bool kFast = std::is_same_v<TB, float8_e4m3fn> && !decltype(exact)::value;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) s0[g][i] = s1[g][i] = _mm256_setzero_ps();
    }
    std::ptrdiff_t k = 0;
    // A at the decode's scale: `aw` as stored, or, for widen16 after the
    // bits decode, times 2^-112 (exact: A * 2^8 is a float).
    auto a8 = [&](std::ptrdiff_t i, std::ptrdiff_t kk) __attribute__((always_inline)) {
      const __m256 v = _mm256_loadu_ps(aw + i * k_size + kk);
      if constexpr (kBits && !kFast) return _mm256_mul_ps(v, _mm256_set1_ps(kGemvScale<TB> / kGemvBitsScale));
      return v;
    };
    if constexpr (kFast) {  // 32 codes per decode, the FMAs in the 16-code order
      for (; k + 32 <= k16; k += 32) {
        if (prefetch) prefetch_to(k + 32);
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) {
          f32x w[4];
          if constexpr (kBits) {
            widen_quad_bits_no_nan(col[g] + k, w, screen);
          } else {
            widen_quad_no_nan(col[g] + k, w, screen);
          }
#pragma GCC unroll 4
          for (int i = 0; i < M; ++i) {
            s0[g][i] = _mm256_fmadd_ps(a8(i, k), w[0].v, s0[g][i]);
            s1[g][i] = _mm256_fmadd_ps(a8(i, k + 8), w[1].v, s1[g][i]);
            s0[g][i] = _mm256_fmadd_ps(a8(i, k + 16), w[2].v, s0[g][i]);
            s1[g][i] = _mm256_fmadd_ps(a8(i, k + 24), w[3].v, s1[g][i]);
          }
        }
      }
    }
    for (; k < k16; k += 16) {
      if (prefetch && !decltype(exact)::value) prefetch_to(k + 16);
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        f32x w0, w1;
        if constexpr (kFast && kBits) {
          widen_pair_bits_no_nan(col[g] + k, w0, w1, screen);
        } else if constexpr (kFast) {
          widen_pair_no_nan(col[g] + k, w0, w1, screen);
        } else {
          widen16(col[g] + k, w0.v, w1.v);
        }
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          s0[g][i] = _mm256_fmadd_ps(a8(i, k), w0.v, s0[g][i]);
          s1[g][i] = _mm256_fmadd_ps(a8(i, k + 8), w1.v, s1[g][i]);
        }
      }
    }
    if constexpr (kFast) return !screen.hit();
    return true;
  };
  if (!sum(std::false_type{})) {
    if constexpr (std::is_same_v<TB, float8_e4m3fn>) sum(std::true_type{});  // other types: never false
  }
  for (int g = 0; g < count; ++g) {
    for (int i = 0; i < M; ++i) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_add_ps(s0[g][i], s1[g][i]));
      float r = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
      for (std::ptrdiff_t k = k16; k < k_size; ++k) {
        r = std::fma(std::bit_cast<float>(kernels::widen_f32_bits(a.at(i, k))),
                     std::bit_cast<float>(kernels::widen_f32_bits(col[g][k])), r);
      }
      acc[i * ld + g] = r;
    }
  }
}

/// The dot-product form, for a B whose columns are contiguous (b.rs == 1: op(B)
/// = W^T with W stored N x K row-major, PyTorch's layout): acc[i * ld + j] =
/// sum_k A(i, k) B(k, j0 + j), each column of B read once and widened 16 at a
/// time; partial sums in 16 lanes, then added up in a fixed order
/// (gemv_dot_columns). The order differs from the blocked GEMM's (bounded,
/// not bit-exact). `aw` (m * k floats) receives A widened and scaled by
/// kGemvScale<TB>.
///
/// Narrow B (8 and 16 bits): columns go in groups of 4 for M = 1, 2 for M =
/// 2, else 1 (each column has the bits it has alone), and when this block of
/// B spans more than kGemvPrefetchBytes / 2 (the axpy form's rule for all of
/// B, at 2 threads) each group prefetches the next. Measured on a Zen 5, 1 x
/// 4096 x 4096 from memory, one thread, against one column at a time without
/// prefetch (docs/kernels.md, "The dot form"): e5m2 49-50 against 26-32
/// GFLOP/s, 16-bit types 28.5-31 against 25.5-28; e4m3fn 32.5 either way,
/// bound by its decode, and 45-46.5 with the float32-bits decode (kBits).
/// Float32 B: one column at a time, no prefetch (one stream read faster from
/// memory: 15.6-16.2 GFLOP/s, against 13.3-14.6 in groups of 4 and 12.7-13.4
/// with the prefetch).
template <int M, class TA, class TB, bool kBits = false>
void gemv_dot_block(const kernels::strided<TA>& a, const kernels::strided<TB>& b, std::ptrdiff_t k_size,
                    std::ptrdiff_t j0, std::ptrdiff_t n, float* acc, std::ptrdiff_t ld, float* aw) {
  constexpr float kScale = kBits ? kGemvBitsScale : kGemvScale<TB>;
  for (int i = 0; i < M; ++i) {
    for (std::ptrdiff_t k = 0; k < k_size; ++k) {
      aw[i * k_size + k] = std::bit_cast<float>(kernels::widen_f32_bits(a.at(i, k))) * kScale;
    }
  }
  constexpr int G = sizeof(TB) == 4 ? 1 : M == 1 ? 4 : M == 2 ? 2 : 1;
  const bool prefetch =
      sizeof(TB) < 4 && n * b.cs * static_cast<std::ptrdiff_t>(sizeof(TB)) > kGemvPrefetchBytes / 2;
  for (std::ptrdiff_t j = 0; j < n; j += G) {
    const int count = static_cast<int>(n - j < G ? n - j : G);
    const int next_count = static_cast<int>(n - j - count < G ? n - j - count : G);  // 0 after the last group
    gemv_dot_columns<M, G, TA, TB, kBits>(a, b, k_size, j0 + j, count, j0 + j + count, next_count, prefetch,
                                          acc + j, ld, aw);
  }
}

}  // namespace scalify::kernels::avx2
SCALIFY_END_TARGET

#endif

#endif  // SCALIFY_KERNELS_GEMV_HPP_
