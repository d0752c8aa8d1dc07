// scalify: the kernel table. Every GEMM routine that differs by CPU path is
// reached through one table per path, chosen once from the path the GEMM runs
// on (active_cpu_path(), or the path a B was packed for); an entry may point
// to another path's routine, so each fallback is written once, here.
//
//   kernels_for(path)             the micro-kernels and the float32 epilogue
//   operand_kernels_for<T>(path)  the routines that depend on an operand's element type T:
//                                 packing of A and B, the streaming GEMV (M <= 4)
//
// The GELU routines (the epilogue's and the nn layers') have their table in
// kernels/gelu.hpp (gelu_kernels_for), the bulk casts one layer down, beside
// them (formats/convert.hpp, detail::cast_kernels_for). A null entry means the
// portable scalar routine, which every path can run. docs/kernels.md shows
// the whole table:
//
//   entry           scalar         avx2                 avx512               avx512bf16
//   tile_f32        ref 4x8        avx2 6x16 (+5x16)    avx512 12x32 (+11x32) avx512 12x32 (+11x32)
//   tile_bf16       ref 4x8        avx2 6x16 (+5x16)    avx512 12x32 (+11x32) avx512bf16 12x32 (+11x32; bf16 pairs)
//   epilogue_f32    scalar         avx2                 avx2                 avx2
//   pack_a, pack_b  scalar         avx2                 avx2                 avx2 (bf16 pairs)
//   pack_a_f32_cols scalar         avx2                 avx2                 avx2
//   pack_b_f32_cols scalar         avx2                 avx2                 avx2
//   gemv_axpy       scalar         avx2                 avx512               avx512
//   gemv_axpy_bits  -              avx2 (e4m3fn, M<=3)  avx512 (e4m3fn, M=1) avx512 (e4m3fn, M=1)
//   gemv_dot        scalar         avx2                 avx512               avx512
//   gemv_dot_bits   -              avx2 (e4m3fn)        avx512 (e4m3fn)      avx512 (e4m3fn)
//
// The packers and the epilogue run about 8 % of a large GEMM's time: their
// AVX2 versions serve the AVX-512 paths (docs/kernels.md, "What runs on the avx512 paths").
#ifndef SCALIFY_KERNELS_TABLE_HPP_
#define SCALIFY_KERNELS_TABLE_HPP_

#include <cmath>        // std::fabs
#include <cstddef>      // ptrdiff_t
#include <cstdint>      // uint32_t
#include <limits>       // std::numeric_limits
#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"             // SCALIFY_HAVE_X86_SIMD
#include "scalify/cpu.hpp"                // cpu_path
#include "scalify/kernels/epilogue.hpp"   // epilogue_params, strided_out, kernels::avx2::epilogue_tile_f32
#include "scalify/kernels/gelu.hpp"       // gelu_kernels_for
#include "scalify/kernels/gemv.hpp"       // kGemvMaxRows, kernels::*::set_gemv_entries
#include "scalify/kernels/microkernels.hpp"  // microkernel, the tiles of every path
#include "scalify/kernels/pack.hpp"       // strided, kExactInBf16, kernels::avx2::pack_*_rows, pack_*_cols

#if SCALIFY_HAVE_X86_SIMD
#include <xmmintrin.h>  // _mm_getcsr
#endif

