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
// Both forms are written once (kernels/detail/gemv-inl.hpp) and compiled for
// AVX2 and AVX-512, with the same bits on both.
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
#include "scalify/kernels/detail/widen_avx2.hpp"  // kernels::avx2::widen_pair, widen_lanes16, kGemvScale
#include "scalify/kernels/detail/widen_avx512.hpp"  // kernels::avx512::widen_pair, widen_lanes16

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // _mm_prefetch
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

#if SCALIFY_HAVE_X86_SIMD
namespace detail {

/// Prefetches the segments of B a streaming loop reads next (the next
/// sweep's rows, the next group's columns) in address order while it reads
/// the present ones: `count` segments of `bytes` bytes, laid end to end, one
/// cache line per 64 bytes. fetch_to(p), with the present segments read up
/// to byte p, fetches the next ones up to byte count * p of the whole run,
/// from where the last call stopped; nothing past the last segment.
template <int kMax>
struct segment_prefetcher {
  const char* seg[kMax];
  int count;
  std::ptrdiff_t bytes;
  std::ptrdiff_t pos = 0;  // bytes fetched
  std::ptrdiff_t off = 0;  // the next line's offset in segment s
  int s = 0;

  SCALIFY_ALWAYS_INLINE void fetch_to(std::ptrdiff_t p) {
    const std::ptrdiff_t target = count * p;
    for (; pos < target && s < count; pos += 64) {
      _mm_prefetch(seg[s] + off, _MM_HINT_T0);
      for (off += 64; off >= bytes && s < count; off -= bytes) ++s;  // segments under 64 bytes too
    }
  }
};

}  // namespace detail
#endif

}  // namespace scalify::kernels

// The axpy loop (B's rows contiguous) and the dot form (B's columns
// contiguous), once per SIMD path: kernels::avx2::gemv_block, gemv_dot_block,
// kernels::avx512::gemv_block, gemv_dot_block.
#define SCALIFY_PATH_INCLUDE "scalify/kernels/detail/gemv-inl.hpp"
#include "scalify/simd/foreach_path.hpp"

#endif  // SCALIFY_KERNELS_GEMV_HPP_
