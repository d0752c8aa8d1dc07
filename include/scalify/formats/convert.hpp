// scalify: bulk casts between float32 and the narrow formats.
//
//   convert(src, dst[, options])             between any two of float, double, float16,
//                                            bfloat16, e4m3fn, e5m2, e8m0fnu; the same
//                                            type is a copy (SIMD for float <-> narrow)
//   convert_with_stats(src, dst[, options])  narrowing, plus amax and counts of
//                                            overflow, underflow and NaN, same pass
//
// Each call dispatches to the active CPU path (scalify/cpu.hpp): AVX-512,
// AVX2 or scalar. Every path gives the same bytes as the scalar cast
// (round_cast in formats/cast.hpp) for every input and option.
#ifndef SCALIFY_FORMATS_CONVERT_HPP_
#define SCALIFY_FORMATS_CONVERT_HPP_

#include <algorithm>    // std::copy, std::min
#include <bit>          // std::bit_cast, std::countr_zero
#include <cmath>        // std::nextafter, std::copysign, std::isfinite (double -> float)
#include <cstddef>      // size_t
#include <cstdint>      // uint8_t, uint16_t, uint32_t, uint64_t
#include <limits>       // std::numeric_limits (saturating double -> float)
#include <ranges>       // std::ranges::contiguous_range
#include <span>         // std::span
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"                // SCALIFY_HAVE_X86_SIMD
#include "scalify/cpu.hpp"                   // active_cpu_path
#include "scalify/errors.hpp"                // shape_error, SCALIFY_CHECK
#include "scalify/formats/cast.hpp"          // round_cast, stochastic_bits
#include "scalify/formats/detail/codec.hpp"  // encode, decode_float_bits, narrow_stats
#include "scalify/formats/float16.hpp"       // float16, bfloat16
#include "scalify/formats/float8.hpp"        // float8_e4m3fn, float8_e5m2
#include "scalify/simd/vec_avx2.hpp"         // simd::avx2::u32x
#include "scalify/simd/vec_avx512.hpp"       // simd::avx512::u32x

#define SCALIFY_PATH_INCLUDE "scalify/formats/detail/convert_simd-inl.hpp"
#include "scalify/simd/foreach_path.hpp"  // once per SIMD path