namespace scalify::kernels {

/// The routines of one CPU path for operands of element type T. Null: the
/// scalar routine (pack_a_panel, pack_b_panel, gemv_block_scalar).
template <class T>
struct operand_kernels {
  /// Rows [i0, i0 + mr) of an A with contiguous rows (a.cs == 1) into one panel.
  using pack_a_fn = void (*)(const strided<T>& a, std::ptrdiff_t m, std::ptrdiff_t k, std::ptrdiff_t i0, int mr,
                             uint32_t* dst);
  /// Unit rows [u0, u1) of every panel of columns [j0, j0 + n) of a B with
  /// contiguous rows (b.cs == 1; pack_b_f32_cols: columns, b.rs == 1), unit u
  /// of panel p at dst + p * ps + (u - u0) * nr; nr a multiple of 8.
  using pack_b_fn = void (*)(const strided<T>& b, std::ptrdiff_t k, std::ptrdiff_t u0, std::ptrdiff_t u1,
                             std::ptrdiff_t j0, std::ptrdiff_t n, int nr, uint32_t* dst, std::ptrdiff_t ps);
  /// acc (M x n, row stride ld) = A (float, M x k) * B(:, j0 .. j0 + n); M = index + 1.
  using gemv_fn = void (*)(const strided<float>& a, const strided<T>& b, std::ptrdiff_t k, std::ptrdiff_t j0,
                           std::ptrdiff_t n, float* acc, std::ptrdiff_t ld);
  using gemv_dot_fn = void (*)(const strided<float>& a, const strided<T>& b, std::ptrdiff_t k, std::ptrdiff_t j0,
                               std::ptrdiff_t n, float* acc, std::ptrdiff_t ld, float* aw);

