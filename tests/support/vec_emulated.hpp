// tests/support/vec_emulated.hpp: a portable 16 x uint32 vector with the
// interface of scalify/simd/vec_avx2.hpp and vec_avx512.hpp, in plain C++.
//
// The SIMD cast kernels (scalify/formats/detail/convert_simd-inl.hpp) are
// written once over that interface. Including them over this emulation, at
// AVX-512's width, checks the kernel logic against the scalar codec on any
// CPU, also on machines without AVX-512 (the AVX-512 wrapper itself, a thin
// one-intrinsic-per-function layer, is then the only part left to hardware).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "scalify/config.hpp"                // SCALIFY_ALWAYS_INLINE
#include "scalify/formats/cast.hpp"          // detail::stochastic_keys
#include "scalify/formats/detail/codec.hpp"  // detail::format_spec, narrow_stats

namespace scalify::simd::emulated16 {

inline constexpr std::size_t kLanes = 16;
struct u32x {
  uint32_t v[kLanes];
};

template <class F>
inline u32x map(F f) {
  u32x r;
  for (std::size_t i = 0; i < kLanes; ++i) r.v[i] = f(i);
  return r;
}
inline u32x set1(uint32_t x) {
  return map([&](std::size_t) { return x; });
}
inline u32x iota() {
  return map([](std::size_t i) { return static_cast<uint32_t>(i); });
}
inline u32x load_u32(const void* p) {
  u32x r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
inline u32x load_u16(const uint16_t* p) {
  return map([&](std::size_t i) { return static_cast<uint32_t>(p[i]); });
}
inline u32x load_u8(const uint8_t* p) {
  return map([&](std::size_t i) { return static_cast<uint32_t>(p[i]); });
}
// The hardware float16 conversions (vcvtph2ps, vcvtps2ph nearest even),
// NaN payloads included: the kernels must canonicalize NaN themselves.
inline u32x load_f16_as_f32(const uint16_t* p) {
  return map([&](std::size_t i) {
    const uint32_t c = p[i];
    if ((c & 0x7C00u) == 0x7C00u && (c & 0x03FFu) != 0) return ((c & 0x8000u) << 16) | 0x7FC0'0000u | ((c & 0x03FFu) << 13);
    return scalify::detail::decode_float_bits<scalify::detail::kFloat16>(c);
  });
}
inline void store_f32_as_f16(uint16_t* p, u32x a) {
  for (std::size_t i = 0; i < kLanes; ++i) {
    const uint32_t x = a.v[i];
    p[i] = static_cast<uint16_t>(
        (x & 0x7FFF'FFFFu) > 0x7F80'0000u
            ? ((x >> 16) & 0x8000u) | 0x7E00u | ((x >> 13) & 0x03FFu)
            : scalify::detail::encode<scalify::detail::kFloat16>(std::bit_cast<float>(x), rounding::nearest_even, false));
  }
}
inline void store_u32(void* p, u32x a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline void store_u16(uint16_t* p, u32x a) {
  for (std::size_t i = 0; i < kLanes; ++i) p[i] = static_cast<uint16_t>(a.v[i]);
}
inline void store_u8(uint8_t* p, u32x a) {
  for (std::size_t i = 0; i < kLanes; ++i) p[i] = static_cast<uint8_t>(a.v[i]);
}
inline void store4_u8_signed(uint8_t* p, u32x a, u32x b, u32x c, u32x d, u32x sa, u32x sb, u32x sc, u32x sd) {
  const u32x* codes[4] = {&a, &b, &c, &d};
  const u32x* signs[4] = {&sa, &sb, &sc, &sd};
  for (std::size_t k = 0; k < 4; ++k) {
    for (std::size_t i = 0; i < kLanes; ++i) {
      p[k * kLanes + i] = static_cast<uint8_t>(codes[k]->v[i] | ((signs[k]->v[i] >> 31) << 7));
    }
  }
}
#define SCALIFY_EMU_BINARY(op)                                          \
  inline u32x operator op(u32x a, u32x b) {                             \
    return map([&](std::size_t i) { return uint32_t(a.v[i] op b.v[i]); }); \
  }
SCALIFY_EMU_BINARY(+)
SCALIFY_EMU_BINARY(-)
SCALIFY_EMU_BINARY(*)
SCALIFY_EMU_BINARY(&)
SCALIFY_EMU_BINARY(|)
SCALIFY_EMU_BINARY(^)
#undef SCALIFY_EMU_BINARY
inline u32x and_not(u32x a, u32x b) {
  return map([&](std::size_t i) { return a.v[i] & ~b.v[i]; });
}
template <int kCount>
inline u32x shift_right(u32x a) {
  return map([&](std::size_t i) { return a.v[i] >> kCount; });
}
template <int kCount>
inline u32x shift_left(u32x a) {
  return map([&](std::size_t i) { return a.v[i] << kCount; });
}
// Like vpsrlvd / vpsllvd: counts of 32 or more (as unsigned) give 0.
inline u32x shift_right(u32x a, u32x c) {
  return map([&](std::size_t i) { return c.v[i] >= 32 ? 0u : a.v[i] >> c.v[i]; });
}
inline u32x shift_left(u32x a, u32x c) {
  return map([&](std::size_t i) { return c.v[i] >= 32 ? 0u : a.v[i] << c.v[i]; });
}
inline u32x min(u32x a, u32x b) {
  return map([&](std::size_t i) { return a.v[i] < b.v[i] ? a.v[i] : b.v[i]; });
}
inline u32x max(u32x a, u32x b) {
  return map([&](std::size_t i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; });
}
inline u32x eq(u32x a, u32x b) {
  return map([&](std::size_t i) { return a.v[i] == b.v[i] ? ~0u : 0u; });
}
inline u32x gt(u32x a, u32x b) {
  return map([&](std::size_t i) { return a.v[i] > b.v[i] ? ~0u : 0u; });
}
inline u32x gt_i32(u32x a, u32x b) {
  return map([&](std::size_t i) { return static_cast<int32_t>(a.v[i]) > static_cast<int32_t>(b.v[i]) ? ~0u : 0u; });
}
inline u32x select(u32x m, u32x a, u32x b) {
  return map([&](std::size_t i) { return (a.v[i] & m.v[i]) | (b.v[i] & ~m.v[i]); });
}
inline bool any(u32x m) {
  for (uint32_t x : m.v) {
    if (x != 0) return true;
  }
  return false;
}
inline u32x int_to_float_bits_scaled(u32x a, float scale) {
  return map([&](std::size_t i) {
    return std::bit_cast<uint32_t>(static_cast<float>(static_cast<int32_t>(a.v[i])) * scale);
  });
}
inline u32x float_add_bits(u32x a, float c) {
  return map([&](std::size_t i) { return std::bit_cast<uint32_t>(std::bit_cast<float>(a.v[i]) + c); });
}
inline u32x float_add_bits(u32x a, u32x b) {
  return map([&](std::size_t i) { return std::bit_cast<uint32_t>(std::bit_cast<float>(a.v[i]) + std::bit_cast<float>(b.v[i])); });
}
inline uint64_t reduce_add(u32x a) {
  uint64_t s = 0;
  for (uint32_t x : a.v) s += x;
  return s;
}
inline uint32_t reduce_max(u32x a) {
  uint32_t m = 0;
  for (uint32_t x : a.v) m = x > m ? x : m;
  return m;
}

}  // namespace scalify::simd::emulated16

#define SCALIFY_SIMD_NS emulated16
#define SCALIFY_SIMD_BEGIN_TARGET
#define SCALIFY_SIMD_END_TARGET
#include "scalify/formats/detail/convert_simd-inl.hpp"
#undef SCALIFY_SIMD_NS
#undef SCALIFY_SIMD_BEGIN_TARGET
#undef SCALIFY_SIMD_END_TARGET
