// scalify: the streaming small-M GEMM loops (the axpy form, B's rows
// contiguous; the dot form, B's columns contiguous), written once for every
// SIMD path.
//
// Included once per path by scalify/kernels/gemv.hpp (through
// scalify/simd/foreach_path.hpp, avx2 and avx512; the avx512bf16 path calls
// avx512's) with SCALIFY_SIMD_NS naming the path and SCALIFY_SIMD_BEGIN_TARGET /
// SCALIFY_SIMD_END_TARGET opening and closing its target region. `f32x` and
// its helpers come from scalify/simd/f32_<path>.hpp, `widen_pair` (2 *
// kF32Lanes values of B widened to float32), `widen_lanes16` (16 values) and
// `kGemvScale` from scalify/kernels/detail/widen_<path>.hpp.
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
  const std::ptrdiff_t row_bytes = n * static_cast<std::ptrdiff_t>(sizeof(TB));  // a row's segment
  constexpr std::ptrdiff_t kChunk = 2 * static_cast<std::ptrdiff_t>(kF32Lanes);  // columns per widen_pair
  for (int i = 0; i < M; ++i) {
    for (std::ptrdiff_t j = 0; j < n; ++j) acc[i * ld + j] = 0.0f;
  }
  for (std::ptrdiff_t k0 = 0; k0 < k_size; k0 += kQ) {
    const int kq = k_size - k0 < kQ ? static_cast<int>(k_size - k0) : kQ;
    const TB* rows[kQ];
    // The next sweep's rows (their segments: next.seg), prefetched during this one.
    kernels::detail::segment_prefetcher<kQ> next{{}, kQ, row_bytes};
    float ai[kQ][M];
    f32x as[kQ][M];                    // A * kGemvScale: the halves' scale
    f32x as_bits[kBits ? kQ : 1][M];  // A * kGemvBitsScale: the float32 bits' scale
    for (int q = 0; q < kQ; ++q) {
      const std::ptrdiff_t k = k0 + (q < kq ? q : 0);
      rows[q] = b.data + k * b.rs + j0;
      const std::ptrdiff_t kn = k0 + kQ + q < k_size ? k0 + kQ + q : k_size - 1;
      next.seg[q] = reinterpret_cast<const char*>(b.data + kn * b.rs + j0);
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
            // This step reads its rows' segments up to byte (j + step) *
            // sizeof(TB): the next sweep's, laid end to end, up to kQ times that.
            constexpr std::ptrdiff_t kAhead = kStepBytes >= 64 ? kStepBytes : 64;
            next.fetch_to(j * static_cast<std::ptrdiff_t>(sizeof(TB)) + kAhead);
          } else {
            for (int q = 0; q < kQ; ++q) {
              const char* line = next.seg[q] + j * static_cast<std::ptrdiff_t>(sizeof(TB));
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

// ---------------------------------------------------------------------------
// The dot form: B's columns contiguous (b.rs == 1).

/// The dot-product form over `count` <= G columns of B at once (B's columns
/// contiguous, b.rs == 1): acc[i * ld + g] = sum_k A(i, k) B(k, jb + g) for g <
/// count, with A already widened and scaled by kGemvScale<TB> in `aw` (M rows
/// of k_size floats). Each column's sum is its own, the same on every path:
/// partial sums in 16 lanes (lane l takes k = l, l + 16, ... by FMA; two
/// vectors on AVX2, one on AVX-512), lanes l and l + 8 added, those 8 added in
/// a fixed order, then the k_size % 16 last products by FMA. Summing G columns
/// together only gives the core G M (AVX2: 2 G M) independent chains of FMAs:
/// one column alone waits on the FMA latency when M is small. With count < G
/// the last column is summed again in the spare places (one instantiation for
/// every count). With `prefetch`, the next_count columns from j_next on (the
/// next group's) are prefetched as these are read. kBits (e4m3fn B): `aw`
/// holds A * kGemvBitsScale instead, and the columns without a NaN code decode
/// straight to float32 bits (widen_quad_bits_no_nan; the conditions of
/// gemv_block_with).
template <int M, int G, class TA, class TB, bool kBits = false>
SCALIFY_ALWAYS_INLINE void gemv_dot_columns(const kernels::strided<TA>& a, const kernels::strided<TB>& b,
                                            std::ptrdiff_t k_size, std::ptrdiff_t jb, int count,
                                            std::ptrdiff_t j_next, int next_count, bool prefetch, float* acc,
                                            std::ptrdiff_t ld, const float* aw) {
  constexpr std::ptrdiff_t kL = kF32Lanes;
  constexpr int R = static_cast<int>(16 / kL);  // vectors per 16 lanes
  const std::ptrdiff_t k16 = k_size / 16 * 16;
  const TB* col[G];
  for (int g = 0; g < G; ++g) col[g] = b.data + (jb + (g < count ? g : count - 1)) * b.cs;
  // The next group's columns, prefetched in address order as this group's
  // are read: next_count bytes of them per byte of a column read here (their
  // segments laid end to end).
  kernels::detail::segment_prefetcher<G> next{{}, next_count, k_size * static_cast<std::ptrdiff_t>(sizeof(TB))};
  const std::ptrdiff_t jn = next_count > 0 ? j_next : jb;  // no next group: any column of B (not fetched)
  for (int g = 0; g < G; ++g) {
    next.seg[g] = reinterpret_cast<const char*>(b.data + (jn + (g < next_count ? g : 0)) * b.cs);
  }
  auto prefetch_to = [&](std::ptrdiff_t k_end) __attribute__((always_inline)) {
    next.fetch_to(k_end * static_cast<std::ptrdiff_t>(sizeof(TB)));
  };
  f32x s[G][M][R];  // s[g][i][v]: lanes v * kL .. v * kL + kL - 1 of the 16
  // A at the scale of B's decode: `aw` as stored, or, for a decode to value
  // * 2^-8 after `aw` was scaled for the bits decode, times 2^-112 (exact: A *
  // 2^8 is a float).
  auto a_at = [&](auto bits_decode, std::ptrdiff_t i, std::ptrdiff_t kk) __attribute__((always_inline)) {
    const f32x v = f32_load(aw + i * k_size + kk);
    if constexpr (kBits && !decltype(bits_decode)::value) return f32_mul(v, f32_set1(kGemvScale<TB> / kGemvBitsScale));
    return v;
  };
  // The products of `n_vec` vectors of codes from k on: vector v holds k + v
  // * kL .. k + v * kL + kL - 1, which go to lanes (v % R) * kL ..
  auto accumulate = [&](auto bits_decode, int g, std::ptrdiff_t k, const f32x* w, auto n_vec)
                        __attribute__((always_inline)) {
#pragma GCC unroll 4
    for (int v = 0; v < decltype(n_vec)::value; ++v) {
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) s[g][i][v % R] = f32_fmadd(a_at(bits_decode, i, k + v * kL), w[v], s[g][i][v % R]);
    }
  };
  // e4m3fn: the columns are widened without the NaN step and checked for the
  // NaN code (see gemv_block); if one had it, the G columns are summed again
  // with widen_lanes16 (the same bits for the columns without one).
  auto sum = [&](auto exact) __attribute__((always_inline)) {
    [[maybe_unused]] nan_screen screen;
    constexpr bool kFast = std::is_same_v<TB, float8_e4m3fn> && !decltype(exact)::value;
    using fast_bits = std::integral_constant<bool, kFast && kBits>;
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        for (int v = 0; v < R; ++v) s[g][i][v] = f32_zero();
      }
    }
    std::ptrdiff_t k = 0;
    // e4m3fn: 4 vectors of codes (32 on AVX2, 64 on AVX-512) per decode
    // without the NaN step; the rest of k16 (under 4 * kL codes per column:
    // at most 1 step of 16 on AVX2, 3 on AVX-512) in the loop below.
    if constexpr (kFast) {
      for (; k + 4 * kL <= k16; k += 4 * kL) {
        if (prefetch) prefetch_to(k + 4 * kL);
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) {
          f32x w[4];
          if constexpr (kBits) {
            widen_quad_bits_no_nan(col[g] + k, w, screen);
          } else {
            widen_quad_no_nan(col[g] + k, w, screen);
          }
          accumulate(fast_bits{}, g, k, w, std::integral_constant<int, 4>{});
        }
      }
    }
    for (; k < k16; k += 16) {  // every code kept (NaN too), value * 2^-8 for e4m3fn
      if (prefetch) prefetch_to(k + 16);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        f32x w[R];
        widen_lanes16(col[g] + k, w);
        accumulate(std::false_type{}, g, k, w, std::integral_constant<int, R>{});
      }
    }
    // The next group's last k_size % 16 bytes per column (all of them when
    // k_size < 16), which the steps above did not reach.
    if (prefetch) prefetch_to(k_size);
    if constexpr (kFast) return !screen.hit();
    return true;
  };
  if (!sum(std::false_type{})) {
    if constexpr (std::is_same_v<TB, float8_e4m3fn>) sum(std::true_type{});  // other types: never false
  }
  for (int g = 0; g < count; ++g) {
    for (int i = 0; i < M; ++i) {
      alignas(64) float lanes[16];
      for (int v = 0; v < R; ++v) f32_store(lanes + v * kL, s[g][i][v]);
      float h[8];
      for (int l = 0; l < 8; ++l) h[l] = lanes[l] + lanes[l + 8];
      float r = ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]));
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
/// (gemv_dot_columns; the same bits on every path). The order differs from the
/// blocked GEMM's (bounded, not bit-exact). `aw` (m * k floats) receives A
/// widened and scaled by kGemvScale<TB> (kBits: kGemvBitsScale).
///
/// Narrow B (8 and 16 bits): columns go in groups of G, 8 M chains of FMAs at
/// once (6 for M = 3): on AVX2, 4 columns for M = 1, 2 for M = 2, else 1; on
/// AVX-512 (one vector per column and row of A) twice as many. When this block
/// of B spans more than kGemvPrefetchBytes / 2 (the axpy form's rule for all
/// of B, at 2 threads) each group prefetches the next. Measured on a Zen 5, 1
/// x 4096 x 4096 from memory, one thread, AVX2, against one column at a time
/// without prefetch (docs/kernels.md, "The dot form"): e5m2 49-50 against
/// 26-32 GFLOP/s, 16-bit types 28.5-31 against 25.5-28; e4m3fn 32.5 either
/// way, bound by its decode, and 45-46.5 with the float32-bits decode (kBits).
/// AVX-512 against AVX2 on the same machine, one thread: e4m3fn 42-46 -> 61-68,
/// e5m2 44-54 -> 56-63; from L2 1.3-1.8x for M = 1..4 over 8- and 16-bit B.
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
  constexpr int kVectorsPerColumn = static_cast<int>(16 / kF32Lanes);
  constexpr int G = sizeof(TB) == 4 ? 1 : (M == 1 ? 8 : M == 2 ? 4 : 2) / kVectorsPerColumn;
  const bool prefetch =
      sizeof(TB) < 4 && n * b.cs * static_cast<std::ptrdiff_t>(sizeof(TB)) > kGemvPrefetchBytes / 2;
  for (std::ptrdiff_t j = 0; j < n; j += G) {
    const int count = static_cast<int>(n - j < G ? n - j : G);
    const int next_count = static_cast<int>(n - j - count < G ? n - j - count : G);  // 0 after the last group
    gemv_dot_columns<M, G, TA, TB, kBits>(a, b, k_size, j0 + j, count, j0 + j + count, next_count, prefetch,
                                          acc + j, ld, aw);
  }
}

