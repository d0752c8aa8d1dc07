// scalify: GEMM blocking parameters per micro-kernel (GotoBLAS/BLIS loops).
//
//   for each block of NC columns of C         (B block: K x NC, packed)
//     for each block of KC of the depth       (B block slice KC x NC; KC x NR micro-panel in L1)
//       for each block of MC rows             (A block slice MC x KC, in L2)
//         for each NR-wide, then MR-high tile: micro-kernel (registers)
//
// MR x NR is the register tile: MR * NR / lanes accumulators plus NR / lanes
// B vectors plus one broadcast A value must fit the register file (16 ymm for
// AVX2: 6 x 16 -> 12 + 2 + 1 = 15; 32 zmm for AVX-512: 12 x 32 -> 24 + 2 + 1).
// KC is chosen so that a KC x NR micro-panel of B (float32: KC * NR * 4 bytes)
// takes about half of a 32 KiB L1d, MC so that the MC x KC slice of A plus the
// MC x NC float32 accumulators stay within a 512 KiB - 1 MiB L2 (Zen 3/4,
// Skylake-X, Sapphire Rapids). These are constants, tuned on an AMD EPYC
// (Zen 4) with AVX2; they do not affect results (the k order is fixed).
#ifndef SCALIFY_KERNELS_BLOCKING_HPP_
#define SCALIFY_KERNELS_BLOCKING_HPP_

namespace scalify::kernels {

/// Register tile (mr x nr) and cache blocks (mc x kc of A, kc x nc of B) of one
/// micro-kernel. `kc` counts k steps and is a multiple of 2 (bfloat16 pairs).
struct blocking {
  int mr, nr, mc, nc, kc;
};

/// The portable reference: a small odd-ish tile so the edge logic is exercised.
inline constexpr blocking kBlockingScalar{4, 8, 64, 256, 256};
/// AVX2 + FMA, 8 float32 lanes: 6 x 16 tile, 16 KiB B micro-panel.
inline constexpr blocking kBlockingAvx2{6, 16, 72, 256, 256};
/// AVX-512F, 16 float32 lanes: 12 x 32 tile, 32 KiB B micro-panel in a 48 KiB L1d.
inline constexpr blocking kBlockingAvx512{12, 32, 96, 256, 256};
/// AVX-512 BF16: 12 x 32 tile of bfloat16 pairs; a pair takes 4 bytes, so KC
/// doubles for the same footprint.
inline constexpr blocking kBlockingAvx512Bf16{12, 32, 96, 256, 512};

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_BLOCKING_HPP_
