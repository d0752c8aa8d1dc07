// scalify: compiler and ISA configuration.
//
// scalify builds every SIMD path in the same translation unit without any
// `-m` flag: each path's functions carry a target attribute (the macros below),
// and run-time dispatch (scalify/cpu.hpp) picks the path the CPU has.
#ifndef SCALIFY_CONFIG_HPP_
#define SCALIFY_CONFIG_HPP_

#if defined(__x86_64__) || defined(_M_X64)
#define SCALIFY_ARCH_X86_64 1
#else
#define SCALIFY_ARCH_X86_64 0
#endif

// GCC and Clang both accept per-function target attributes; the SIMD paths are
// compiled only there and only for x86-64. Elsewhere only the scalar path exists.
#if SCALIFY_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
#define SCALIFY_HAVE_X86_SIMD 1
#else
#define SCALIFY_HAVE_X86_SIMD 0
#endif

#if SCALIFY_HAVE_X86_SIMD
/// AVX2 + FMA + F16C (Haswell and later, Zen 1 and later).
#define SCALIFY_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
/// AVX-512 F/BW/VL/DQ (Skylake-X and later, Zen 4 and later).
#define SCALIFY_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")))
/// AVX-512 with BF16 dot products (Cooper Lake, Sapphire Rapids, Zen 4).
#define SCALIFY_TARGET_AVX512BF16                                                \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi2")))
#endif

// Target regions: every function declared between SCALIFY_BEGIN_TARGET_* and
// SCALIFY_END_TARGET (templates included) is compiled for that ISA, as Highway
// does with HWY_BEFORE_NAMESPACE. Include system headers before a region.
#if SCALIFY_HAVE_X86_SIMD && defined(__clang__)
#define SCALIFY_BEGIN_TARGET_AVX2 \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,bmi2\"))), apply_to = function)")
#define SCALIFY_BEGIN_TARGET_AVX512                                                                  \
  _Pragma(                                                                                          \
      "clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2\"))), apply_to = function)")
#define SCALIFY_BEGIN_TARGET_AVX512BF16                                                                  \
  _Pragma(                                                                                              \
      "clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi2\"))), apply_to = function)")
#define SCALIFY_END_TARGET _Pragma("clang attribute pop")
#elif SCALIFY_HAVE_X86_SIMD
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own
// `_mm512_undefined_*()` placeholders (GCC PR105593, fixed in GCC 13).
#define SCALIFY_BEGIN_TARGET_AVX2                                    \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,bmi2\")") \
      _Pragma("GCC diagnostic push")
#define SCALIFY_BEGIN_TARGET_AVX512                                                           \
  _Pragma("GCC push_options")                                                                \
      _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2\")")        \
          _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
              _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define SCALIFY_BEGIN_TARGET_AVX512BF16                                                                  \
  _Pragma("GCC push_options")                                                                           \
      _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi2\")")        \
          _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")            \
              _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define SCALIFY_END_TARGET _Pragma("GCC diagnostic pop") _Pragma("GCC pop_options")
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SCALIFY_ALWAYS_INLINE inline __attribute__((always_inline))
#define SCALIFY_LAMBDA_ALWAYS_INLINE __attribute__((always_inline))  // after a lambda's parameter list
#define SCALIFY_NOINLINE __attribute__((noinline))  // a rare path kept out of a hot loop
#define SCALIFY_LIKELY(x) __builtin_expect(!!(x), 1)
#define SCALIFY_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define SCALIFY_ALWAYS_INLINE inline
#define SCALIFY_LAMBDA_ALWAYS_INLINE
#define SCALIFY_NOINLINE
#define SCALIFY_LIKELY(x) (x)
#define SCALIFY_UNLIKELY(x) (x)
#endif

#endif  // SCALIFY_CONFIG_HPP_