  pack_a_fn pack_a_f32 = nullptr;   ///< packing::f32 panels
  /// packing::f32 panels of an A with contiguous columns (a.rs == 1: a transposed row-major matrix)
  pack_a_fn pack_a_f32_cols = nullptr;
  pack_a_fn pack_a_bf16 = nullptr;  ///< packing::bf16x2 panels (T exact in bfloat16 only)
  pack_b_fn pack_b_f32 = nullptr;
  /// packing::f32 panels of a B with contiguous columns (b.rs == 1: the backward pass's W^T)
  pack_b_fn pack_b_f32_cols = nullptr;
  pack_b_fn pack_b_bf16 = nullptr;
  gemv_fn gemv_axpy[kGemvMaxRows] = {};    ///< B's rows contiguous (b.cs == 1): same bits as the GEMM
  gemv_dot_fn gemv_dot[kGemvMaxRows] = {};  ///< B's columns contiguous (b.rs == 1): dot products
  /// gemv_axpy decoding e4m3fn straight to float32 bits (same bits, for every
  /// finite |A| below 2^8 with MXCSR's DAZ off; see gemv_block_with).
  gemv_fn gemv_axpy_bits[kGemvMaxRows] = {};
  /// gemv_dot decoding e4m3fn straight to float32 bits (same bits as gemv_dot,
  /// under gemv_axpy_bits's conditions).
  gemv_dot_fn gemv_dot_bits[kGemvMaxRows] = {};
};

/// The routines of one CPU path that do not depend on the operand types.
struct path_kernels {
  cpu_path path;
  const microkernel* tile_f32;   ///< every operand type
  const microkernel* tile_bf16;  ///< both operands exact in bfloat16 (e4m3fn, e5m2, bfloat16)
  /// The epilogue of a float32 C with unit column stride and no GELU (null: epilogue_tile).
  float (*epilogue_f32)(const float* acc, std::ptrdiff_t ld, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t i0,
                        std::ptrdiff_t j0, const epilogue_params& p, const strided_out<float>& c);
};

namespace detail {

template <class T>
inline constexpr operand_kernels<T> kScalarOperandKernels{};

#if SCALIFY_HAVE_X86_SIMD
template <class T>
constexpr operand_kernels<T> simd_operand_kernels(bool avx512) {
  operand_kernels<T> t;
  t.pack_a_f32 = &kernels::avx2::pack_a_panel_rows<T>;
  t.pack_a_f32_cols = &kernels::avx2::pack_a_panel_cols<T>;
  t.pack_b_f32 = &kernels::avx2::pack_b_rows<T>;
  t.pack_b_f32_cols = &kernels::avx2::pack_b_cols<T>;
  if constexpr (kExactInBf16<T>) {
    t.pack_a_bf16 = &kernels::avx2::pack_a_panel_rows_bf16<T>;
    t.pack_b_bf16 = &kernels::avx2::pack_b_rows_bf16<T>;
  }
  if (avx512) {
    kernels::avx512::set_gemv_entries<T>(t);
  } else {
    kernels::avx2::set_gemv_entries<T>(t);
  }
  return t;
}

template <class T>
inline constexpr operand_kernels<T> kAvx2OperandKernels = simd_operand_kernels<T>(false);
template <class T>
inline constexpr operand_kernels<T> kAvx512OperandKernels = simd_operand_kernels<T>(true);
#endif

}  // namespace detail

/// The table of `path`'s GEMM routines.
inline const path_kernels& kernels_for(cpu_path path) {
  static constexpr path_kernels kScalar{cpu_path::scalar, &kScalarMicrokernel, &kScalarMicrokernel, nullptr};
#if SCALIFY_HAVE_X86_SIMD
  static constexpr path_kernels kAvx2{cpu_path::avx2, &kAvx2Microkernel, &kAvx2Microkernel,
                                      &kernels::avx2::epilogue_tile_f32};
  static constexpr path_kernels kAvx512{cpu_path::avx512, &kAvx512Microkernel, &kAvx512Microkernel,
                                        &kernels::avx2::epilogue_tile_f32};
  static constexpr path_kernels kAvx512Bf16{cpu_path::avx512bf16, &kAvx512Microkernel, &kAvx512Bf16Microkernel,
                                            &kernels::avx2::epilogue_tile_f32};
  switch (path) {
    case cpu_path::scalar: return kScalar;
    case cpu_path::avx2: return kAvx2;
    case cpu_path::avx512: return kAvx512;
    case cpu_path::avx512bf16: return kAvx512Bf16;
  }
#else
  (void)path;
#endif
  return kScalar;
}

/// The table of `path`'s routines for operands of type T.
template <class T>
const operand_kernels<T>& operand_kernels_for(cpu_path path) {
#if SCALIFY_HAVE_X86_SIMD
  switch (path) {
    case cpu_path::scalar: return detail::kScalarOperandKernels<T>;
    case cpu_path::avx2: return detail::kAvx2OperandKernels<T>;
    case cpu_path::avx512:
    case cpu_path::avx512bf16: return detail::kAvx512OperandKernels<T>;
  }
#else
  (void)path;
#endif
  return detail::kScalarOperandKernels<T>;
}

/// The micro-kernel of `path` for operands that are (not) both exact in bfloat16.
inline const microkernel& select_microkernel(cpu_path path, bool bf16_exact) {
  const path_kernels& t = kernels_for(path);
  return bf16_exact ? *t.tile_bf16 : *t.tile_f32;
}

// ------------------------------------------------------------------------------
// The callers' side: a table entry where it applies, else the scalar routine.

/// Packs rows [i0, i0 + mr) of A into one panel of packing P.
template <packing P, gemm_input T>
void pack_a_panel_with(const operand_kernels<T>& t, const strided<T>& a, std::ptrdiff_t m, std::ptrdiff_t k,
                       std::ptrdiff_t i0, int mr, uint32_t* dst) {
  const auto f = P == packing::f32 ? t.pack_a_f32 : t.pack_a_bf16;
  if (f != nullptr && a.cs == 1) return f(a, m, k, i0, mr, dst);
  if (P == packing::f32 && t.pack_a_f32_cols != nullptr && a.rs == 1) return t.pack_a_f32_cols(a, m, k, i0, mr, dst);
  pack_a_panel<P>(a, m, k, i0, mr, dst);
}

/// The epilogue of an accumulator tile (see epilogue_tile).
template <gemm_output TC>
float epilogue_tile_with(const path_kernels& t, const float* acc, std::ptrdiff_t ld, std::ptrdiff_t m,
                         std::ptrdiff_t n, std::ptrdiff_t i0, std::ptrdiff_t j0, const epilogue_params& p,
                         const strided_out<TC>& c) {
  if constexpr (std::is_same_v<TC, float>) {
    if (t.epilogue_f32 != nullptr && c.cs == 1 && p.act != activation::gelu_tanh) {
      return t.epilogue_f32(acc, ld, m, n, i0, j0, p, c);
    }
  }
  return epilogue_tile(acc, ld, m, n, i0, j0, p, c, gelu_kernels_for(t.path).forward);
}

/// acc (m x n, row stride ld) = A(0..m, :) * B(:, j0 .. j0 + n), m <= kGemvMaxRows,
/// A widened to float. B's rows contiguous: the axpy form (same bits as the
/// blocked GEMM); else, B's columns contiguous: the dot form (`aw`: m * k
/// floats of scratch); else scalar. An e4m3fn B scales A by 2^8 on the SIMD
/// routines (kGemvScale): an |A| of 2^119 or more (but inf) goes to the scalar
/// one, and so does any A with 0 < |A| < 2^-134 while MXCSR's FTZ is on and
/// DAZ off in this thread (A * 2^8 would flush to zero where A times a code
/// is a normal float). The float32-bits decodes (gemv_axpy_bits,
/// gemv_dot_bits) scale A by 2^120: only where every finite |A| is below 2^8,
/// MXCSR's DAZ is off in this thread (they read the decoded subnormals) and
/// the CPU takes subnormal operands at full speed.
template <gemm_input TB>
void gemv_block_with(const operand_kernels<TB>& t, const strided<float>& a, const strided<TB>& b, std::ptrdiff_t m,
                     std::ptrdiff_t k, std::ptrdiff_t j0, std::ptrdiff_t n, float* acc, std::ptrdiff_t ld, float* aw) {
  bool scalable = m >= 1 && m <= kGemvMaxRows;
  [[maybe_unused]] bool small = true;  // every finite |A| below 2^8
  [[maybe_unused]] bool tiny = false;  // some |A| in (0, 2^-134): A * 2^8 is subnormal
  if constexpr (std::is_same_v<TB, float8_e4m3fn>) {
    for (std::ptrdiff_t i = 0; i < m && scalable; ++i) {
      for (std::ptrdiff_t q = 0; q < k; ++q) {
        const float v = std::fabs(a.at(i, q));
        if (v >= 0x1p8f && v != std::numeric_limits<float>::infinity()) small = false;
        if (v >= 0x1p119f && v != std::numeric_limits<float>::infinity()) scalable = false;
        if (v < 0x1p-134f && v != 0.0f) tiny = true;
      }
    }
  }
#if SCALIFY_HAVE_X86_SIMD
  [[maybe_unused]] const unsigned int csr = std::is_same_v<TB, float8_e4m3fn> ? _mm_getcsr() : 0u;
  [[maybe_unused]] const bool daz = (csr & 0x0040u) != 0;  // MXCSR bit 6: denormals are zero
  if (tiny && (csr & 0x8000u) != 0 && !daz) scalable = false;  // bit 15: flush to zero
#endif
  if (scalable) {
#if SCALIFY_HAVE_X86_SIMD
    if constexpr (std::is_same_v<TB, float8_e4m3fn>) {
      if (small && !daz && scalify::detail::cpu().fast_subnormal_fma) {
        const auto bits = t.gemv_axpy_bits[m - 1];
        if (bits != nullptr && b.cs == 1) return bits(a, b, k, j0, n, acc, ld);
        const auto dot_bits = t.gemv_dot_bits[m - 1];
        if (dot_bits != nullptr && b.cs != 1 && b.rs == 1) return dot_bits(a, b, k, j0, n, acc, ld, aw);
      }
    }
#endif
    const auto axpy = t.gemv_axpy[m - 1];
    if (axpy != nullptr && b.cs == 1) return axpy(a, b, k, j0, n, acc, ld);
    const auto dot = t.gemv_dot[m - 1];
    if (dot != nullptr && b.rs == 1) return dot(a, b, k, j0, n, acc, ld, aw);
  }
  gemv_block_scalar(a, b, m, k, j0, n, acc, ld);
}

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_TABLE_HPP_
