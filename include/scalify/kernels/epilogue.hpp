// scalify: the GEMM epilogue, fused into the tile loop (no second pass over C).
//
// For each valid element of a finished MR x NR accumulator tile:
//
//   v   = alpha * acc;  v = fma(beta, C_old, v) if beta != 0;  v = v + bias[j] if a bias is given
//   v   = activation(v)                          none, relu, or gelu_tanh (scalify/activation.hpp);
//                                                GELU on a scale s (act_scale): gelu(v * s) / s
//   out = cast<TC>(v)                            round to nearest even, saturating on request
//   amax = max(amax, |float(out)|)                over non-NaN outputs, so it equals
//                                                max |C| recomputed from the stored C, except
//                                                that an out of NaN from a v that is not NaN
//                                                (e4m3fn overflow) counts as +inf
//
// in float32, in this order, on every path (so paths agree bit for bit; the
// fused multiply-add is explicit, and alpha * acc is rounded behind a barrier,
// so no compiler contraction can differ). On
// the SIMD paths a float32 C with unit column stride and no GELU takes an
// AVX2 version of the same operations.
#ifndef SCALIFY_KERNELS_EPILOGUE_HPP_
#define SCALIFY_KERNELS_EPILOGUE_HPP_

#include <algorithm>    // std::min
#include <cmath>        // std::fabs, std::fma
#include <cstddef>      // ptrdiff_t
#include <limits>       // std::numeric_limits
#include <type_traits>  // std::is_same_v

#include "scalify/activation.hpp"      // activation, gelu_tanh
#include "scalify/config.hpp"          // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/formats/cast.hpp"     // round_cast
#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2
#include "scalify/kernels/gelu.hpp"     // gelu_forward_fn, gelu_forward_scalar

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, FMA
#endif

namespace scalify::kernels {

/// The element types gemm() writes: float, float16, bfloat16, float8_e4m3fn, float8_e5m2.
template <class T>
concept gemm_output = std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2> ||
                      std::is_same_v<T, float16> || std::is_same_v<T, bfloat16> || std::is_same_v<T, float>;

/// Where C lives: element (i, j) at data[i * rs + j * cs].
template <class T>
struct strided_out {
  T* data;
  std::ptrdiff_t rs, cs;
};

/// The epilogue's scalars (see the file comment).
struct epilogue_params {
  float alpha = 1.0f;
  float beta = 0.0f;
  const float* bias = nullptr;  ///< one per column of C, or null
  activation act = activation::none;
  bool saturate = false;
  bool amax = true;  ///< whether the caller wants max |C| (false: the fused kernels skip it)
  float act_scale = 1.0f;  ///< GELU of v * act_scale, divided by it (data on a scale)
};

/// The epilogue of one full tile with a float32 C of unit column stride and
/// no GELU, for the micro-kernels that apply it from their registers
/// (microkernel::tile_out): the same operations as epilogue_tile, so the same bits.
struct f32_tile_out {
  float* c;                     ///< C's element at the tile's (0, 0)
  std::ptrdiff_t ldc;           ///< C's row stride
  float alpha, beta;            ///< beta == 0: C is not read
  const float* bias;            ///< the bias at the tile's first column, or null
  bool relu;                    ///< activation::relu (else none)
  float* amax;                  ///< one running max |C| per vector lane (16 floats suffice), or null
};

/// a * b rounded to float on its own: never fused by the compiler with the add
/// that follows (-ffp-contract=fast, GCC's default, fuses a product into an
/// add in some routines and builds and not in others; the epilogue's bits must
/// not depend on that). The empty asm makes the product opaque.
SCALIFY_ALWAYS_INLINE float rounded_product(float a, float b) {
  float v = a * b;
#if defined(__GNUC__) && defined(__SSE2__)
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}

/// activation(v) in float32; GELU of the value v * act_scale, as data on
/// act_scale (relu commutes with a positive scale and ignores it).
inline float activate(float v, activation act, float act_scale = 1.0f) {
  switch (act) {
    case activation::none: return v;
    case activation::relu: return v > 0.0f ? v : 0.0f;
    case activation::gelu_tanh:  // the library's one GELU (scalify/activation.hpp)
      return act_scale == 1.0f ? gelu_tanh(v) : gelu_tanh_on_scale(v, act_scale);
  }
  return v;
}

/// Applies the epilogue to the valid m x n part of an accumulator tile (row
/// stride `ld`) whose element (0, 0) is C's (i0, j0). Returns max |out| over
/// the non-NaN outputs written (0 if none), +inf if a cast overflowed to NaN,
/// so that an amax-driven rescaling sees every overflow. A GELU runs through
/// `gelu` (the path's kernels::gelu_kernels::forward: same bits as activate()),
/// on up to 64 values of a row at a time.
template <gemm_output TC>
float epilogue_tile(const float* acc, std::ptrdiff_t ld, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t i0,
                    std::ptrdiff_t j0, const epilogue_params& p, const strided_out<TC>& c,
                    gelu_forward_fn gelu = &gelu_forward_scalar) {
  float amax = 0.0f;
  const bool plain = p.beta == 0.0f && p.bias == nullptr && p.act == activation::none;
  for (std::ptrdiff_t i = 0; i < m; ++i) {
    const float* row = acc + i * ld;
    TC* out = c.data + (i0 + i) * c.rs + j0 * c.cs;
    if constexpr (std::is_same_v<TC, float>) {
      if (plain && c.cs == 1) {  // the common case, vectorizable
        for (std::ptrdiff_t j = 0; j < n; ++j) {
          const float v = p.alpha * row[j];
          out[j] = v;
          const float a = std::fabs(v);
          amax = a > amax ? a : amax;
        }
        continue;
      }
    }
    constexpr std::ptrdiff_t kChunk = 64;
    for (std::ptrdiff_t jc = 0; jc < n; jc += kChunk) {
      const std::ptrdiff_t nc = std::min(kChunk, n - jc);
      float vs[kChunk];
      for (std::ptrdiff_t j = jc; j < jc + nc; ++j) {
        float v = rounded_product(p.alpha, row[j]);
        if (p.beta != 0.0f) v = std::fma(p.beta, static_cast<float>(out[j * c.cs]), v);
        if (p.bias != nullptr) v += p.bias[j0 + j];
        vs[j - jc] = p.act == activation::gelu_tanh ? v : activate(v, p.act);
      }
      if (p.act == activation::gelu_tanh) gelu(vs, p.act_scale, vs, nc);
      for (std::ptrdiff_t j = jc; j < jc + nc; ++j) {
        const float v = vs[j - jc];
        TC stored;
        if constexpr (std::is_same_v<TC, float>) {
          stored = v;
        } else {
          stored = round_cast<TC>(v, rounding::nearest_even, p.saturate);
        }
        out[j * c.cs] = stored;
        float a = std::fabs(static_cast<float>(stored));
        if constexpr (!std::numeric_limits<TC>::has_infinity) {
          if (a != a && v == v) a = std::numeric_limits<float>::infinity();  // overflow into NaN: reported as inf
        }
        amax = a > amax ? a : amax;  // NaN compares false: skipped
      }
    }
  }
  return amax;
}

}  // namespace scalify::kernels