namespace scalify {

/// Options of a bulk cast.
///
/// | field | meaning |
/// |---|---|
/// | `saturate` | finite values beyond the range become +-max instead of inf/NaN |
/// | `round` | `nearest_even` (default), `toward_zero`, or `stochastic` |
/// | `seed`, `offset` | stochastic only: element i uses `stochastic_bits(seed, offset + i)`, so a cast split into chunks (pass each chunk's start as `offset`) gives the same bytes as one call, on any thread count |
///
/// Stochastic rounding always saturates. Infinities and NaN behave as in the
/// default cast whatever the options.
///
/// **Example**: `convert(x, y, {.saturate = true});`
struct convert_options {
  bool saturate = false;
  rounding round = rounding::nearest_even;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

/// What a narrowing cast did, measured in the same pass (cast telemetry).
struct cast_stats {
  float amax = 0.0f;           ///< max |x| over the non-NaN inputs (inf if any)
  std::size_t overflow = 0;    ///< finite inputs beyond the range: became inf/NaN, or max when saturating
  std::size_t underflow = 0;   ///< nonzero finite inputs that became +-0
  std::size_t nan = 0;         ///< NaN inputs
};

namespace detail {

template <class T>
concept bulk_narrow_type = std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2> ||
                           std::is_same_v<T, float16> || std::is_same_v<T, bfloat16>;

/// Throws std::invalid_argument naming `where` and the value unless
/// `options.round` is one of the enum's values (e.g. not `rounding(7)`).
inline void check_convert_options(const convert_options& options, const char* where) {
  SCALIFY_CHECK(options.round == rounding::nearest_even || options.round == rounding::toward_zero ||
                    options.round == rounding::stochastic,
                std::invalid_argument,
                std::string(where) + ": unknown rounding " + std::to_string(static_cast<int>(options.round)) +
                    " in convert_options (expected nearest_even, toward_zero or stochastic)");
}

inline void check_sizes(std::size_t src, std::size_t dst) {
  SCALIFY_CHECK(src == dst, shape_error,
                "scalify::convert: source has " + std::to_string(src) + " elements, destination has " +
                    std::to_string(dst));
}

/// Scalar cast of src[begin, n) with statistics; the reference for every path.
template <const format_spec& S, class To>
void narrow_scalar(const float* src, To* dst, std::size_t begin, std::size_t n, const convert_options& o,
                   bool saturate, stochastic_keys keys, narrow_stats* stats) {
  for (std::size_t i = begin; i < n; ++i) {
    const uint32_t random = o.round == rounding::stochastic ? stochastic_bits(keys, o.offset + i) : 0u;
    bool overflowed = false;
    const uint32_t code = encode<S>(src[i], o.round, saturate, random, &overflowed);
    dst[i] = from_code<To>(code);
    if (stats != nullptr) {
      const uint32_t a = std::bit_cast<uint32_t>(src[i]) & 0x7FFF'FFFFu;
      if (a > 0x7F80'0000u) {
        ++stats->nan;
        continue;
      }
      stats->amax_bits = a > stats->amax_bits ? a : stats->amax_bits;
      if (a == 0x7F80'0000u) continue;
      if (overflowed) ++stats->overflow;
      if (a != 0 && (code & S.magnitude_mask()) == 0) ++stats->underflow;
    }
  }
}

/// The bulk casts of one CPU path for format S (the cast part of the kernel
/// table, kernels/table.hpp). Each returns how many leading elements it did;
/// the scalar loop does the rest. Null: none (the scalar path).
template <const format_spec& S>
struct cast_kernels {
  using narrow_fn = std::size_t (*)(const float* src, void* dst, std::size_t n, bool saturate, stochastic_keys keys,
                                    uint64_t offset, narrow_stats& stats);
  narrow_fn narrow[3][2] = {};  ///< [rounding: nearest_even, toward_zero, stochastic][statistics off, on]
  std::size_t (*widen)(const void* src, float* dst, std::size_t n) = nullptr;
};

static_assert(static_cast<int>(rounding::nearest_even) == 0 && static_cast<int>(rounding::toward_zero) == 1 &&
                  static_cast<int>(rounding::stochastic) == 2,
              "cast_kernels::narrow is indexed by rounding");

#if SCALIFY_HAVE_X86_SIMD
#define SCALIFY_CAST_KERNELS_(ns)                                                                           \
  {{{&ns::narrow_from_float<S, rounding::nearest_even, false>,                                      \
     &ns::narrow_from_float<S, rounding::nearest_even, true>},                                      \
    {&ns::narrow_from_float<S, rounding::toward_zero, false>,                                       \
     &ns::narrow_from_float<S, rounding::toward_zero, true>},                                       \
    {&ns::narrow_from_float<S, rounding::stochastic, false>,                                        \
     &ns::narrow_from_float<S, rounding::stochastic, true>}},                                       \
   &ns::widen_to_float<S>}
template <const format_spec& S>
inline constexpr cast_kernels<S> kAvx2CastKernels = SCALIFY_CAST_KERNELS_(avx2);
template <const format_spec& S>
inline constexpr cast_kernels<S> kAvx512CastKernels = SCALIFY_CAST_KERNELS_(avx512);
#undef SCALIFY_CAST_KERNELS_
#endif

/// The bulk casts of `path` for format S; avx512bf16 has no cast of its own
/// (the avx512 ones).
template <const format_spec& S>
const cast_kernels<S>& cast_kernels_for(cpu_path path) {
  static constexpr cast_kernels<S> kScalar{};
#if SCALIFY_HAVE_X86_SIMD
  switch (path) {
    case cpu_path::scalar: return kScalar;
    case cpu_path::avx2: return kAvx2CastKernels<S>;
    case cpu_path::avx512:
    case cpu_path::avx512bf16: return kAvx512CastKernels<S>;
  }
#else
  (void)path;
#endif
  return kScalar;
}

template <class To>
void convert_narrow(std::span<const float> src, std::span<To> dst, const convert_options& o,
                    narrow_stats* stats) {
  check_convert_options(o, stats != nullptr ? "scalify::convert_with_stats" : "scalify::convert");
  check_sizes(src.size(), dst.size());
  constexpr const format_spec& S = format_of<To>::value;
  const bool saturate = o.saturate || o.round == rounding::stochastic;
  const stochastic_keys keys = make_stochastic_keys(o.seed);
  const std::size_t n = src.size();
  std::size_t done = 0;
  // o.round is one of the three (check_convert_options).
  const auto simd = cast_kernels_for<S>(active_cpu_path()).narrow[static_cast<int>(o.round)][stats != nullptr];
  if (simd != nullptr && n > 0) {
    narrow_stats local;
    done = simd(src.data(), dst.data(), n, saturate, keys, o.offset, stats != nullptr ? *stats : local);
  }
  narrow_scalar<S>(src.data(), dst.data(), done, n, o, saturate, keys, stats);
}

template <class From>
void convert_widen(std::span<const From> src, std::span<float> dst) {
  check_sizes(src.size(), dst.size());
  constexpr const format_spec& S = format_of<From>::value;
  const std::size_t n = src.size();
  std::size_t done = 0;
  const auto simd = cast_kernels_for<S>(active_cpu_path()).widen;
  if (simd != nullptr) done = simd(src.data(), dst.data(), n);
  for (std::size_t i = done; i < n; ++i) {
    if constexpr (S.bits == 8) {
      dst[i] = kDecodeTable<S>[to_code(src[i])];  // the same bits, precomputed
    } else {
      dst[i] = std::bit_cast<float>(decode_float_bits<S>(to_code(src[i])));
    }
  }
}

template <class T>
concept convertible_type = std::is_same_v<T, float> || std::is_same_v<T, double> || narrow_float<T>;

/// double -> float with `o`: nearest even or toward zero, saturating or not
/// (finite values beyond float's range become +-FLT_MAX). Stochastic rounding
/// has no double -> float form here: std::invalid_argument.
inline float narrow_double(double x, const convert_options& o) {
  SCALIFY_CHECK(o.round != rounding::stochastic, std::invalid_argument,
                "scalify::convert: stochastic rounding of double -> float is not supported");
  float f = static_cast<float>(x);  // nearest even
  if (o.round == rounding::toward_zero && std::isfinite(x) && std::abs(static_cast<double>(f)) > std::abs(x)) {
    f = std::nextafter(f, 0.0f);
  }
  if (o.saturate && std::isinf(f) && std::isfinite(x)) f = std::copysign(std::numeric_limits<float>::max(), f);
  return f;
}

/// The pairs without a SIMD path: element by element, one rounding each (a
/// narrow source widens exactly to float first, a double rounds directly).
template <class From, class To>
void convert_scalar(std::span<const From> src, std::span<To> dst, const convert_options& o) {
  const stochastic_keys keys = make_stochastic_keys(o.seed);
  const bool saturate = o.saturate || o.round == rounding::stochastic;
  for (std::size_t i = 0; i < src.size(); ++i) {
    if constexpr (std::is_same_v<To, double>) {
      dst[i] = static_cast<double>(cast_source(src[i]));  // exact
    } else if constexpr (std::is_same_v<To, float>) {
      if constexpr (std::is_same_v<From, double>) {
        dst[i] = narrow_double(src[i], o);
      } else {
        dst[i] = static_cast<float>(src[i]);  // exact
      }
    } else {
      const uint32_t random = o.round == rounding::stochastic ? stochastic_bits(keys, o.offset + i) : 0u;
      dst[i] = round_cast<To>(src[i], o.round, saturate, random);
    }
  }
}

/// narrow -> narrow with SIMD: chunks widened exactly to float, then narrowed
/// with the chunk's offset (the same bytes as one scalar pass).
template <class From, class To>
void convert_via_float(std::span<const From> src, std::span<To> dst, const convert_options& o) {
  constexpr std::size_t kChunk = 1024;
  float buffer[kChunk];
  convert_options chunk_options = o;
  for (std::size_t begin = 0; begin < src.size(); begin += kChunk) {
    const std::size_t n = std::min(kChunk, src.size() - begin);
    convert_widen<From>(src.subspan(begin, n), std::span<float>(buffer, n));
    chunk_options.offset = o.offset + begin;
    convert_narrow<To>(std::span<const float>(buffer, n), dst.subspan(begin, n), chunk_options, nullptr);
  }
}

}  // namespace detail

/// Casts every element of `src` into `dst` (same size, else shape_error),
/// between any two of float, double, float16, bfloat16, float8_e4m3fn,
/// float8_e5m2 and float8_e8m0fnu. The same type is a copy; widening is
/// exact and ignores `options`; narrowing rounds once with `options` (a
/// rounding mode outside the enum throws std::invalid_argument; stochastic
/// double -> float throws too). float <-> float8_e4m3fn, float8_e5m2,
/// float16, bfloat16 (and narrow -> narrow through them) use the SIMD path
/// of the active CPU; the other pairs go element by element (round_cast).
///
/// **Example**:
/// ```
/// std::vector<float> x = {0.1f, 300.0f, 1e6f};
/// std::vector<scalify::float8_e4m3fn> y(x.size());
/// scalify::convert(std::span<const float>(x), std::span(y), {.saturate = true});  // 0.1015625, 288, 448
/// ```
template <class From, class To>
void convert(std::span<const From> src, std::span<To> dst, const convert_options& options = {}) {
  static_assert(detail::convertible_type<From> && detail::convertible_type<To>,
                "scalify::convert casts between float, double, float16, bfloat16, float8_e4m3fn, "
                "float8_e5m2 and float8_e8m0fnu");
  if constexpr (std::is_same_v<From, float> && detail::bulk_narrow_type<To>) {
    detail::convert_narrow<To>(src, dst, options, nullptr);
  } else if constexpr (detail::bulk_narrow_type<From> && std::is_same_v<To, float>) {
    detail::convert_widen<From>(src, dst);
  } else {
    detail::check_convert_options(options, "scalify::convert");
    detail::check_sizes(src.size(), dst.size());
    if constexpr (std::is_same_v<From, To>) {
      std::copy(src.begin(), src.end(), dst.begin());
    } else if constexpr (detail::bulk_narrow_type<From> && detail::bulk_narrow_type<To>) {
      detail::convert_via_float(src, dst, options);
    } else {
      detail::convert_scalar(src, dst, options);
    }
  }
}

/// Like convert() for a narrowing cast, and also returns what it did: the
/// input's absolute max and how many values overflowed, underflowed to zero
/// or were NaN, measured in the same pass.
///
/// **Example**: `auto s = scalify::convert_with_stats(std::span<const float>(x), std::span(y)); s.overflow == 1;`
template <class To>
cast_stats convert_with_stats(std::span<const float> src, std::span<To> dst, const convert_options& options = {}) {
  static_assert(detail::bulk_narrow_type<To>,
                "scalify::convert_with_stats narrows float to float8_e4m3fn, float8_e5m2, float16 or bfloat16");
  detail::narrow_stats stats;
  detail::convert_narrow<To>(src, dst, options, &stats);
  return {std::bit_cast<float>(stats.amax_bits), static_cast<std::size_t>(stats.overflow),
          static_cast<std::size_t>(stats.underflow), static_cast<std::size_t>(stats.nan)};
}

/// convert() for any contiguous containers (std::vector, std::array, ...).
/// Eigen objects are not contiguous ranges: pass
/// `std::span(m.data(), m.size())` (same shape and storage order on both sides).
///
/// **Example**: `scalify::convert(x_vector, y_vector);`
template <std::ranges::contiguous_range Src, std::ranges::contiguous_range Dst>
  requires(!std::is_same_v<std::remove_cvref_t<Src>, std::span<const std::ranges::range_value_t<Src>>>)
void convert(const Src& src, Dst&& dst, const convert_options& options = {}) {
  using From = std::ranges::range_value_t<Src>;
  using To = std::ranges::range_value_t<Dst>;
  convert(std::span<const From>(std::ranges::data(src), std::ranges::size(src)),
          std::span<To>(std::ranges::data(dst), std::ranges::size(dst)), options);
}

/// convert_with_stats() for any contiguous containers.
template <std::ranges::contiguous_range Src, std::ranges::contiguous_range Dst>
  requires(!std::is_same_v<std::remove_cvref_t<Src>, std::span<const float>>)
cast_stats convert_with_stats(const Src& src, Dst&& dst, const convert_options& options = {}) {
  using To = std::ranges::range_value_t<Dst>;
  return convert_with_stats<To>(std::span<const float>(std::ranges::data(src), std::ranges::size(src)),
                                std::span<To>(std::ranges::data(dst), std::ranges::size(dst)), options);
}

}  // namespace scalify

// The optional compiled part (see scalify/kernels/gemm.hpp): the SIMD bulk
// casts of the four narrow formats, each compiled for every CPU path, are declared
// here with SCALIFY_COMPILED_LIB and defined once in the scalify::compiled
// library (src/convert_instances.cpp).
/// Calls X(T) for the narrow formats of the SIMD bulk casts.
#define SCALIFY_CONVERT_FOR_EACH_NARROW(X) \
  X(::scalify::float8_e4m3fn) X(::scalify::float8_e5m2) X(::scalify::float16) X(::scalify::bfloat16)
/// `prefix template` (extern: a declaration; nothing: a definition) of the
/// narrowing and widening bulk casts of T.
#define SCALIFY_CONVERT_INSTANCE_(prefix, T)                                                            \
  prefix template void ::scalify::detail::convert_narrow<T>(std::span<const float>, std::span<T>,         \
                                                            const ::scalify::convert_options&,            \
                                                            ::scalify::detail::narrow_stats*);            \
  prefix template void ::scalify::detail::convert_widen<T>(std::span<const T>, std::span<float>);

#if defined(SCALIFY_COMPILED_LIB)
#define SCALIFY_CONVERT_EXTERN_(T) SCALIFY_CONVERT_INSTANCE_(extern, T)
SCALIFY_CONVERT_FOR_EACH_NARROW(SCALIFY_CONVERT_EXTERN_)
#undef SCALIFY_CONVERT_EXTERN_
#endif

#endif  // SCALIFY_FORMATS_CONVERT_HPP_
