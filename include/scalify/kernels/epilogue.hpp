// scalify: the GEMM epilogue, fused into the tile loop (no second pass over C).
//
// For each valid element of a finished MR x NR accumulator tile:
//
//   v   = alpha * acc  (+ beta * C_old, if beta != 0)  (+ bias[j], if a bias is given)
//   v   = activation(v)                          none, relu, or gelu_tanh
//   out = cast<TC>(v)                            round to nearest even, saturating on request
//   amax = max(amax, |float(out)|)                over non-NaN outputs, so it equals
//                                                max |C| recomputed from the stored C
//
// in float32, in this order, on every path (so paths agree bit for bit).
#ifndef SCALIFY_KERNELS_EPILOGUE_HPP_
#define SCALIFY_KERNELS_EPILOGUE_HPP_

#include <cmath>        // std::tanh, std::fabs
#include <cstddef>      // ptrdiff_t
#include <type_traits>  // std::is_same_v

#include "scalify/formats/cast.hpp"     // round_cast
#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2

namespace scalify {

/// Activation applied by the GEMM epilogue.
enum class activation {
  none,       ///< identity
  relu,       ///< max(x, 0)
  gelu_tanh,  ///< 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
};

}  // namespace scalify

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
};

/// activation(v) in float32.
inline float activate(float v, activation act) {
  switch (act) {
    case activation::none: return v;
    case activation::relu: return v > 0.0f ? v : 0.0f;
    case activation::gelu_tanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
    }
  }
  return v;
}

/// Applies the epilogue to the valid m x n part of an accumulator tile (row
/// stride `ld`) whose element (0, 0) is C's (i0, j0). Returns max |out| over
/// the non-NaN outputs written (0 if none).
template <gemm_output TC>
float epilogue_tile(const float* acc, std::ptrdiff_t ld, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t i0,
                    std::ptrdiff_t j0, const epilogue_params& p, const strided_out<TC>& c) {
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
    for (std::ptrdiff_t j = 0; j < n; ++j) {
      float v = p.alpha * row[j];
      if (p.beta != 0.0f) v += p.beta * static_cast<float>(out[j * c.cs]);
      if (p.bias != nullptr) v += p.bias[j0 + j];
      v = activate(v, p.act);
      TC stored;
      if constexpr (std::is_same_v<TC, float>) {
        stored = v;
      } else {
        stored = round_cast<TC>(v, rounding::nearest_even, p.saturate);
      }
      out[j * c.cs] = stored;
      const float a = std::fabs(static_cast<float>(stored));
      amax = a > amax ? a : amax;  // NaN compares false: skipped
    }
  }
  return amax;
}

}  // namespace scalify::kernels

#endif  // SCALIFY_KERNELS_EPILOGUE_HPP_
