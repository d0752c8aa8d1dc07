// scalify: GEMM packing, where the inputs are widened (once per element).
//
// The micro-kernels read A and B from packed panels (kernels/microkernels.hpp):
//
//   A panel (rows i0 .. i0 + MR):    a[u * MR + i] = unit u of row i0 + i
//   B panel (columns j0 .. j0 + NR): b[u * NR + j] = unit u of column j0 + j
//
// A unit is 32 bits: a float32 (packing::f32; unit u = k) or two bfloat16
// (packing::bf16x2; unit u = k 2u in the low half, 2u + 1 in the high half).
// Rows, columns and k beyond the matrix are zeros, so kernels see full tiles.
// e4m3fn and e5m2 widen exactly to float32 and to bfloat16; float16 to float32
// only; bfloat16 is already bfloat16.
#ifndef SCALIFY_KERNELS_PACK_HPP_
#define SCALIFY_KERNELS_PACK_HPP_

#include <bit>          // std::bit_cast
#include <cstddef>      // ptrdiff_t
#include <cstdint>      // uint16_t, uint32_t
#include <type_traits>  // std::is_same_v

#include "scalify/formats/float16.hpp"      // float16, bfloat16
#include "scalify/formats/float8.hpp"       // float8_e4m3fn, float8_e5m2
#include "scalify/kernels/microkernels.hpp"  // packing
#include "scalify/kernels/detail/widen_avx2.hpp"       // kernels::avx2::widen8, widen8_no_nan, has_nan_code

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2
#endif

namespace scalify::kernels {

/// The element types gemm() reads: float8_e4m3fn, float8_e5m2, float16, bfloat16, float.
template <class T>
concept gemm_input = std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2> ||
                     std::is_same_v<T, float16> || std::is_same_v<T, bfloat16> || std::is_same_v<T, float>;

/// Types that widen exactly to bfloat16 (the avx512bf16 kernel's inputs).
template <class T>
inline constexpr bool kExactInBf16 =
    std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2> || std::is_same_v<T, bfloat16>;

/// A matrix seen through strides: element (r, c) is data[r * rs + c * cs].
template <class T>
struct strided {
  const T* data;
  std::ptrdiff_t rs, cs;
  const T& at(std::ptrdiff_t r, std::ptrdiff_t c) const { return data[r * rs + c * cs]; }
};

/// The float32 bits of x (exact).
template <gemm_input T>
inline uint32_t widen_f32_bits(T x) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return static_cast<uint32_t>(bfloat16_bits(x)) << 16;
  } else {
    return std::bit_cast<uint32_t>(static_cast<float>(x));  // float8: table lookup; float16: exact
  }
}

/// The bfloat16 bits of x, for the types exact in bfloat16.
template <gemm_input T>
  requires kExactInBf16<T>
inline uint32_t widen_bf16_bits(T x) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return bfloat16_bits(x);
  } else {
    return widen_f32_bits(x) >> 16;  // float8 values have at most 3 significand bits: the low half is 0
  }
}

/// One unit of `src` at (r, k) along k (k = 2u, 2u + 1 for pairs); out of range is 0.
template <packing P, gemm_input T>
inline uint32_t pack_unit(const strided<T>& s, std::ptrdiff_t r, std::ptrdiff_t u, std::ptrdiff_t k_size,
                          bool k_is_col) {
  auto get = [&](std::ptrdiff_t k) { return k_is_col ? s.at(r, k) : s.at(k, r); };
  if constexpr (P == packing::f32) {
    return widen_f32_bits(get(u));
  } else {
    if constexpr (kExactInBf16<T>) {
      const uint32_t lo = widen_bf16_bits(get(2 * u));
      const uint32_t hi = 2 * u + 1 < k_size ? widen_bf16_bits(get(2 * u + 1)) : 0u;
      return lo | (hi << 16);
    } else {
      return 0u;  // never used: select_microkernel() picks the float32 kernel for these types
    }
  }
}

