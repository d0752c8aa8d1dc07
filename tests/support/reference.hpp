// tests/support/reference.hpp: an independent, deliberately simple reference
// for the narrow number formats (float8_e4m3fn, float8_e5m2, float8_e8m0fnu,
// binary16, bfloat16), written from the specs and nothing else:
//   - OCP 8-bit Floating Point Specification (OFP8), rev. 1.0, 2023
//     (E4M3 "fn": no infinities, S.1111.111 is NaN; E5M2: IEEE-like);
//   - OCP Microscaling Formats (MX) v1.0 (E8M0: unsigned exponent, 0xFF NaN);
//   - IEEE 754-2019 (binary16, round to nearest ties to even);
//   - the overflow and NaN rules of scalify's API contract (docs/formats.md).
//
// Nothing here includes or calls scalify, so that the tests compare the
// library against a second, independent implementation. Everything is exact:
// every value of every format is a double, every rounding threshold (the
// midpoint of two neighbours) has one more significant bit and is a double
// too, so the comparisons below decide rounding without any error.
//
// Two levels:
//   codec           value table + binary search: any double in, code out
//                   (nearest-even, toward zero, saturating or not, stochastic);
//   float_segments  for float32 inputs only: the 2^32 bit patterns split into
//                   runs that map to one code, built from the codec's
//                   thresholds, so that an exhaustive test can produce the
//                   expected code of every float with a memset per run.
#pragma once

#include <algorithm>  // std::upper_bound, std::fill_n
#include <bit>        // std::bit_cast
#include <cmath>      // std::ldexp, std::isnan, std::signbit, std::floor
#include <cstdint>    // std::uint32_t, std::uint64_t
#include <limits>     // std::numeric_limits
#include <stdexcept>  // std::logic_error
#include <string>     // std::string (error messages)
#include <vector>     // value tables, segments

namespace scalify_test::ref {

// ------------------------------------------------------------------------------
// Format descriptions

enum class format_kind {
  ieee,               // exponent all ones: mantissa 0 is inf, anything else NaN
  finite_nan_only,    // "fn": no inf; exponent and mantissa all ones is NaN
  unsigned_exponent,  // "e8m0fnu": no sign, no zero, no subnormals; all ones NaN
};

struct format {
  const char* name;
  int total_bits;
  int exponent_bits;
  int mantissa_bits;
  int bias;
  format_kind kind;

