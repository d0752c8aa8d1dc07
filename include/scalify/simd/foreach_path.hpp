// scalify: includes a "-inl.hpp" file once per x86 SIMD path (the pattern of
// Highway's foreach_target.h), so the list of paths is written once.
//
//   #define SCALIFY_PATH_INCLUDE "scalify/formats/detail/convert_simd-inl.hpp"
//   #include "scalify/simd/foreach_path.hpp"
//
// The -inl file sees SCALIFY_SIMD_NS (avx2, avx512, avx512bf16: the namespace
// under scalify::simd), SCALIFY_SIMD_BEGIN_TARGET / SCALIFY_SIMD_END_TARGET
// (the target region of that path) and, for avx512bf16 only,
// SCALIFY_SIMD_HAS_BF16. avx512bf16 is included only when
// SCALIFY_PATH_WITH_BF16 is defined (the float8 codecs have no BF16 variant).
// Both SCALIFY_PATH_* macros are undefined afterwards. Nothing is included
// without x86 SIMD support.
//
// No include guard on purpose (one inclusion per user).
#ifndef SCALIFY_PATH_INCLUDE
#error "Define SCALIFY_PATH_INCLUDE before including scalify/simd/foreach_path.hpp."
#endif

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_*

#if SCALIFY_HAVE_X86_SIMD
#define SCALIFY_SIMD_END_TARGET SCALIFY_END_TARGET

#define SCALIFY_SIMD_NS avx2
#define SCALIFY_SIMD_BEGIN_TARGET SCALIFY_BEGIN_TARGET_AVX2
#include SCALIFY_PATH_INCLUDE
#undef SCALIFY_SIMD_NS
#undef SCALIFY_SIMD_BEGIN_TARGET

#define SCALIFY_SIMD_NS avx512
#define SCALIFY_SIMD_BEGIN_TARGET SCALIFY_BEGIN_TARGET_AVX512
#include SCALIFY_PATH_INCLUDE
#undef SCALIFY_SIMD_NS
#undef SCALIFY_SIMD_BEGIN_TARGET

#ifdef SCALIFY_PATH_WITH_BF16
#define SCALIFY_SIMD_NS avx512bf16
#define SCALIFY_SIMD_BEGIN_TARGET SCALIFY_BEGIN_TARGET_AVX512BF16
#define SCALIFY_SIMD_HAS_BF16 1
#include SCALIFY_PATH_INCLUDE
#undef SCALIFY_SIMD_HAS_BF16
#undef SCALIFY_SIMD_NS
#undef SCALIFY_SIMD_BEGIN_TARGET
#endif

#undef SCALIFY_SIMD_END_TARGET
#endif  // SCALIFY_HAVE_X86_SIMD

#undef SCALIFY_PATH_INCLUDE
#undef SCALIFY_PATH_WITH_BF16