#if SCALIFY_HAVE_X86_SIMD
SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::kernels::avx2 {

/// kernels::epilogue_tile for a float32 C with c.cs == 1 and act != gelu_tanh,
/// 8 columns at a time (the same operations, so the same bits).
inline float epilogue_tile_f32(const float* acc, std::ptrdiff_t ld, std::ptrdiff_t m, std::ptrdiff_t n,
                               std::ptrdiff_t i0, std::ptrdiff_t j0, const kernels::epilogue_params& p,
                               const kernels::strided_out<float>& c) {
  const __m256 alpha = _mm256_set1_ps(p.alpha), beta = _mm256_set1_ps(p.beta), zero = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF'FFFF));
  const bool relu = p.act == activation::relu, use_beta = p.beta != 0.0f;
  __m256 amax = zero;
  for (std::ptrdiff_t i = 0; i < m; ++i) {
    const float* row = acc + i * ld;
    float* out = c.data + (i0 + i) * c.rs + j0;
    // Full vectors with plain loads and stores (vmaskmovps stores are slow on
    // AMD), the tail with masks.
    auto one = [&](std::ptrdiff_t j, bool full, __m256i mask) __attribute__((always_inline)) {
      __m256 v = _mm256_mul_ps(alpha, _mm256_loadu_ps(row + j));  // the tile is full: no mask needed
      __asm__("" : "+x"(v));  // rounded on its own, as kernels::rounded_product
      if (use_beta) {
        v = _mm256_fmadd_ps(beta, full ? _mm256_loadu_ps(out + j) : _mm256_maskload_ps(out + j, mask), v);
      }
      if (p.bias != nullptr) {
        v = _mm256_add_ps(v, full ? _mm256_loadu_ps(p.bias + j0 + j) : _mm256_maskload_ps(p.bias + j0 + j, mask));
      }
      if (relu) v = _mm256_blendv_ps(zero, v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));  // v > 0 ? v : 0 (NaN -> 0)
      __m256 a = _mm256_and_ps(v, abs_mask);
      if (full) {
        _mm256_storeu_ps(out + j, v);
      } else {
        _mm256_maskstore_ps(out + j, mask, v);
        a = _mm256_and_ps(a, _mm256_castsi256_ps(mask));
      }
      amax = _mm256_max_ps(a, amax);  // max_ps returns its second operand when the first is NaN: NaN skipped
    };
    std::ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) one(j, true, _mm256_setzero_si256());
    if (j < n) {
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - j)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      one(j, false, mask);
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, amax);
  float r = 0.0f;
  for (float x : lanes) r = x > r ? x : r;
  return r;
}

}  // namespace scalify::kernels::avx2
SCALIFY_END_TARGET
#endif

#endif  // SCALIFY_KERNELS_EPILOGUE_HPP_