  constexpr bool is_signed() const { return kind != format_kind::unsigned_exponent; }
  constexpr std::uint32_t sign_bit() const {
    return is_signed() ? std::uint32_t{1} << (total_bits - 1) : 0;
  }
  constexpr std::uint32_t exponent_all_ones() const {
    return (std::uint32_t{1} << exponent_bits) - 1;
  }
  constexpr std::uint32_t mantissa_all_ones() const {
    return (std::uint32_t{1} << mantissa_bits) - 1;
  }
  // Largest positive finite code. Positive finite codes are 0..max_code and
  // their values increase with the code (this is what makes the tables work).
  constexpr std::uint32_t max_code() const {
    switch (kind) {
      case format_kind::ieee:  // exponent all ones minus one, mantissa all ones
        return ((exponent_all_ones() - 1) << mantissa_bits) | mantissa_all_ones();
      case format_kind::finite_nan_only:  // all ones minus one
        return ((exponent_all_ones() << mantissa_bits) | mantissa_all_ones()) - 1;
      case format_kind::unsigned_exponent:
        return exponent_all_ones() - 1;
    }
    return 0;
  }
  constexpr bool has_inf() const { return kind == format_kind::ieee; }
  // +inf; only meaningful when has_inf().
  constexpr std::uint32_t inf_code() const { return exponent_all_ones() << mantissa_bits; }
  // The canonical (quiet) positive NaN that casts produce.
  constexpr std::uint32_t nan_code() const {
    switch (kind) {
      case format_kind::ieee:  // exponent all ones, top mantissa bit (quiet bit)
        return (exponent_all_ones() << mantissa_bits) | (std::uint32_t{1} << (mantissa_bits - 1));
      case format_kind::finite_nan_only:
        return (exponent_all_ones() << mantissa_bits) | mantissa_all_ones();
      case format_kind::unsigned_exponent:
        return exponent_all_ones();
    }
    return 0;
  }
  constexpr std::uint32_t code_count() const { return std::uint32_t{1} << total_bits; }
};

inline constexpr format e4m3fn{"float8_e4m3fn", 8, 4, 3, 7, format_kind::finite_nan_only};
inline constexpr format e5m2{"float8_e5m2", 8, 5, 2, 15, format_kind::ieee};
inline constexpr format e8m0fnu{"float8_e8m0fnu", 8, 8, 0, 127, format_kind::unsigned_exponent};
inline constexpr format binary16{"float16", 16, 5, 10, 15, format_kind::ieee};
inline constexpr format bfloat16{"bfloat16", 16, 8, 7, 127, format_kind::ieee};

// ------------------------------------------------------------------------------
// Decoding, straight from the definition

// Value of `code`: (-1)^s * 2^(e - bias) * (1 + m / 2^M) for normal numbers,
// (-1)^s * 2^(1 - bias) * (m / 2^M) for subnormals (e == 0), 2^(e - 127) for
// e8m0fnu. Infinities are +-inf, NaN codes give a quiet NaN with the code's sign.
inline double decode(const format& f, std::uint32_t code) {
  const bool negative = (code & f.sign_bit()) != 0;
  const std::uint32_t magnitude = code & ~f.sign_bit() & (f.code_count() - 1);
  const std::uint32_t e = magnitude >> f.mantissa_bits;
  const std::uint32_t m = magnitude & f.mantissa_all_ones();
  double value = 0;
  switch (f.kind) {
    case format_kind::unsigned_exponent:
      if (e == f.exponent_all_ones()) return std::numeric_limits<double>::quiet_NaN();
      return std::ldexp(1.0, static_cast<int>(e) - f.bias);
    case format_kind::ieee:
      if (e == f.exponent_all_ones()) {
        value = m == 0 ? std::numeric_limits<double>::infinity()
                       : std::numeric_limits<double>::quiet_NaN();
        return negative ? -value : value;
      }
      break;
    case format_kind::finite_nan_only:
      if (e == f.exponent_all_ones() && m == f.mantissa_all_ones()) {
        value = std::numeric_limits<double>::quiet_NaN();
        return negative ? -value : value;
      }
      break;
  }
  const double fraction = std::ldexp(static_cast<double>(m), -f.mantissa_bits);  // m / 2^M
  if (e == 0) {
    value = std::ldexp(fraction, 1 - f.bias);
  } else {
    value = std::ldexp(1.0 + fraction, static_cast<int>(e) - f.bias);
  }
  return negative ? -value : value;
}

inline bool is_nan_code(const format& f, std::uint32_t code) { return std::isnan(decode(f, code)); }
inline bool is_inf_code(const format& f, std::uint32_t code) { return std::isinf(decode(f, code)); }

// ------------------------------------------------------------------------------
// Encoding

enum class rounding { nearest_even, toward_zero };

inline const char* to_string(rounding r) {
  return r == rounding::nearest_even ? "nearest_even" : "toward_zero";
}

// A cast mode: rounding + overflow policy. Inf and NaN inputs are handled the
// same way in every mode (inf -> inf, or NaN with its sign when the format has
// no inf; NaN -> canonical NaN with its sign).
struct mode {
  rounding round = rounding::nearest_even;
  bool saturate = false;
};

class codec {
 public:
  explicit codec(const format& f) : f_(f), values_(f.max_code() + 2) {
    for (std::uint32_t c = 0; c <= f.max_code(); ++c) values_[c] = decode(f, c);
    for (std::uint32_t c = 1; c <= f.max_code(); ++c) {
      if (!(values_[c - 1] < values_[c])) throw std::logic_error("codes not monotonic");
    }
    // One "virtual" code past the largest finite value, the value the format
    // would have if it went on: max + ulp(max) (for e8m0fnu: 2 * max). Values
    // that round to it overflow. For e4m3fn 448 + 32 = 480, for e5m2
    // 57344 + 8192 = 65536, for binary16 65504 + 32 = 65536.
    const std::uint32_t top = f.max_code();
    values_[top + 1] = f.kind == format_kind::unsigned_exponent
                           ? 2 * values_[top]
                           : values_[top] + (values_[top] - values_[top - 1]);
  }

  const format& fmt() const { return f_; }
  double value(std::uint32_t positive_code) const { return values_.at(positive_code); }
  // value(max_code() + 1): the first value that overflows.
  double overflow_value() const { return values_[f_.max_code() + 1]; }

  // What an overflowing finite input becomes.
  std::uint32_t overflow_code(bool saturate) const {
    if (saturate) return f_.max_code();
    return f_.has_inf() ? f_.inf_code() : f_.nan_code();
  }

