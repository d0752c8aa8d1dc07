// scalify::compiled: the GEMM's 125 gemm_checked<TA, TB, TC> and 5 pack_b<TB>
// instantiations, compiled once. Programs linking this library are built with
// SCALIFY_COMPILED_LIB, which declares them extern in scalify/kernels/gemm.hpp
// so that their own translation units skip the kernels (see docs/testing.md,
// "Compile cost"). The header-only mode needs none of this.
#include "scalify/kernels/gemm.hpp"

#define SCALIFY_GEMM_DEFINE_(TA, TB, TC) SCALIFY_GEMM_INSTANCE_(, TA, TB, TC)
#define SCALIFY_PACK_B_DEFINE_(TB) SCALIFY_PACK_B_INSTANCE_(, TB)
SCALIFY_GEMM_FOR_EACH_TRIPLE(SCALIFY_GEMM_DEFINE_)
SCALIFY_GEMM_FOR_EACH_INPUT(SCALIFY_PACK_B_DEFINE_)