/// Packs rows [i0, i0 + mr) of op(A) (M x K, `a`) into one A panel of
/// ceil(K / k_per_unit) * mr units; rows >= M are zero.
template <packing P, gemm_input T>
void pack_a_panel(const strided<T>& a, std::ptrdiff_t m_size, std::ptrdiff_t k_size, std::ptrdiff_t i0, int mr,
                  uint32_t* dst) {
  const std::ptrdiff_t ku = P == packing::f32 ? k_size : (k_size + 1) / 2;
  const std::ptrdiff_t rows = m_size - i0 < mr ? m_size - i0 : mr;
  for (std::ptrdiff_t i = 0; i < rows; ++i) {
    for (std::ptrdiff_t u = 0; u < ku; ++u) dst[u * mr + i] = pack_unit<P>(a, i0 + i, u, k_size, true);
  }
  for (std::ptrdiff_t i = rows; i < mr; ++i) {
    for (std::ptrdiff_t u = 0; u < ku; ++u) dst[u * mr + i] = 0u;
  }
}

/// Units [u0, u1) of the B panel of columns [j0, j0 + nr) of op(B) (K x N,
/// `b`), unit u at dst + (u - u0) * nr; columns >= N are zero.
template <packing P, gemm_input T>
void pack_b_panel_units(const strided<T>& b, std::ptrdiff_t k_size, std::ptrdiff_t n_size, std::ptrdiff_t j0, int nr,
                        std::ptrdiff_t u0, std::ptrdiff_t u1, uint32_t* dst) {
  const std::ptrdiff_t cols = n_size - j0 < nr ? n_size - j0 : nr;
  if (P == packing::f32 && b.cs == 1) {
    // Row-major B: each k gives `cols` contiguous elements.
    for (std::ptrdiff_t u = u0; u < u1; ++u) {
      const T* row = b.data + u * b.rs + j0;
      uint32_t* out = dst + (u - u0) * nr;
      for (std::ptrdiff_t j = 0; j < cols; ++j) out[j] = widen_f32_bits(row[j]);
      for (std::ptrdiff_t j = cols; j < nr; ++j) out[j] = 0u;
    }
    return;
  }
  for (std::ptrdiff_t u = u0; u < u1; ++u) {
    uint32_t* out = dst + (u - u0) * nr;
    for (std::ptrdiff_t j = 0; j < cols; ++j) out[j] = pack_unit<P>(b, j0 + j, u, k_size, false);
    for (std::ptrdiff_t j = cols; j < nr; ++j) out[j] = 0u;
  }
}

/// Packs columns [j0, j0 + nr) of op(B) (K x N, `b`) into one B panel of
/// ceil(K / k_per_unit) * nr units; columns >= N are zero.
template <packing P, gemm_input T>
void pack_b_panel(const strided<T>& b, std::ptrdiff_t k_size, std::ptrdiff_t n_size, std::ptrdiff_t j0, int nr,
                  uint32_t* dst) {
  pack_b_panel_units<P>(b, k_size, n_size, j0, nr, 0, P == packing::f32 ? k_size : (k_size + 1) / 2, dst);
}

}  // namespace scalify::kernels

#if SCALIFY_HAVE_X86_SIMD
SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::kernels::avx2 {

/// Calls f(widen), widen(p) being 8 values of T at p widened to float32:
/// widen8_no_nan when `nan` is false (no e4m3fn NaN code among the values f
/// widens; has_nan_code), else widen8. One instantiation for types other
/// than e4m3fn (their widen8 has no NaN step).
struct widen8_fn {
  template <class T>
  SCALIFY_ALWAYS_INLINE __m256 operator()(const T* p) const {
    return widen8(p);
  }
};
struct widen8_no_nan_fn {
  template <class T>
  SCALIFY_ALWAYS_INLINE __m256 operator()(const T* p) const {
    return widen8_no_nan(p);
  }
};
template <class T, class F>
SCALIFY_ALWAYS_INLINE void with_widen8(bool nan, F&& f) {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    if (!nan) return f(widen8_no_nan_fn{});
  }
  (void)nan;
  f(widen8_fn{});
}