  // Round x (any double, including inf and NaN) to a code.
  std::uint32_t encode(double x, mode m = {}) const {
    std::uint32_t sign = 0;
    double ax = 0;
    std::uint32_t special = 0;
    if (handle_special(x, sign, ax, special)) return special;
    const std::uint32_t top = f_.max_code();
    // c: the largest code whose value is <= ax (e8m0fnu has no zero: below its
    // smallest value everything becomes that smallest value).
    const auto it = std::upper_bound(values_.begin(), values_.begin() + top + 1, ax);
    if (it == values_.begin()) return sign | 0;
    const std::uint32_t c = static_cast<std::uint32_t>(it - values_.begin()) - 1;
    std::uint32_t r = c;
    if (ax != values_[c]) {
      if (m.round == rounding::toward_zero) {
        r = ax >= values_[top + 1] ? top + 1 : c;
      } else {
        // values_[c] < ax; values_[c + 1] exists (the virtual one at worst).
        const double mid = (values_[c] + values_[c + 1]) / 2;  // exact
        if (ax < mid) {
          r = c;
        } else if (ax > mid) {
          r = c + 1;
        } else {
          r = (c % 2 == 0) ? c : c + 1;  // tie: even code = even mantissa LSB
        }
      }
    }
    if (r == top + 1) r = overflow_code(m.saturate);
    return sign | r;
  }

  // Stochastic rounding, always saturating. F = floor(frac * 2^32) where frac
  // is the exact fraction of the way from the neighbour toward zero to the one
  // away from zero; round away from zero iff random_bits < F.
  std::uint32_t encode_stochastic(double x, std::uint32_t random_bits) const {
    std::uint32_t sign = 0;
    double ax = 0;
    std::uint32_t special = 0;
    if (handle_special(x, sign, ax, special)) return special;
    const std::uint32_t top = f_.max_code();
    if (ax >= values_[top]) return sign | top;
    const auto it = std::upper_bound(values_.begin(), values_.begin() + top + 1, ax);
    if (it == values_.begin()) return sign | 0;
    const std::uint32_t c = static_cast<std::uint32_t>(it - values_.begin()) - 1;
    if (ax == values_[c]) return sign | c;
    return sign | (random_bits < stochastic_threshold(ax, c) ? c + 1 : c);
  }

  // The largest positive code whose value is <= ax (ax >= 0 finite), or -1
  // when ax is below every value (e8m0fnu only: it has no zero).
  long floor_code(double ax) const {
    const auto it = std::upper_bound(values_.begin(), values_.begin() + f_.max_code() + 1, ax);
    return static_cast<long>(it - values_.begin()) - 1;
  }

  // floor(frac * 2^32) for |x| = ax between value(c) and value(c + 1).
  std::uint64_t stochastic_threshold(double ax, std::uint32_t c) const {
    // ax - value(c) is exact (Sterbenz: value(c) <= ax < 2 value(c), or
    // value(c) == 0); the spacing is a power of two, so the division and the
    // scaling by 2^32 are exact too, and floor() takes the fixed-point part.
    const double diff = ax - values_[c];
    const double spacing = values_[c + 1] - values_[c];
    return static_cast<std::uint64_t>(std::floor(diff / spacing * 4294967296.0));
  }

 private:
  // Deals with NaN, inf, the sign and (e8m0fnu) non-positive inputs. Returns
  // true with the final code in `out`, or false with the sign and |x|.
  bool handle_special(double x, std::uint32_t& sign, double& ax, std::uint32_t& out) const {
    if (!f_.is_signed()) {
      if (std::isnan(x) || std::isinf(x) || !(x > 0)) {
        out = f_.nan_code();
        return true;
      }
      sign = 0;
      ax = x;
      return false;
    }
    sign = std::signbit(x) ? f_.sign_bit() : 0;
    if (std::isnan(x)) {
      out = sign | f_.nan_code();
      return true;
    }
    if (std::isinf(x)) {
      out = sign | (f_.has_inf() ? f_.inf_code() : f_.nan_code());
      return true;
    }
    ax = std::fabs(x);
    return false;
  }

  format f_;
  std::vector<double> values_;  // values_[c] for codes 0..max_code, + the virtual one
};

// ------------------------------------------------------------------------------
// float32 inputs: the runs of bit patterns that map to one code

inline float float_from_bits(std::uint32_t bits) { return std::bit_cast<float>(bits); }
inline std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }

