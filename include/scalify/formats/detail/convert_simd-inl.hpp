// scalify: the SIMD bulk casts, written once for every x86 path.
//
// This file is included once per path by scalify/formats/convert.hpp (through
// scalify/simd/foreach_path.hpp), with
// SCALIFY_SIMD_NS naming the path (avx2, avx512) and SCALIFY_SIMD_BEGIN_TARGET /
// SCALIFY_SIMD_END_TARGET opening and closing its target region; `u32x` and
// its helpers come from scalify/simd/vec_<path>.hpp. (The tests include it a
// third time over a portable 16-lane emulation, tests/support/vec_emulated.hpp,
// so the kernel logic at AVX-512's width is checked on any CPU.) Each kernel converts the leading multiple of
// kLanes elements and returns how many it did; the caller finishes the tail
// with the scalar codec, and both agree bit for bit: the kernels compute,
// lane by lane, the results of detail::encode() and detail::decode_float_bits()
// (formats/detail/codec.hpp), mostly by the same integer steps (the float8
// nearest-even kernel rounds with a float addition instead), and the
// [exhaustive] tests compare them on every float32 input.
//
// No include guard on purpose (one inclusion per path).
#if !defined(SCALIFY_SIMD_NS) || !defined(SCALIFY_SIMD_BEGIN_TARGET) || !defined(SCALIFY_SIMD_END_TARGET)
#error "Include scalify/formats/convert.hpp instead of this file."
#endif