/// The 8 x 8 transpose of r[0..7] (8 floats each): t[c] = (r[0][c], ...,
/// r[7][c]). 24 shuffles; zero rows cost less (folded by the compiler).
SCALIFY_ALWAYS_INLINE void transpose8x8(const __m256 (&r)[8], __m256 (&t)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  t[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  t[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  t[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  t[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  t[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  t[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  t[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  t[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/// Rows [u0, u1) of every B panel covering columns [j0, j0 + n) of a B with
/// contiguous rows (b.cs == 1), row u of panel p at dst + p * ps + (u - u0) *
/// nr (ps = k_size * nr for whole panels, less for a slab): the source is
/// read row by row, sequentially (a panel at a time would read 16-64 bytes per
/// row with a stride of a whole row: TLB- and prefetch-hostile). Same bits as
/// pack_b_panel<packing::f32>.
template <class T>
void pack_b_rows(const kernels::strided<T>& b, std::ptrdiff_t k_size, std::ptrdiff_t u0, std::ptrdiff_t u1,
                 std::ptrdiff_t j0, std::ptrdiff_t n, int nr, uint32_t* dst, std::ptrdiff_t ps) {
  const std::ptrdiff_t full = n / nr, rest = n - full * nr;
  // Rows are read in short runs (n elements, a row stride apart: a new 4 KiB
  // page per row for large B, which the hardware prefetchers do not cross):
  // prefetch kAhead rows ahead, every cache line of the run.
  constexpr std::ptrdiff_t kAhead = 8;
  const std::ptrdiff_t run_bytes = n * static_cast<std::ptrdiff_t>(sizeof(T));
  for (std::ptrdiff_t u = u0; u < u1; ++u) {
    const T* row = b.data + u * b.rs + j0;
    if (u + kAhead < k_size) {
      const char* ahead = reinterpret_cast<const char*>(row + kAhead * b.rs);
      for (std::ptrdiff_t off = 0; off < run_bytes; off += 64) _mm_prefetch(ahead + off, _MM_HINT_T1);
    }
    with_widen8<T>(has_nan_code(row, full * nr), [&](auto widen) {
      for (std::ptrdiff_t p = 0; p < full; ++p) {
        float* out = reinterpret_cast<float*>(dst + p * ps + (u - u0) * nr);
        for (int j = 0; j < nr; j += 8) _mm256_storeu_ps(out + j, widen(row + p * nr + j));
      }
    });
    if (rest > 0) {
      uint32_t* out = dst + full * ps + (u - u0) * nr;
      for (std::ptrdiff_t j = 0; j < rest; ++j) out[j] = kernels::widen_f32_bits(row[full * nr + j]);
      for (std::ptrdiff_t j = rest; j < nr; ++j) out[j] = 0u;
    }
  }
}

/// Units [u0, u1) of every B panel covering columns [j0, j0 + n) of a B with
/// contiguous columns (b.rs == 1: op(B) is a row-major matrix transposed, as
/// W^T in the backward pass's dx = dy W^T), unit u of panel p at dst + p * ps +
/// (u - u0) * nr, as pack_b_rows. A column's units are contiguous, a panel's
/// unit is a row: 8 columns x 8 units are widened (a vector per column),
/// transposed in registers and stored as 8 units of 8 columns. The units past
/// the last whole 8 and a partial panel's columns past the last whole 8 go one
/// at a time, columns >= n are zero; nothing is read past unit u1 of a column.
/// Same bits as pack_b_panel_units<packing::f32>, NaN payloads aside (widen8,
/// as pack_a_panel_cols and pack_b_rows: a quiet NaN of the same sign).
template <class T>
void pack_b_cols(const kernels::strided<T>& b, std::ptrdiff_t k_size, std::ptrdiff_t u0, std::ptrdiff_t u1,
                 std::ptrdiff_t j0, std::ptrdiff_t n, int nr, uint32_t* dst, std::ptrdiff_t ps) {
  (void)k_size;
  const std::ptrdiff_t u8 = u0 + (u1 - u0) / 8 * 8, cs = b.cs;
  for (std::ptrdiff_t p = 0; p * nr < n; ++p) {
    const std::ptrdiff_t c0 = j0 + p * nr, cols = n - p * nr < nr ? n - p * nr : nr, cols8 = cols / 8 * 8;
    uint32_t* panel = dst + p * ps;
    for (std::ptrdiff_t u = u0; u < u8; u += 8) {
      float* out = reinterpret_cast<float*>(panel + (u - u0) * nr);
      for (std::ptrdiff_t j = 0; j < cols8; j += 8) {
        const T* s = b.data + u + (c0 + j) * cs;  // unit u of column c0 + j (b.rs == 1)
        __m256 r[8], t[8];
        for (int q = 0; q < 8; ++q) r[q] = widen8(s + q * cs);  // units u .. u + 7 of column c0 + j + q
        transpose8x8(r, t);
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(out + j + q * nr, t[q]);  // unit u + q: columns j .. j + 7
      }
    }
    for (std::ptrdiff_t u = u0; u < u1; ++u) {
      uint32_t* out = panel + (u - u0) * nr;
      for (std::ptrdiff_t j = u < u8 ? cols8 : 0; j < cols; ++j) out[j] = kernels::widen_f32_bits(b.at(u, c0 + j));
      for (std::ptrdiff_t j = cols; j < nr; ++j) out[j] = 0u;
    }
  }
}

/// Fills an A panel (mr rows, ku units) row by row: units [0, ku8) eight at a
/// time from units8(i, u) (a vector of units u .. u + 7 of row i), scattered
/// into the panel; the rest one at a time from unit(i, u); rows >= `rows` zero.
template <class Units8, class Unit>
SCALIFY_ALWAYS_INLINE void scatter_panel_rows(std::ptrdiff_t rows, std::ptrdiff_t ku, std::ptrdiff_t ku8, int mr,
                                              uint32_t* dst, Units8 units8, Unit unit) {
  for (std::ptrdiff_t i = 0; i < rows; ++i) {
    alignas(32) uint32_t t[8];
    for (std::ptrdiff_t u = 0; u < ku8; u += 8) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(t), units8(i, u));
      for (int q = 0; q < 8; ++q) dst[(u + q) * mr + i] = t[q];
    }
    for (std::ptrdiff_t u = ku8; u < ku; ++u) dst[u * mr + i] = unit(i, u);
  }
  for (std::ptrdiff_t i = rows; i < mr; ++i) {
    for (std::ptrdiff_t u = 0; u < ku; ++u) dst[u * mr + i] = 0u;
  }
}

/// The AVX2 tile's panels (pack_a_panel_rows with rows == mr == R, R = 6 or
/// the short tile's 5): R rows x 8 k widened into registers, transposed (8 x 8
/// with 8 - R zero rows), and stored as 8 units of R floats. Each 8-float store
/// spills 8 - R lanes into the next unit, which the next store overwrites; the
/// last unit is stored as 4 + (R - 4) floats (never past the panel).
template <int R, class T>
void pack_a_panel_rows_transposed(const kernels::strided<T>& a, std::ptrdiff_t k_size, std::ptrdiff_t i0,
                                  uint32_t* dst) {
  static_assert(R == 5 || R == 6);
  const std::ptrdiff_t k8 = k_size / 8 * 8;
  const T* r[R];
  bool nan = false;
  for (int i = 0; i < R; ++i) {
    r[i] = a.data + (i0 + i) * a.rs;
    nan = nan || has_nan_code(r[i], k8);
  }
  float* out = reinterpret_cast<float*>(dst);
  const __m256 z = _mm256_setzero_ps();
  with_widen8<T>(nan, [&](auto widen8) {
    for (std::ptrdiff_t u = 0; u < k8; u += 8) {
      __m256 rows8[8];
      for (int i = 0; i < 8; ++i) rows8[i] = i < R ? widen8(r[i] + u) : z;
      __m256 t[8];
      transpose8x8(rows8, t);  // t[q]: k = u + q, rows 0..R-1 and zeros
      float* o = out + u * R;
      // In order: each store's zeros are overwritten by the next; the last stores its R only.
      for (int q = 0; q < 7; ++q) _mm256_storeu_ps(o + R * q, t[q]);
      _mm_storeu_ps(o + 7 * R, _mm256_castps256_ps128(t[7]));
      if constexpr (R == 6) {
        _mm_storel_pi(reinterpret_cast<__m64*>(o + 7 * R + 4), _mm256_extractf128_ps(t[7], 1));
      } else {
        _mm_store_ss(o + 7 * R + 4, _mm256_extractf128_ps(t[7], 1));
      }
    }
  });
  for (std::ptrdiff_t i = 0; i < R; ++i) {
    for (std::ptrdiff_t u = k8; u < k_size; ++u) dst[u * R + i] = kernels::widen_f32_bits(r[i][u]);
  }
}

/// pack_a_panel<packing::f32> for an A with contiguous rows (a.cs == 1): each
/// row widened 8 at a time, then scattered into the panel (transposed in
/// registers for the AVX2 tiles' full panels). Same bits.
template <class T>
void pack_a_panel_rows(const kernels::strided<T>& a, std::ptrdiff_t m_size, std::ptrdiff_t k_size,
                       std::ptrdiff_t i0, int mr, uint32_t* dst) {
  const std::ptrdiff_t rows = m_size - i0 < mr ? m_size - i0 : mr;
  const std::ptrdiff_t k8 = k_size / 8 * 8;
  if (rows == mr && mr == 6) return pack_a_panel_rows_transposed<6>(a, k_size, i0, dst);
  if (rows == mr && mr == 5) return pack_a_panel_rows_transposed<5>(a, k_size, i0, dst);
  auto row = [&](std::ptrdiff_t i) { return a.data + (i0 + i) * a.rs; };
  bool nan = false;
  for (std::ptrdiff_t i = 0; i < rows && !nan; ++i) nan = has_nan_code(row(i), k8);
  with_widen8<T>(nan, [&](auto widen) {
    scatter_panel_rows(
        rows, k_size, k8, mr, dst,
        [&](std::ptrdiff_t i, std::ptrdiff_t u) { return _mm256_castps_si256(widen(row(i) + u)); },
        [&](std::ptrdiff_t i, std::ptrdiff_t u) { return kernels::widen_f32_bits(row(i)[u]); });
  });
}

/// pack_a_panel<packing::f32> for an A with contiguous columns (a.rs == 1:
/// op(A) is a row-major matrix transposed, as the backward pass's x^T and
/// W^T): the mr values of each unit are contiguous, widened 8 at a time and
/// stored in place. Each 8-float store may spill into the next unit, which
/// that unit's stores overwrite; the last unit goes through a buffer (never
/// past the panel). The vectors read up to 8 * ceil(mr / 8) values of a
/// column, so a panel whose reads would pass the end of op(A)'s columns (or a
/// partial one) takes the scalar routine. Same bits.
template <class T>
void pack_a_panel_cols(const kernels::strided<T>& a, std::ptrdiff_t m_size, std::ptrdiff_t k_size,
                       std::ptrdiff_t i0, int mr, uint32_t* dst) {
  const std::ptrdiff_t vectors = (mr + 7) / 8;
  if (m_size - i0 < vectors * 8 || k_size == 0 || vectors > 4) {
    return kernels::pack_a_panel<packing::f32>(a, m_size, k_size, i0, mr, dst);
  }
  float* out = reinterpret_cast<float*>(dst);
  const T* col = a.data + i0;  // a.rs == 1: unit u's values at col + u * a.cs
  with_widen8<T>(true, [&](auto widen8) {
    for (std::ptrdiff_t u = 0; u + 1 < k_size; ++u) {
      for (std::ptrdiff_t v = 0; v < vectors; ++v) _mm256_storeu_ps(out + u * mr + 8 * v, widen8(col + u * a.cs + 8 * v));
    }
    alignas(32) float last[32];
    for (std::ptrdiff_t v = 0; v < vectors; ++v) _mm256_store_ps(last + 8 * v, widen8(col + (k_size - 1) * a.cs + 8 * v));
    for (int i = 0; i < mr; ++i) out[(k_size - 1) * mr + i] = last[i];
  });
}

/// 8 bfloat16-pair units from two float32 vectors of values exact in
/// bfloat16 (their low halves are zero): the high half of `even` in the low
/// 16 bits, the high half of `odd` in the high 16 bits.
SCALIFY_ALWAYS_INLINE __m256i bf16_pairs(__m256 even, __m256 odd) {
  return _mm256_or_si256(_mm256_srli_epi32(_mm256_castps_si256(even), 16),
                         _mm256_and_si256(_mm256_castps_si256(odd), _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

/// 8 bfloat16-pair units (k, k + 1), (k + 2, k + 3), ... from 16 consecutive
/// values of a row (exact in bfloat16), in order.
template <class T, class Widen>
SCALIFY_ALWAYS_INLINE __m256i bf16_pairs_along(const T* p, Widen widen8) {
  // Bytes 2, 3 (high half of value 2q) and 6, 7 (of value 2q + 1) of each
  // pair of floats make unit q: 2 units per 128-bit lane, in its low 8 bytes.
  const __m256i pick = _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i s0 = _mm256_shuffle_epi8(_mm256_castps_si256(widen8(p)), pick);      // units 0 1 | 2 3
  const __m256i s1 = _mm256_shuffle_epi8(_mm256_castps_si256(widen8(p + 8)), pick);  // units 4 5 | 6 7
  return _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(s0, s1), 0xD8);  // (0 1, 4 5, 2 3, 6 7) -> 0..7
}

/// pack_b_rows for packing::bf16x2 (types exact in bfloat16): unit rows
/// [u0, u1) of every panel (unit u of panel p at dst + p * ps + (u - u0) * nr),
/// unit u pairing rows 2u and 2u + 1 of B (a zero row past K). Same bits as pack_b_panel<packing::bf16x2>, NaN payloads aside.
template <class T>
void pack_b_rows_bf16(const kernels::strided<T>& b, std::ptrdiff_t k_size, std::ptrdiff_t u0, std::ptrdiff_t u1,
                      std::ptrdiff_t j0, std::ptrdiff_t n, int nr, uint32_t* dst, std::ptrdiff_t ps) {
  const std::ptrdiff_t full = n / nr, rest = n - full * nr;
  for (std::ptrdiff_t u = u0; u < u1; ++u) {
    const T* even = b.data + 2 * u * b.rs + j0;
    const bool has_odd = 2 * u + 1 < k_size;
    const T* odd = has_odd ? even + b.rs : even;
    const bool nan = has_nan_code(even, full * nr) || (has_odd && has_nan_code(odd, full * nr));
    with_widen8<T>(nan, [&](auto widen8) {
      for (std::ptrdiff_t p = 0; p < full; ++p) {
        uint32_t* out = dst + p * ps + (u - u0) * nr;
        for (int j = 0; j < nr; j += 8) {
          const __m256 e = widen8(even + p * nr + j);
          const __m256 o = has_odd ? widen8(odd + p * nr + j) : _mm256_setzero_ps();
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), bf16_pairs(e, o));
        }
      }
    });
    if (rest > 0) {
      uint32_t* out = dst + full * ps + (u - u0) * nr;
      for (std::ptrdiff_t j = 0; j < rest; ++j) {
        out[j] = kernels::pack_unit<kernels::packing::bf16x2>(b, j0 + full * nr + j, u, k_size, false);
      }
      for (std::ptrdiff_t j = rest; j < nr; ++j) out[j] = 0u;
    }
  }
}

/// pack_a_panel<packing::bf16x2> for an A with contiguous rows (a.cs == 1):
/// each row paired 16 values at a time, then scattered into the panel. Same
/// bits, NaN payloads aside.
template <class T>
void pack_a_panel_rows_bf16(const kernels::strided<T>& a, std::ptrdiff_t m_size, std::ptrdiff_t k_size,
                            std::ptrdiff_t i0, int mr, uint32_t* dst) {
  const std::ptrdiff_t ku = (k_size + 1) / 2, ku8 = k_size / 16 * 8;  // units of whole 16-value runs
  const std::ptrdiff_t rows = m_size - i0 < mr ? m_size - i0 : mr;
  bool nan = false;
  for (std::ptrdiff_t i = 0; i < rows && !nan; ++i) nan = has_nan_code(a.data + (i0 + i) * a.rs, 2 * ku8);
  with_widen8<T>(nan, [&](auto widen) {
    scatter_panel_rows(
        rows, ku, ku8, mr, dst,
        [&](std::ptrdiff_t i, std::ptrdiff_t u) { return bf16_pairs_along(a.data + (i0 + i) * a.rs + 2 * u, widen); },
        [&](std::ptrdiff_t i, std::ptrdiff_t u) {
          return kernels::pack_unit<kernels::packing::bf16x2>(a, i0 + i, u, k_size, true);
        });
  });
}

}  // namespace scalify::kernels::avx2
SCALIFY_END_TARGET
#endif

#endif  // SCALIFY_KERNELS_PACK_HPP_