class float_segments {
 public:
  // Expected codes of all 2^32 float inputs for the given format and mode.
  float_segments(const codec& c, mode m) {
    const format& f = c.fmt();
    constexpr std::uint32_t kInf = 0x7F800000u;
    // Positive half, [0x00000000, 0x80000000).
    std::vector<std::uint64_t> start;
    std::vector<std::uint32_t> code;
    if (f.is_signed()) {
      start.push_back(0);  // +0 and the smallest floats -> +0
      code.push_back(0);
    } else {
      start.push_back(0);  // +0 -> NaN (no zero, and x <= 0 is NaN)
      code.push_back(f.nan_code());
      start.push_back(1);  // every positive float below value(0) clamps to code 0
      code.push_back(0);
    }
    const std::uint32_t top = f.max_code();
    for (std::uint32_t k = 1; k <= top + 1; ++k) {
      // First float that maps to code k: the midpoint of k-1 and k (itself
      // included when k is even: ties to even), or value(k) when truncating.
      const double threshold =
          m.round == rounding::nearest_even ? (c.value(k - 1) + c.value(k)) / 2 : c.value(k);
      std::uint64_t s = kInf;  // thresholds past the float range: empty run
      if (threshold < 0x1p128) {
        const float t = static_cast<float>(threshold);
        if (static_cast<double>(t) != threshold) {
          throw std::logic_error(std::string(f.name) + ": threshold not a float");
        }
        s = bits_of(t);
        if (m.round == rounding::nearest_even && k % 2 == 1) ++s;  // tie stays below
      }
      s = std::min<std::uint64_t>(s, kInf);
      start.push_back(s);
      code.push_back(k == top + 1 ? c.overflow_code(m.saturate) : k);
    }
    start.push_back(kInf);  // +inf
    code.push_back(f.has_inf() ? f.inf_code() : f.nan_code());
    if (!f.is_signed()) code.back() = f.nan_code();
    start.push_back(kInf + 1);  // NaNs
    code.push_back(f.nan_code());
    for (std::size_t i = 1; i < start.size(); ++i) {
      if (start[i] < start[i - 1]) throw std::logic_error("segments not sorted");
    }
    // Negative half: the mirror image with the sign bit set.
    const std::size_t n = start.size();
    for (std::size_t i = 0; i < n; ++i) {
      start.push_back(start[i] + 0x80000000u);
      if (f.is_signed()) {
        code.push_back(code[i] | f.sign_bit());
      } else {
        code.push_back(f.nan_code());  // negative (incl. -0, -inf, NaN) -> NaN
      }
    }
    start.push_back(std::uint64_t{1} << 32);  // sentinel
    start_ = std::move(start);
    code_ = std::move(code);
  }

  // Expected code of the float with these bits.
  std::uint32_t lookup(std::uint32_t bits) const { return code_[segment_of(bits)]; }

  // Writes the expected codes of bit patterns first, first + 1, ..., first +
  // count - 1 (first + count <= 2^32) to out.
  template <class Code>
  void fill(std::uint64_t first, std::size_t count, Code* out) const {
    std::size_t seg = segment_of(static_cast<std::uint32_t>(first));
    std::uint64_t pos = first;
    const std::uint64_t end = first + count;
    while (pos < end) {
      while (start_[seg + 1] <= pos) ++seg;  // skip empty runs
      const std::uint64_t run_end = std::min(end, start_[seg + 1]);
      std::fill_n(out + (pos - first), run_end - pos, static_cast<Code>(code_[seg]));
      pos = run_end;
    }
  }

  std::size_t size() const { return code_.size(); }

 private:
  std::size_t segment_of(std::uint32_t bits) const {
    // Last segment whose start <= bits.
    const auto it = std::upper_bound(start_.begin(), start_.end(), std::uint64_t{bits});
    return static_cast<std::size_t>(it - start_.begin()) - 1;
  }

  std::vector<std::uint64_t> start_;  // size() + 1 entries, last is 2^32
  std::vector<std::uint32_t> code_;
};

// ------------------------------------------------------------------------------
// Statistics a bulk cast should report (cast_stats in scalify/formats/convert.hpp)

struct stats {
  float amax = 0;             // max |x| over non-NaN inputs
  std::size_t overflow = 0;   // finite inputs that became inf/NaN or were clamped
  std::size_t underflow = 0;  // nonzero finite inputs that became +-0
  std::size_t nan = 0;        // NaN inputs
};

// Adds one float input to `s`. A finite input overflows when the same rounding
// without saturation would give inf or NaN (with saturation it is clamped).
inline void accumulate(stats& s, const codec& c, mode m, float x, std::uint32_t result) {
  const format& f = c.fmt();
  if (std::isnan(x)) {
    ++s.nan;
    return;
  }
  s.amax = std::max(s.amax, std::fabs(x));
  if (std::isinf(x)) return;
  const std::uint32_t unsat = c.encode(x, mode{m.round, false});
  if (is_nan_code(f, unsat) || is_inf_code(f, unsat)) ++s.overflow;
  if (x != 0 && f.is_signed() && (result & ~f.sign_bit()) == 0) ++s.underflow;
}

}  // namespace scalify_test::ref