SCALIFY_SIMD_BEGIN_TARGET
namespace scalify::detail::SCALIFY_SIMD_NS {

using namespace ::scalify::simd::SCALIFY_SIMD_NS;  // the path's vector types (simd/)

/// hash32() of formats/cast.hpp, lane by lane.
SCALIFY_ALWAYS_INLINE u32x hash32_x(u32x x) {
  x = x ^ shift_right<16>(x);
  x = x * set1(0x7feb352du);
  x = x ^ shift_right<15>(x);
  x = x * set1(0x846ca68bu);
  x = x ^ shift_right<16>(x);
  return x;
}

/// stochastic_bits(keys, index + lane) for the kLanes lanes starting at `index`.
SCALIFY_ALWAYS_INLINE u32x stochastic_bits_x(detail::stochastic_keys keys, uint64_t index) {
  const u32x lo_base = set1(static_cast<uint32_t>(index));
  const u32x lo = lo_base + iota();
  const u32x carry = gt(lo_base, lo);  // all ones where the low word wrapped
  const u32x hi = set1(static_cast<uint32_t>(index >> 32)) - carry;
  const u32x h = hash32_x(lo ^ set1(keys.lo));
  return hash32_x(h ^ hi ^ set1(keys.hi));
}

/// float32 -> narrow format S, round to nearest even, without statistics: the
/// common case (every store of a scaled result), in about half the
/// instructions of the general kernel below. Same results, bit for bit.
///
/// float8 (e4m3fn, e5m2) rounds with one float addition per value. With e the
/// exponent of |x| raised to the format's smallest normal exponent 1 - B, the
/// magic number M = 2^(e + 23 - M_bits) has an ulp of 2^(e - M_bits), the
/// format's step at |x|; |x| < 2^(e + 1) <= M / 2^(22 - M_bits), so |x| + M
/// stays in M's binade and the hardware rounds it once, to nearest even, to a
/// multiple of that step (subnormal results included, where e is raised).
/// bits(|x| + M) - bits(M) counts the steps, and adding (e - (1 - B)) << M_bits
/// gives the code. |x| is first clamped to the value of the code that
/// overflow gives (inf, NaN, or the largest finite one when saturating): that
/// code is then what the steps give, so no clamp of codes, and M stays finite.
/// The signs join the codes when they are packed to bytes. (The addition
/// rounds in the MXCSR's mode: narrow_from_float calls this kernel only when
/// that is round to nearest, the default.)
///
/// The 16-bit formats (bfloat16; float16 goes through the hardware):
///   normal results: adding (half - 1 + lowest kept bit) to the float bits
///     carries into the kept bits exactly when rounding up (also into the
///     exponent); then rebias;
///   bfloat16 shares float32's exponent range: the integer rounding covers
///     its subnormals, no float addition there, so DAZ cannot matter;
///   then overflow (to inf or the largest finite value), inf and NaN inputs,
///   and the sign, as the general kernel.
template <const detail::format_spec& S>
std::size_t narrow_nearest_from_float(const float* src, void* dst, std::size_t n, bool saturate) {
  constexpr int kM = S.mantissa_bits, kB = S.exponent_bias;
  constexpr int kShift = 23 - kM;
  using code_t = std::conditional_t<S.bits == 8, uint8_t, uint16_t>;
  code_t* out = static_cast<code_t*>(dst);
  const u32x k_sign = set1(0x8000'0000u), k_inf = set1(0x7F80'0000u);
  const u32x k_nan_out = set1(S.nan_code), k_inf_out = set1(S.has_inf ? S.inf_code : S.nan_code);
  static_assert(!S.has_inf || S.inf_code == S.max_code + 1, "inf follows the largest finite code");
  static_assert(S.has_inf || S.nan_code == S.max_code + 1, "without inf, NaN follows the largest finite code");
  static_assert(S.has_inf || (S.nan_code & (S.nan_code + 1)) == 0,
                "without inf, the NaN code is all ones");

  std::size_t i = 0;
  if constexpr (S.bits == 16 && kB == 15) {
    // float16: the hardware conversion (vcvtps2ph) rounds to nearest even,
    // subnormal results and overflow to inf included; before it, saturation
    // clamps finite inputs to the largest finite value and NaN becomes the
    // canonical quiet NaN (the hardware would keep part of its payload).
    const u32x k_max_bits = set1(0x477F'E000u);  // 65504 = (1 + 1023 / 1024) * 2^15
    const u32x k_quiet_nan = set1(0x7FC0'0000u);
    for (; i + kLanes <= n; i += kLanes) {
      const u32x u = load_u32(src + i);
      u32x a = and_not(u, k_sign);
      if (saturate) a = select(gt_i32(k_inf, a), min(a, k_max_bits), a);
      a = select(gt_i32(a, k_inf), k_quiet_nan, a);  // a < 2^31: signed compares
      store_f32_as_f16(out + i, a | (u & k_sign));
    }
    return i;
  } else if constexpr (S.bits == 8) {
    static_assert(kB < 127 && S.max_code < 0x7F, "float8 with a sign bit and a subnormal range below float's");
    // The float bits of the value a code would have as a normal number.
    constexpr auto value_bits = [](uint32_t code) { return (code << kShift) + (static_cast<uint32_t>(127 - kB) << 23); };
    const u32x k_min_normal = set1(static_cast<uint32_t>(128 - kB) << 23);  // 2^(1 - B)
    const u32x k_magic_offset = set1((static_cast<uint32_t>(128 - kB) << 23) + (static_cast<uint32_t>(kShift) << 23));
    // Without saturation, overflow gives the code after max_code (inf, or e4m3fn's NaN).
    const u32x k_limit = set1(value_bits(saturate ? S.max_code : S.max_code + 1));
    const u32x k_max_finite = set1(0x7F7F'FFFFu);  // the largest finite float's bits
    // One loop per value of `saturate` (a constant inside): a run-time test in
    // the unrolled body costs registers, and the constants then reload.
    const auto run = [&](auto saturating) __attribute__((always_inline)) {
      // The code of |x| (bits 0-6), from the float bits u of x.
      const auto magnitude = [&](u32x u) __attribute__((always_inline)) {
        const u32x a = and_not(u, k_sign), clamped = min(a, k_limit);
        const u32x e = max(clamped & k_inf, k_min_normal) - k_min_normal;  // (e - (1 - B)) << 23
        const u32x magic = e + k_magic_offset;                              // M
        u32x code = (float_add_bits(clamped, magic) - magic) + shift_right<kShift>(e);
        // a < 2^31 in the compares: signed ones (one instruction).
        if constexpr (S.has_inf && decltype(saturating)::value) {
          // Non-finite inputs: inf -> inf, NaN -> NaN (overflow gave max_code).
          const u32x finite = gt_i32(k_inf, a);
          code = select(finite, code, select(eq(a, k_inf), k_inf_out, k_nan_out));
        } else if constexpr (S.has_inf) {
          code = select(gt_i32(a, k_inf), k_nan_out, code);  // NaN -> NaN (inf and overflow gave inf)
        } else if constexpr (decltype(saturating)::value) {
          code = select(gt_i32(a, k_max_finite), k_nan_out, code);  // inf, NaN -> NaN (overflow gave max_code)
        }  // else inf, NaN and overflow gave NaN
        return code;
      };
      // Four vectors of codes packed into bytes together, their signs with
      // them: a quarter of the shuffles of four store_u8.
      for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
        const u32x u0 = load_u32(src + i), u1 = load_u32(src + i + kLanes), u2 = load_u32(src + i + 2 * kLanes),
                   u3 = load_u32(src + i + 3 * kLanes);
        store4_u8_signed(out + i, magnitude(u0), magnitude(u1), magnitude(u2), magnitude(u3), u0, u1, u2, u3);
      }
      for (; i + kLanes <= n; i += kLanes) {
        const u32x u = load_u32(src + i);
        store_u8(out + i, magnitude(u) | shift_right<24>(u & k_sign));
      }
    };
    if (saturate) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
    return i;
  } else {
    static_assert(kB == 127, "the 16-bit formats besides float16: bfloat16");
    const u32x k_one = set1(1), k_half_minus_one = set1((1u << (kShift - 1)) - 1);
    // Without saturation, every code above max_code means overflow: clamp to inf.
    const u32x k_clamp = set1(saturate ? S.max_code : S.max_code + 1);
    for (; i + kLanes <= n; i += kLanes) {
      const u32x u = load_u32(src + i);
      const u32x a = and_not(u, k_sign);
      const u32x odd = shift_right<kShift>(a) & k_one;
      u32x code = min(shift_right<kShift>(a + k_half_minus_one + odd), k_clamp);  // rebias 0
      // Non-finite inputs: inf -> inf, NaN -> NaN.
      const u32x finite = gt_i32(k_inf, a);  // a < 2^31: signed compares
      code = select(finite, code, select(eq(a, k_inf), k_inf_out, k_nan_out));
      store_u16(out + i, code | shift_right<16>(u & k_sign));
    }
    return i;
  }
}

/// float32 -> narrow format S (8- or 16-bit codes written to `dst`), the
/// general kernel: every rounding mode, statistics on request.
/// Steps as in detail::encode(): pick significand and shift (normal or
/// subnormal result), round, handle overflow, then infinities/NaN, then sign.
template <const detail::format_spec& S, rounding kMode, bool kStats>
SCALIFY_NOINLINE std::size_t narrow_general_from_float(const float* src, void* dst, std::size_t n, bool saturate,
                                      detail::stochastic_keys keys, uint64_t offset, detail::narrow_stats& stats) {
  static_assert(S.has_sign && S.has_zero && S.has_subnormals && S.exponent_bias <= 127,
                "the SIMD casts cover float8_e4m3fn, float8_e5m2, float16 and bfloat16");
  constexpr int kM = S.mantissa_bits, kB = S.exponent_bias;
  using code_t = std::conditional_t<S.bits == 8, uint8_t, uint16_t>;
  code_t* out = static_cast<code_t*>(dst);

  const u32x k_sign = set1(0x8000'0000u), k_inf = set1(0x7F80'0000u);
  const u32x k_mantissa = set1(0x007F'FFFFu), k_implicit = set1(0x0080'0000u);
  const u32x k_zero = set1(0), k_one = set1(1), k_31 = set1(31), k_32 = set1(32);
  // Normal results need a >= 2^(1 - B), i.e. a biased float exponent >= 128 - B.
  const u32x k_min_normal = set1(static_cast<uint32_t>(128 - kB) << 23);
  const u32x k_rebias = set1(static_cast<uint32_t>(127 - kB) << 23);
  const u32x k_normal_shift = set1(23 - kM);
  // Subnormal shift: (23 - M) + (1 - to_exponent), to_exponent = max(e, 1) - 127 + B.
  const u32x k_subnormal_base = set1(static_cast<uint32_t>(151 - kM - kB));
  const u32x k_max = set1(S.max_code);
  // Stochastic rounding always saturates (as detail::encode()).
  const u32x k_overflow = set1(saturate || kMode == rounding::stochastic ? S.max_code
                                                                          : (S.has_inf ? S.inf_code : S.nan_code));
  const u32x k_inf_out = set1(S.has_inf ? S.inf_code : S.nan_code);
  const u32x k_nan_out = set1(S.nan_code);

  u32x amax = k_zero, n_overflow = k_zero, n_underflow = k_zero, n_nan = k_zero;
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const u32x u = load_u32(src + i);
    const u32x a = and_not(u, k_sign);
    const u32x e = shift_right<23>(a);

    // 1. Significand and shift.
    const u32x subnormal = gt_i32(k_min_normal, a);  // all operands below 2^31: signed compares
    const u32x m = (a & k_mantissa) | and_not(k_implicit, eq(e, k_zero));
    const u32x v = select(subnormal, m, a - k_rebias);
    const u32x s = select(subnormal, k_subnormal_base - max(e, k_one), k_normal_shift);

    // 2. Round.
    u32x code;
    if constexpr (kMode == rounding::nearest_even) {
      // Adding (half - 1 + lowest kept bit) carries exactly when rounding up.
      // Shifts of 31 already round everything to 0 (v < 2^30), so clamp there.
      const u32x sc = min(s, k_31);
      const u32x half = shift_left(k_one, sc - k_one);
      const u32x odd = shift_right(v, sc) & k_one;
      code = shift_right(v + odd + half - k_one, sc);
    } else if constexpr (kMode == rounding::toward_zero) {
      code = shift_right(v, s);
    } else {
      const u32x q = shift_right(v, s);
      const u32x rem = v & (shift_left(k_one, s) - k_one);
      const u32x fraction = select(gt_i32(s, k_32), shift_right(v, s - k_32), shift_left(rem, k_32 - s));
      const u32x random = stochastic_bits_x(keys, offset + i);
      code = q + (gt(fraction, random) & k_one);
    }

    // 3. Overflow, then non-finite inputs, then the sign.
    const u32x overflow = gt_i32(code, k_max);
    const u32x finite = gt_i32(k_inf, a);
    u32x r = select(overflow, k_overflow, code);
    r = select(finite, r, select(eq(a, k_inf), k_inf_out, k_nan_out));
    r = r | shift_right<32 - S.bits>(u & k_sign);
    if constexpr (S.bits == 8) {
      store_u8(out + i, r);
    } else {
      store_u16(out + i, r);
    }

    if constexpr (kStats) {
      const u32x nan = gt_i32(a, k_inf);
      amax = max(amax, and_not(a, nan));
      n_overflow = n_overflow - (overflow & finite);
      n_underflow = n_underflow - and_not(eq(code, k_zero) & finite, eq(a, k_zero));
      n_nan = n_nan - nan;
    }
  }
  if constexpr (kStats) {
    const uint32_t m = reduce_max(amax);
    stats.amax_bits = m > stats.amax_bits ? m : stats.amax_bits;
    stats.overflow += reduce_add(n_overflow);
    stats.underflow += reduce_add(n_underflow);
    stats.nan += reduce_add(n_nan);
  }
  return i;
}

/// float32 -> narrow format S, stochastic rounding, without statistics: the
/// optimizers' stores of weights. Same results as the general kernel, bit for
/// bit, with the same random bits R = stochastic_bits(keys, offset + i):
///   lanes with a normal result and a finite input (2^(1 - B) <= |x| < inf)
///   add R's complement, shifted down to the s = 23 - M dropped bits, to the
///   float bits and truncate: with rem the dropped bits and h = R >> (32 - s)
///   (R's top s bits), the general rule rounds up iff rem * 2^(32 - s) > R,
///   i.e. iff rem > h (the left side has zero low bits), and
///   rem + (2^s - 1 - h) carries into the kept bits exactly then (also into
///   the exponent); then rebias, saturate (stochastic rounding always does:
///   min with max_code) and add the sign;
///   a vector with any other lane (zero, subnormal result, inf, NaN) is
///   redone by the general kernel after its block.
/// By blocks of up to 64 vectors whose indices share their upper 32 bits
/// (else the block goes to the general kernel), so R's counter is one running
/// vector and the loop has no call in it.
template <const detail::format_spec& S>
std::size_t narrow_stochastic_from_float(const float* src, void* dst, std::size_t n, bool saturate,
                                         detail::stochastic_keys keys, uint64_t offset) {
  constexpr int kM = S.mantissa_bits, kB = S.exponent_bias;
  constexpr int kShift = 23 - kM;
  constexpr std::size_t kBlock = 64 * kLanes;
  using code_t = std::conditional_t<S.bits == 8, uint8_t, uint16_t>;
  code_t* out = static_cast<code_t*>(dst);
  const u32x k_sign = set1(0x8000'0000u), k_ones = set1(~0u), k_lanes = set1(kLanes);
  const u32x k_below_normal = set1(static_cast<uint32_t>(128 - kB) << 23);  // 2^(1 - B): smallest normal result
  const u32x k_max_finite = set1(0x7F7F'FFFFu);
  const u32x k_rebias = set1(static_cast<uint32_t>(127 - kB) << kM);
  const u32x k_max = set1(S.max_code);
  const u32x k_key_lo = set1(keys.lo);
  detail::narrow_stats unused;

  const std::size_t end = n / kLanes * kLanes;
  for (std::size_t i = 0; i < end; i += kBlock) {
    const std::size_t len = std::min(kBlock, end - i);
    const uint64_t index = offset + i;
    if (static_cast<uint32_t>(index) > 0xFFFF'FFFFu - len) {  // the low word wraps in this block
      narrow_general_from_float<S, rounding::stochastic, false>(src + i, out + i, len, saturate, keys, index, unused);
      continue;
    }
    // stochastic_bits_x() with the upper word fixed: hash32(hash32(lo ^ key.lo) ^ hi ^ key.hi).
    const u32x hi_key = set1(static_cast<uint32_t>(index >> 32) ^ keys.hi);
    u32x lo = set1(static_cast<uint32_t>(index)) + iota();
    uint64_t specials = 0;  // bit v: vector v of the block has a lane for the general kernel
    for (std::size_t v = 0; v < len / kLanes; ++v) {
      const std::size_t j = i + v * kLanes;
      const u32x u = load_u32(src + j);
      const u32x a = and_not(u, k_sign);
      specials |= static_cast<uint64_t>(any(gt_i32(k_below_normal, a) | gt_i32(a, k_max_finite))) << v;
      const u32x random = hash32_x(hash32_x(lo ^ k_key_lo) ^ hi_key);
      lo = lo + k_lanes;
      const u32x up = shift_right<32 - kShift>(random ^ k_ones);  // 2^s - 1 - h
      u32x code = min(shift_right<kShift>(a + up) - k_rebias, k_max);
      code = code | shift_right<32 - S.bits>(u & k_sign);
      if constexpr (S.bits == 8) {
        store_u8(out + j, code);
      } else {
        store_u16(out + j, code);
      }
    }
    for (; specials != 0; specials &= specials - 1) {
      const std::size_t j = i + static_cast<std::size_t>(std::countr_zero(specials)) * kLanes;
      narrow_general_from_float<S, rounding::stochastic, false>(src + j, out + j, kLanes, saturate, keys,
                                                                offset + j, unused);
    }
  }
  return end;
}

/// float32 -> narrow format S (8- or 16-bit codes written to `dst`): the
/// specialized kernels above where they apply (nearest even or stochastic,
/// without statistics), else the general one. Returns how many leading
/// elements it did (a multiple of kLanes).
template <const detail::format_spec& S, rounding kMode, bool kStats>
std::size_t narrow_from_float(const float* src, void* dst, std::size_t n, bool saturate,
                              detail::stochastic_keys keys, uint64_t offset, detail::narrow_stats& stats) {
  static_assert(S.has_sign && S.has_zero && S.has_subnormals && S.exponent_bias <= 127,
                "the SIMD casts cover float8_e4m3fn, float8_e5m2, float16 and bfloat16");
  if constexpr (kMode == rounding::nearest_even && !kStats) {
    // The float8 kernel rounds with a float addition, right only in the
    // default rounding mode (MXCSR.RC = round to nearest); under any other
    // (fesetround), the general kernel, integer arithmetic throughout, still
    // gives the scalar cast's bytes. One read of MXCSR per call.
    if constexpr (S.bits == 8) {
      if ((_mm_getcsr() & 0x6000u) != 0) {
        return narrow_general_from_float<S, kMode, kStats>(src, dst, n, saturate, keys, offset, stats);
      }
    }
    return narrow_nearest_from_float<S>(src, dst, n, saturate);
  } else if constexpr (kMode == rounding::stochastic && !kStats) {
    return narrow_stochastic_from_float<S>(src, dst, n, saturate, keys, offset);
  } else {
    return narrow_general_from_float<S, kMode, kStats>(src, dst, n, saturate, keys, offset, stats);
  }
}

/// Narrow format S -> float32, exactly; NaN -> 0x7FC00000 with its sign.
template <const detail::format_spec& S>
std::size_t widen_to_float(const void* src, float* dst, std::size_t n) {
  static_assert(S.has_sign && S.has_zero && S.has_subnormals && S.exponent_bias <= 127,
                "the SIMD casts cover float8_e4m3fn, float8_e5m2, float16 and bfloat16");
  constexpr int kM = S.mantissa_bits, kB = S.exponent_bias;
  // 2^(1 - B - M): the value of the smallest subnormal.
  constexpr float kSubnormalUnit = std::bit_cast<float>(static_cast<uint32_t>(127 + 1 - kB - kM) << 23);
  const u32x k_sign = set1(S.sign_bit()), k_magnitude = set1(S.magnitude_mask());
  const u32x k_min_normal = set1(1u << kM);
  const u32x k_inf_out = set1(0x7F80'0000u), k_nan_out = set1(0x7FC0'0000u);

  std::size_t i = 0;
  if constexpr (S.bits == 16 && kB == 15) {
    // float16: the hardware conversion (vcvtph2ps, exact), then NaN to the
    // canonical quiet NaN with its sign (the hardware keeps the payload).
    const u32x k_sign32 = set1(0x8000'0000u), k_payload = set1(0x003F'FFFFu);
    for (; i + kLanes <= n; i += kLanes) {
      const u32x r = load_f16_as_f32(static_cast<const uint16_t*>(src) + i);
      const u32x nan = gt_i32(and_not(r, k_sign32), k_inf_out);  // below 2^31: signed compare
      store_u32(dst + i, and_not(r, nan & k_payload));
    }
    return i;
  }
  for (; i + kLanes <= n; i += kLanes) {
    u32x c;
    if constexpr (S.bits == 8) {
      c = load_u8(static_cast<const uint8_t*>(src) + i);
    } else {
      c = load_u16(static_cast<const uint16_t*>(src) + i);
    }
    const u32x sign = shift_left<32 - S.bits>(c & k_sign);
    const u32x mag = c & k_magnitude;
    u32x r;
    if constexpr (kB == 127) {
      r = shift_left<23 - kM>(mag);  // bfloat16: the upper half of a float32, subnormals included
    } else {
      const u32x normal = shift_left<23 - kM>(mag) + set1(static_cast<uint32_t>(127 - kB) << 23);
      const u32x subnormal = int_to_float_bits_scaled(mag, kSubnormalUnit);  // exact, a normal float
      r = select(gt_i32(k_min_normal, mag), subnormal, normal);
    }
    if constexpr (S.has_inf) {
      r = select(eq(mag, set1(S.inf_code)), k_inf_out, r);
      r = select(gt_i32(mag, set1(S.inf_code)), k_nan_out, r);
    } else {
      r = select(eq(mag, set1(S.nan_code)), k_nan_out, r);
    }
    store_u32(dst + i, r | sign);
  }
  return i;
}

}  // namespace scalify::detail::SCALIFY_SIMD_NS
SCALIFY_SIMD_END_TARGET
