// scalify: the GEMM micro-kernels of every CPU path (kernels/table.hpp chooses).
//
//   path        kernel                                tile     inputs
//   scalar      scalar::gemm_tile_f32_ref<4, 8>       4 x 8    every type, widened to float32
//   avx2        kernels::avx2::gemm_tile_f32<6, 2>       6 x 16   every type, widened to float32
//   avx512      kernels::avx512::gemm_tile_f32<12, 2>    12 x 32  every type, widened to float32
//   avx512bf16  kernels::avx512bf16::gemm_tile_bf16<12,2> 12 x 32 e4m3fn, e5m2, bfloat16 (exact in
//               bfloat16); float16 and float32 operands use the avx512 float32 kernel
// and on each SIMD path the same kernel for MR - 1 rows (5 x 16, 11 x 32: short_tile).
//
// float16 has an 11-bit significand and does not fit bfloat16's 8 bits, so on
// the BF16 path any float16 (or float32) operand sends the whole product to
// the AVX-512F float32 kernel: results stay exact products, no hi/lo split.
// The contract is in docs/kernels.md and atop kernels/detail/microkernel-inl.hpp.
#ifndef SCALIFY_KERNELS_MICROKERNELS_HPP_
#define SCALIFY_KERNELS_MICROKERNELS_HPP_

#include <cstddef>  // ptrdiff_t, size_t
#include <cstdint>  // uint32_t

#include "scalify/config.hpp"                      // SCALIFY_HAVE_X86_SIMD
#include "scalify/cpu.hpp"                         // cpu_path
#include "scalify/kernels/blocking.hpp"            // blocking, kBlocking*
#include "scalify/kernels/epilogue.hpp"            // f32_tile_out
#include "scalify/kernels/microkernel_scalar.hpp"  // scalar::gemm_tile_*_ref
#include "scalify/simd/f32_avx2.hpp"               // simd::avx2::f32x
#include "scalify/simd/f32_avx512.hpp"             // simd::avx512(bf16)::f32x

#define SCALIFY_PATH_INCLUDE "scalify/kernels/detail/microkernel-inl.hpp"
#define SCALIFY_PATH_WITH_BF16 1
#include "scalify/simd/foreach_path.hpp"  // once per SIMD path, avx512bf16 included

namespace scalify::kernels {

/// How the packed panels hold k: one float32 per unit, or a pair of bfloat16.
enum class packing { f32, bf16x2 };

/// A micro-kernel and its blocking. `tile` follows the contract above.
/// `tile_out` (null on the scalar path) is the same sum for a full tile,
/// started from the tile `acc` (or from zero if null) and finished by the
/// float32 epilogue straight into C: no store and reload of the tile.
/// `short_tile` and `short_tile_out` are the same for MR - 1 rows (A panels
/// packed MR - 1 high): the driver covers a row count that is not a multiple
/// of MR with some panels of MR - 1 rows rather than a zero-padded one, so no
/// multiply-add is spent on padding (128 rows: 18 x 6 + 4 x 5, not 22 x 6).
/// Null on the scalar path (padded there). Each element's sum is the same
/// sequence of operations in every tile height: same bits.
struct microkernel {
  cpu_path path;
  packing pack;
  blocking block;
  void (*tile)(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate);
  void (*tile_out)(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, const float* acc, const f32_tile_out& out);
  void (*short_tile)(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate);
  void (*short_tile_out)(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, const float* acc,
                         const f32_tile_out& out);
  const char* name;

  /// k steps per packed unit (1 or 2).
  int k_per_unit() const { return pack == packing::bf16x2 ? 2 : 1; }
};

/// The micro-kernel of each path (kernels/table.hpp chooses among them).
inline constexpr microkernel kScalarMicrokernel{cpu_path::scalar, packing::f32, kBlockingScalar,
                                                &scalar::gemm_tile_f32_ref<4, 8>, nullptr, nullptr, nullptr,
                                                "scalar_f32_4x8"};
#if SCALIFY_HAVE_X86_SIMD
inline constexpr microkernel kAvx2Microkernel{cpu_path::avx2, packing::f32, kBlockingAvx2,
                                              &kernels::avx2::gemm_tile_f32<6, 2>, &kernels::avx2::gemm_tile_f32_out<6, 2>,
                                              &kernels::avx2::gemm_tile_f32<5, 2>, &kernels::avx2::gemm_tile_f32_out<5, 2>,
                                              "avx2_f32_6x16"};
inline constexpr microkernel kAvx512Microkernel{cpu_path::avx512, packing::f32, kBlockingAvx512,
                                                &kernels::avx512::gemm_tile_f32<12, 2>,
                                                &kernels::avx512::gemm_tile_f32_out<12, 2>,
                                                &kernels::avx512::gemm_tile_f32<11, 2>,
                                                &kernels::avx512::gemm_tile_f32_out<11, 2>, "avx512_f32_12x32"};
inline constexpr microkernel kAvx512Bf16Microkernel{cpu_path::avx512bf16, packing::bf16x2, kBlockingAvx512Bf16,
                                                    &kernels::avx512bf16::gemm_tile_bf16<12, 2>,
                                                    &kernels::avx512bf16::gemm_tile_bf16_out<12, 2>,
                                                    &kernels::avx512bf16::gemm_tile_bf16<11, 2>,
                                                    &kernels::avx512bf16::gemm_tile_bf16_out<11, 2>,
                                                    "avx512bf16_bf16x2_12x32"};
#endif

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_MICROKERNELS_HPP_
