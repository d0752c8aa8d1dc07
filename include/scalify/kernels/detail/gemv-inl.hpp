// scalify: the streaming small-M GEMM loop (axpy form), written once for
// every SIMD path.
//
// Included once per path by scalify/kernels/gemv.hpp (through
// scalify/simd/foreach_path.hpp, avx2 and avx512; the avx512bf16 path calls
// avx512's) with SCALIFY_SIMD_NS naming the path and SCALIFY_SIMD_BEGIN_TARGET /
// SCALIFY_SIMD_END_TARGET opening and closing its target region. `f32x` and
// its helpers come from scalify/simd/f32_<path>.hpp, `widen_pair` (2 *
// kF32Lanes values of B widened to float32) and `kGemvScale` from
// scalify/kernels/detail/widen_<path>.hpp.
//
// No include guard on purpose (one inclusion per path).
#if !defined(SCALIFY_SIMD_NS) || !defined(SCALIFY_SIMD_BEGIN_TARGET) || !defined(SCALIFY_SIMD_END_TARGET)
#error "Include scalify/kernels/gemv.hpp instead of this file."
#endif

SCALIFY_SIMD_BEGIN_TARGET
namespace scalify::kernels::SCALIFY_SIMD_NS {

using namespace ::scalify::simd::SCALIFY_SIMD_NS;  // the path's vector types (simd/)

/// SIMD version of kernels::gemv_block_scalar (same bits: each column's FMAs
/// in k order); B's rows contiguous. Four rows of B (eight for M = 1 over
/// float8) per sweep over the accumulators, so the accumulators are loaded and
/// stored once per 4 (8) k. For e4m3fn B, every |A| must be below 2^119 (A is
/// scaled by kGemvScale = 2^8, see widen16). kBits (e4m3fn B, M <=
/// kNoNanMaxRows: 3 on AVX2, 1 on AVX-512): the blocks without a NaN code
/// decode B straight to float32 bits
/// (widen_quad_bits_no_nan, value * 2^-120, A scaled by kGemvBitsScale); every
/// finite |A| must then be below 2^8 and MXCSR's DAZ off (gemv_block_with).
template <int M, class TA, class TB, bool kBits = false>
void gemv_block(const kernels::strided<TA>& a, const kernels::strided<TB>& b, std::ptrdiff_t k_size,
                std::ptrdiff_t j0, std::ptrdiff_t n, float* acc, std::ptrdiff_t ld) {
  // 8 rows per sweep for M = 1 over float8, else 4 (8 streams of float32 or
  // 16-bit types were slower). A B larger than kGemvPrefetchBytes: a
  // prefetch of the next sweep's rows, one per cache line, as many lines per
  // step as the step reads, in one of two orders:
  // - by column (float32 B, M = 2..4): the lines below the next sweep's
  //   columns [j, j + step), one in each of its kQ rows;
  // - by address (kLinear: M = 1 over 8- and 16-bit B): the next sweep's
  //   segments of rows one after the other, so the memory sees one stream.
  // Measured on a Zen 5 (docs/kernels.md, "The order of the prefetches"),
  // 1 x 4096 x 4096 from memory: by address 1.1-1.7x faster on one thread,
  // within the noise on two (faster on the avx2 path); slower over float32
  // and for M = 2..4.
  constexpr bool kNarrow = sizeof(TB) == 1;
  constexpr int kQ = M == 1 && kNarrow ? 8 : 4;
  constexpr bool kLinear = M == 1 && sizeof(TB) <= 2;
  const bool prefetch = k_size * b.rs * static_cast<std::ptrdiff_t>(sizeof(TB)) > kGemvPrefetchBytes;
  [[maybe_unused]] const std::ptrdiff_t row_bytes = n * static_cast<std::ptrdiff_t>(sizeof(TB));  // a row's segment
  constexpr std::ptrdiff_t kChunk = 2 * static_cast<std::ptrdiff_t>(kF32Lanes);  // columns per widen_pair
  for (int i = 0; i < M; ++i) {
    for (std::ptrdiff_t j = 0; j < n; ++j) acc[i * ld + j] = 0.0f;
  }
  for (std::ptrdiff_t k0 = 0; k0 < k_size; k0 += kQ) {
    const int kq = k_size - k0 < kQ ? static_cast<int>(k_size - k0) : kQ;
    const TB* rows[kQ];
    const TB* next[kQ];  // the rows of the next sweep, prefetched during this one
    float ai[kQ][M];
    f32x as[kQ][M];                    // A * kGemvScale: the halves' scale
    f32x as_bits[kBits ? kQ : 1][M];  // A * kGemvBitsScale: the float32 bits' scale
    for (int q = 0; q < kQ; ++q) {
      const std::ptrdiff_t k = k0 + (q < kq ? q : 0);
      rows[q] = b.data + k * b.rs + j0;
      const std::ptrdiff_t kn = k0 + kQ + q < k_size ? k0 + kQ + q : k_size - 1;
      next[q] = b.data + kn * b.rs + j0;
      for (int i = 0; i < M; ++i) {
        ai[q][i] = std::bit_cast<float>(kernels::widen_f32_bits(a.at(i, k)));
        as[q][i] = f32_set1(ai[q][i] * kGemvScale<TB>);
        if constexpr (kBits) as_bits[q][i] = f32_set1(ai[q][i] * kGemvBitsScale);
      }
    }
    std::ptrdiff_t j = 0;
    // Columns [j, j + kChunk * H) for every row of the sweep: each element's
    // k order stays, but H independent chains of FMAs per row of A hide the
    // FMA latency (one chunk is a chain of kQ dependent FMAs).
    auto step = [&](auto q_count, auto chunks) __attribute__((always_inline)) {  // int or integral_constant; chunks: H
      constexpr int H = decltype(chunks)::value;
      const std::ptrdiff_t end = n / (kChunk * H) * (kChunk * H);
      for (; j < end; j += kChunk * H) {
        // A sweep reads kQ rows over n columns (short runs for the hardware
        // prefetchers): fetch the next sweep's rows one cache line at a time.
        constexpr std::ptrdiff_t kStepBytes = kChunk * H * static_cast<std::ptrdiff_t>(sizeof(TB));
        if (prefetch && (kStepBytes >= 64 || (j * static_cast<std::ptrdiff_t>(sizeof(TB))) % 64 == 0)) {
          if constexpr (kLinear) {
            constexpr int kLines = kQ * (kStepBytes >= 64 ? static_cast<int>(kStepBytes / 64) : 1);
            // This step is at byte j * sizeof(TB) of its kQ rows' segments:
            // it fetches from byte kQ times that of the next sweep's
            // segments laid end to end (next[r] + off).
            const std::ptrdiff_t pos = j * static_cast<std::ptrdiff_t>(sizeof(TB)) * kQ;
            std::ptrdiff_t r = pos / row_bytes, off = pos - r * row_bytes;
            for (int l = 0; l < kLines && r < kQ; ++l) {
              _mm_prefetch(reinterpret_cast<const char*>(next[r]) + off, _MM_HINT_T0);
              for (off += 64; off >= row_bytes; off -= row_bytes) ++r;  // segments under 64 bytes too
            }
          } else {
            for (int q = 0; q < kQ; ++q) {
              const char* line = reinterpret_cast<const char*>(next[q] + j);
              for (std::ptrdiff_t off = 0; off < kStepBytes; off += 64) _mm_prefetch(line + off, _MM_HINT_T0);
            }
          }
        }
        // e4m3fn: each block is first computed with the cheaper decode
        // (widen_quad_no_nan, widen_pair_no_nan), which also checks the codes
        // for the NaN code; a block that had one (if any: none in finite
        // data) is computed again from the stored accumulators with
        // widen_pair, which keeps the NaN. Same bits either way.
        auto block = [&](auto exact) __attribute__((always_inline)) {  // one call per block: inlined
          constexpr bool kFast = std::is_same_v<TB, float8_e4m3fn> && !decltype(exact)::value;
          constexpr bool kFastBits = kFast && kBits;
          constexpr int kStep = kFast && H % 2 == 0 ? 2 : 1;  // chunks per widening
          const auto& scale = [&]() -> const auto& {
            if constexpr (kFastBits) {
              return as_bits;
            } else {
              return as;
            }
          }();
          f32x c[H][2][M];
#pragma GCC unroll 4
          for (int h = 0; h < H; ++h) {
#pragma GCC unroll 4
            for (int i = 0; i < M; ++i) {
              c[h][0][i] = f32_load(acc + i * ld + j + kChunk * h);
              c[h][1][i] = f32_load(acc + i * ld + j + kChunk * h + kChunk / 2);
            }
          }
          [[maybe_unused]] nan_screen screen;
          for (int q = 0; q < q_count; ++q) {
#pragma GCC unroll 4
            for (int h = 0; h < H; h += kStep) {
              f32x w[4];
              if constexpr (kFastBits && kStep == 2) {
                widen_quad_bits_no_nan(rows[q] + j + kChunk * h, w, screen);
              } else if constexpr (kFastBits) {
                widen_pair_bits_no_nan(rows[q] + j + kChunk * h, w[0], w[1], screen);
              } else if constexpr (kStep == 2) {
                widen_quad_no_nan(rows[q] + j + kChunk * h, w, screen);
              } else if constexpr (kFast) {
                widen_pair_no_nan(rows[q] + j + kChunk * h, w[0], w[1], screen);
              } else {
                widen_pair(rows[q] + j + kChunk * h, w[0], w[1]);
              }
#pragma GCC unroll 2
              for (int g = 0; g < kStep; ++g) {
#pragma GCC unroll 4
                for (int i = 0; i < M; ++i) {
                  c[h + g][0][i] = f32_fmadd(scale[q][i], w[2 * g], c[h + g][0][i]);
                  c[h + g][1][i] = f32_fmadd(scale[q][i], w[2 * g + 1], c[h + g][1][i]);
                }
              }
            }
          }
          if constexpr (kFast) {
            if (screen.hit()) return false;  // acc untouched: the caller redoes the block
          }
#pragma GCC unroll 4
          for (int h = 0; h < H; ++h) {
#pragma GCC unroll 4
            for (int i = 0; i < M; ++i) {
              f32_store(acc + i * ld + j + kChunk * h, c[h][0][i]);
              f32_store(acc + i * ld + j + kChunk * h + kChunk / 2, c[h][1][i]);
            }
          }
          return true;
        };
        if constexpr (std::is_same_v<TB, float8_e4m3fn> && M <= kNoNanMaxRows) {
          if (!block(std::false_type{})) block(std::true_type{});
        } else {
          block(std::true_type{});
        }
      }
    };
    // Columns per step: 64 for M = 1 over float8 or float32, 32 over other 8-
    // and 16-bit types (for M = 4 on AVX2, 16 accumulators: a few spill, still
    // faster), 16 over float32 for M > 1; at least one chunk. On AVX2,
    // Mx4096x4096 from DRAM, 1 thread, GFLOP/s with 16 columns -> these: e5m2
    // M = 1 17.2 -> 23.5 (32 columns: 21.3), M = 2 22 -> 40, M = 3 23 -> 47,
    // M = 4 23 -> 39; float16 M = 1 17.2 -> 18.7, M = 2..4 19-22 -> 36-46.
    // float32, M = 1, Zen 5 with the prefetch: 16 -> 64 columns 13.6 -> 14.6
    // (avx512), 12.7 -> 13.3 (avx2).
    constexpr std::ptrdiff_t kColumns = sizeof(TB) > 2 ? (M == 1 ? 64 : 16) : M == 1 && kNarrow ? 64 : 32;
    constexpr int kH = kColumns / kChunk > 1 ? static_cast<int>(kColumns / kChunk) : 1;
    if (kq == kQ) {
      step(std::integral_constant<int, kQ>{}, std::integral_constant<int, kH>{});  // fully unrolled
      step(std::integral_constant<int, kQ>{}, std::integral_constant<int, 1>{});
    } else {
      step(kq, std::integral_constant<int, kH>{});
      step(kq, std::integral_constant<int, 1>{});
    }
    for (; j < n; ++j) {
      for (int q = 0; q < kq; ++q) {
        const float w = std::bit_cast<float>(kernels::widen_f32_bits(rows[q][j]));
        for (int i = 0; i < M; ++i) acc[i * ld + j] = std::fma(ai[q][i], w, acc[i * ld + j]);
      }
    }
  }
}

}  // namespace scalify::kernels::SCALIFY_SIMD_NS
SCALIFY_SIMD_END_TARGET
