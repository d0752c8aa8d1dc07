// tests/support/f32_emulated.hpp: a portable 16 x float32 vector with the
// interface of scalify/simd/f32_avx512.hpp (avx512bf16 flavour), in plain C++,
// including an exact emulation of vdpbf16ps (kernels::scalar::dpbf16_lane:
// RNE, odd pair first, denormal inputs read as zero, denormal results flushed).
//
// The GEMM micro-kernels (scalify/kernels/detail/microkernel-inl.hpp) are
// written once over that interface; including them over this emulation checks
// the AVX-512F and AVX-512 BF16 kernel logic at 16 lanes on any CPU (the
// AVX-512 wrappers themselves are one intrinsic per function).
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "scalify/config.hpp"                      // SCALIFY_ALWAYS_INLINE
#include "scalify/kernels/epilogue.hpp"            // kernels::f32_tile_out
#include "scalify/kernels/microkernel_scalar.hpp"  // kernels::scalar::dpbf16_lane

namespace scalify::simd::emulated16_f32 {

inline constexpr std::size_t kF32Lanes = 16;
struct f32x {
  float v[kF32Lanes];
};
struct bf16x2 {
  uint32_t v[kF32Lanes];
};

inline f32x f32_zero() {
  f32x r;
  for (auto& x : r.v) x = 0.0f;
  return r;
}
inline f32x f32_broadcast(const uint32_t* p) {
  f32x r;
  for (auto& x : r.v) x = std::bit_cast<float>(*p);
  return r;
}
inline f32x f32_load(const uint32_t* p) {
  f32x r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline f32x f32_load(const float* p) {
  f32x r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline void f32_store(float* p, f32x a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline f32x f32_fmadd(f32x a, f32x b, f32x c) {
  f32x r;
  for (std::size_t i = 0; i < kF32Lanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
}
inline f32x f32_set1(float x) {
  f32x r;
  for (auto& y : r.v) y = x;
  return r;
}
template <class Op>
f32x f32_lanewise(f32x a, f32x b, Op op) {
  f32x r;
  for (std::size_t i = 0; i < kF32Lanes; ++i) r.v[i] = op(a.v[i], b.v[i]);
  return r;
}
inline f32x f32_mul(f32x a, f32x b) { return f32_lanewise(a, b, [](float x, float y) { return x * y; }); }
/// a * b rounded on its own (volatile: never fused into a following add).
inline f32x f32_mul_rounded(f32x a, f32x b) {
  return f32_lanewise(a, b, [](float x, float y) {
    volatile float p = x * y;
    return static_cast<float>(p);
  });
}
inline f32x f32_add(f32x a, f32x b) { return f32_lanewise(a, b, [](float x, float y) { return x + y; }); }
/// maxps: the first operand if it is greater, else the second (NaN, equal zeros).
inline f32x f32_max(f32x a, f32x b) { return f32_lanewise(a, b, [](float x, float y) { return x > y ? x : y; }); }
inline f32x f32_abs(f32x a) {
  return f32_lanewise(a, a, [](float x, float) {
    return std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0x7FFF'FFFFu);
  });
}
inline bf16x2 bf16x2_load(const uint32_t* p) {
  bf16x2 r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline bf16x2 bf16x2_broadcast(const uint32_t* p) {
  bf16x2 r;
  for (auto& x : r.v) x = *p;
  return r;
}
inline f32x f32_dpbf16(f32x acc, bf16x2 a, bf16x2 b) {
  f32x r;
  for (std::size_t i = 0; i < kF32Lanes; ++i) r.v[i] = kernels::scalar::dpbf16_lane(acc.v[i], a.v[i], b.v[i]);
  return r;
}

}  // namespace scalify::simd::emulated16_f32

#define SCALIFY_SIMD_NS emulated16_f32
#define SCALIFY_SIMD_BEGIN_TARGET
#define SCALIFY_SIMD_END_TARGET
#define SCALIFY_SIMD_HAS_BF16 1
#include "scalify/kernels/detail/microkernel-inl.hpp"
#undef SCALIFY_SIMD_HAS_BF16
#undef SCALIFY_SIMD_NS
#undef SCALIFY_SIMD_BEGIN_TARGET
#undef SCALIFY_SIMD_END_TARGET