/// This path's streaming routines for B of type TB, set into `t` (a
/// kernels::operand_kernels<TB>, kernels/table.hpp): the axpy and dot forms
/// for M = 1..kGemvMaxRows and, for e4m3fn, their float32-bits decodes (the
/// axpy form's for M <= kNoNanMaxRows, the M for which it screens for NaN).
template <class TB, class Table>
constexpr void set_gemv_entries(Table& t) {
  auto set = [&](auto rows) {
    constexpr int M = decltype(rows)::value;
    t.gemv_axpy[M - 1] = &gemv_block<M, float, TB>;
    t.gemv_dot[M - 1] = &gemv_dot_block<M, float, TB>;
    if constexpr (std::is_same_v<TB, float8_e4m3fn>) {
      if constexpr (M <= kNoNanMaxRows) t.gemv_axpy_bits[M - 1] = &gemv_block<M, float, TB, true>;
      t.gemv_dot_bits[M - 1] = &gemv_dot_block<M, float, TB, true>;
    }
  };
  static_assert(kernels::kGemvMaxRows == 4);
  set(std::integral_constant<int, 1>{});
  set(std::integral_constant<int, 2>{});
  set(std::integral_constant<int, 3>{});
  set(std::integral_constant<int, 4>{});
}

}  // namespace scalify::kernels::SCALIFY_SIMD_NS
SCALIFY_SIMD_END_TARGET
