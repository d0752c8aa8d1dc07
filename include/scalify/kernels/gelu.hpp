// scalify: GELU over arrays, on every CPU path, with the bits of the scalar
// definition (scalify/activation.hpp: gelu_tanh_on_scale, gelu_tanh_grad).
//
//   forward(d, s, out, n)        out[i] = gelu_tanh_on_scale(d[i], s): gelu(d s) as data on s
//   backward(dy, x, s, out, n)   out[i] = dy[i] * gelu_tanh_grad(x[i] * s)
//   gelu_kernels_for(path)       the table: the scalar loops on the scalar path,
//                                the AVX2 + FMA routines on every SIMD path
//
// The AVX2 routines evaluate activation.hpp's float formula 8 lanes at a time
// with the same operations in the same order (explicit fused multiply-adds,
// correctly rounded divisions, the same bit tricks), so they give the same
// bits as the scalar definition (a NaN as a NaN, whatever its sign and
// payload), which the tests check over sampled float32 inputs and every
// special class. The one place the scalar definition leaves
// float, a value d * s that overflows while d is finite (then gelu is taken
// in double), runs element by element through it. out may be d (forward) or
// dy or x (backward): each element is read before it is written.
//
// Cost: about 30 vector operations per 8 elements, a few tenths of a
// nanosecond per element on one core, against several nanoseconds for libm's
// tanhf. Wider vectors would help on CPUs that run 512-bit operations at full
// width; the AVX-512 paths use the AVX2 routines for now.
#ifndef SCALIFY_KERNELS_GELU_HPP_
#define SCALIFY_KERNELS_GELU_HPP_

#include <cstddef>  // ptrdiff_t
#include <cstring>  // std::memcpy

#include "scalify/activation.hpp"  // gelu_tanh_on_scale, gelu_tanh_grad, detail::gelu_f32_constants
#include "scalify/config.hpp"      // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/cpu.hpp"         // cpu_path

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, FMA
#endif

namespace scalify::kernels {

/// out[i] = gelu_tanh_on_scale(d[i], s) for i in [0, n).
using gelu_forward_fn = void (*)(const float* d, float s, float* out, std::ptrdiff_t n);
/// out[i] = dy[i] * gelu_tanh_grad(x[i] * s) for i in [0, n).
using gelu_backward_fn = void (*)(const float* dy, const float* x, float s, float* out,
                                  std::ptrdiff_t n);

/// The GELU routines of one CPU path.
struct gelu_kernels {
  gelu_forward_fn forward;
  gelu_backward_fn backward;
};

/// The scalar definitions, element by element.
inline void gelu_forward_scalar(const float* d, float s, float* out, std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = gelu_tanh_on_scale(d[i], s);
}
inline void gelu_backward_scalar(const float* dy, const float* x, float s, float* out,
                                 std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = dy[i] * gelu_tanh_grad(x[i] * s);
}

}  // namespace scalify::kernels

#if SCALIFY_HAVE_X86_SIMD
SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::kernels::avx2 {

/// detail::gelu_terms for 8 lanes; `big` and `neg` (z < 0) are lane masks.
struct gelu_terms8 {
  __m256 x2, z, e, den, big, neg;
};

/// detail::make_gelu_terms<float>, lane by lane: the same operations. Lanes
/// with |z| > t_max (and NaN lanes, where every term is NaN) compute garbage
/// that the masks replace, as the scalar code's early return does.
SCALIFY_ALWAYS_INLINE gelu_terms8 gelu_terms(__m256 x) {
  using C = scalify::detail::gelu_f32_constants;
  gelu_terms8 g;
  g.x2 = _mm256_mul_ps(x, x);
  g.z = _mm256_mul_ps(x, _mm256_fmadd_ps(_mm256_set1_ps(C::kc), g.x2, _mm256_set1_ps(C::k)));
  g.neg = _mm256_cmp_ps(g.z, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 t = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), g.z);
  g.big = _mm256_cmp_ps(t, _mm256_set1_ps(C::t_max), _CMP_GT_OQ);
  const __m256 magic = _mm256_set1_ps(C::round_magic);
  const __m256 a = _mm256_mul_ps(t, _mm256_set1_ps(-2.0f));
  const __m256 j = _mm256_fmadd_ps(a, _mm256_set1_ps(C::log2e), magic);
  const __m256 n = _mm256_sub_ps(j, magic);
  __m256 f = _mm256_fmadd_ps(n, _mm256_set1_ps(-C::ln2_hi), a);
  f = _mm256_fmadd_ps(n, _mm256_set1_ps(-C::ln2_lo), f);
  __m256 p = _mm256_set1_ps(C::inv_fact[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C::inv_fact[i]));
  const __m256 one = _mm256_set1_ps(1.0f);
  p = _mm256_fmadd_ps(p, f, one);
  p = _mm256_fmadd_ps(p, f, one);
  const __m256 two_n = _mm256_castsi256_ps(_mm256_add_epi32(
      _mm256_slli_epi32(_mm256_castps_si256(j), 23), _mm256_set1_epi32(127 << 23)));
  g.e = _mm256_andnot_ps(g.big, _mm256_mul_ps(p, two_n));
  g.den = _mm256_blendv_ps(_mm256_fmadd_ps(p, two_n, one), one, g.big);
  return g;
}

