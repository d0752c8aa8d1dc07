// scalify::compiled: the bulk casts (detail::convert_narrow and
// detail::convert_widen) of the four narrow formats with SIMD casts, compiled once for every
// CPU path. Declared extern in scalify/formats/convert.hpp under
// SCALIFY_COMPILED_LIB; see src/gemm_instances.cpp.
#include "scalify/formats/convert.hpp"

#define SCALIFY_CONVERT_DEFINE_(T) SCALIFY_CONVERT_INSTANCE_(, T)
SCALIFY_CONVERT_FOR_EACH_NARROW(SCALIFY_CONVERT_DEFINE_)