/// gelu_tanh(x), 8 lanes.
SCALIFY_ALWAYS_INLINE __m256 gelu(__m256 x) {
  const gelu_terms8 g = gelu_terms(x);
  const __m256 xe = _mm256_blendv_ps(_mm256_mul_ps(x, g.e), _mm256_set1_ps(-0.0f), g.big);
  return _mm256_div_ps(_mm256_blendv_ps(x, xe, g.neg), g.den);
}

/// gelu_tanh_grad(x), 8 lanes.
SCALIFY_ALWAYS_INLINE __m256 gelu_grad(__m256 x) {
  using C = scalify::detail::gelu_f32_constants;
  const gelu_terms8 g = gelu_terms(x);
  const __m256 q = _mm256_div_ps(_mm256_set1_ps(1.0f), g.den);
  const __m256 eq = _mm256_mul_ps(g.e, q);
  const __m256 s = _mm256_blendv_ps(q, eq, g.neg);
  const __m256 dz = _mm256_fmadd_ps(_mm256_set1_ps(C::kc6), g.x2, _mm256_set1_ps(C::k2));
  const __m256 r = _mm256_fmadd_ps(_mm256_mul_ps(x, dz), _mm256_mul_ps(eq, q), s);
  return _mm256_blendv_ps(r, s, g.big);
}

/// The forward routine on 8 values (a full vector).
SCALIFY_ALWAYS_INLINE void gelu_forward8(const float* d, float s, __m256 vs, __m256 divisor,
                                         bool divide, float* out) {
  const __m256 dv = _mm256_loadu_ps(d);
  const __m256 v = _mm256_mul_ps(dv, vs);
  // d * s overflowed with d finite: the scalar definition takes gelu in double.
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  const __m256 overflow =
      _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_EQ_OQ),
                    _mm256_cmp_ps(_mm256_and_ps(dv, abs_mask), inf, _CMP_LT_OQ));
  if (_mm256_movemask_ps(overflow) != 0) [[unlikely]] {
    for (int l = 0; l < 8; ++l) out[l] = gelu_tanh_on_scale(d[l], s);
    return;
  }
  __m256 y = gelu(v);
  if (divide) y = _mm256_div_ps(y, divisor);
  _mm256_storeu_ps(out, y);
}

inline void gelu_forward(const float* d, float s, float* out, std::ptrdiff_t n) {
  const float divisor = s > 0.0f ? s : 1.0f;  // as gelu_tanh_on_scale
  const __m256 vs = _mm256_set1_ps(s), vdiv = _mm256_set1_ps(divisor);
  const bool divide = divisor != 1.0f;  // v / 1 == v
  std::ptrdiff_t i = 0;
  for (; i + 8 <= n; i += 8) gelu_forward8(d + i, s, vs, vdiv, divide, out + i);
  if (i < n) {  // the tail through a zero-padded vector
    float in[8] = {}, res[8];
    const auto bytes = static_cast<std::size_t>(n - i) * sizeof(float);
    std::memcpy(in, d + i, bytes);
    gelu_forward8(in, s, vs, vdiv, divide, res);
    std::memcpy(out + i, res, bytes);
  }
}

/// The backward routine on 8 values.
SCALIFY_ALWAYS_INLINE void gelu_backward8(const float* dy, const float* x, __m256 vs, float* out) {
  const __m256 g = gelu_grad(_mm256_mul_ps(_mm256_loadu_ps(x), vs));
  _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_loadu_ps(dy), g));
}

inline void gelu_backward(const float* dy, const float* x, float s, float* out, std::ptrdiff_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  std::ptrdiff_t i = 0;
  for (; i + 8 <= n; i += 8) gelu_backward8(dy + i, x + i, vs, out + i);
  if (i < n) {
    float dyt[8] = {}, xt[8] = {}, res[8];
    const auto bytes = static_cast<std::size_t>(n - i) * sizeof(float);
    std::memcpy(dyt, dy + i, bytes);
    std::memcpy(xt, x + i, bytes);
    gelu_backward8(dyt, xt, vs, res);
    std::memcpy(out + i, res, bytes);
  }
}

}  // namespace scalify::kernels::avx2
SCALIFY_END_TARGET
#endif  // SCALIFY_HAVE_X86_SIMD

namespace scalify::kernels {

/// The GELU routines of `path`.
inline const gelu_kernels& gelu_kernels_for(cpu_path path) {
  static constexpr gelu_kernels kScalar{&gelu_forward_scalar, &gelu_backward_scalar};
#if SCALIFY_HAVE_X86_SIMD
  static constexpr gelu_kernels kAvx2{&avx2::gelu_forward, &avx2::gelu_backward};
  switch (path) {
    case cpu_path::scalar:
      return kScalar;
    case cpu_path::avx2:
    case cpu_path::avx512:
    case cpu_path::avx512bf16:
      return kAvx2;
  }
#else
  (void)path;
#endif
  return kScalar;
}

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_GELU_HPP_
