// fuzz_convert: libFuzzer target for the bulk casts (scalify/formats/convert.hpp).
//
// Input (bytes in order; missing ones read as 0):
//   0       the cast: bits 0-1 the narrow type (e4m3fn, e5m2, float16, bfloat16),
//           bit 2 widening (that type -> float) instead of narrowing
//   1       options: bits 0-1 rounding (nearest_even, toward_zero, stochastic,
//           and 3 = nearest_even again), bit 2 saturate, bit 3 with statistics,
//           bit 4 squeeze float exponents into [2^-30, 2^20) (where the narrow
//           formats round, overflow and underflow) keeping inf and NaN,
//           bit 5 also cast in two chunks
//   2       where the data starts in its buffer (0..63 elements: alignments)
//   3-10    seed, 11-18 offset (stochastic rounding), 19 the chunk split
//   20...   the values: float32 bit patterns (narrowing) or codes (widening)
//
// Each cast runs on every CPU path this machine supports (scoped_cpu_path).
// Findings (abort): a path whose bytes or statistics differ from the scalar
// path's; the scalar path differing from the independent reference
// (tests/support/reference.hpp, written from the format specs); a chunked
// stochastic cast differing from the whole; a write outside the destination
// (guard elements before it; ASan after it); any exception; ASan/UBSan reports.
#include <bit>        // std::bit_cast
#include <cmath>      // std::isnan, std::signbit, std::fabs
#include <cstdint>    // uint8_t, uint16_t, uint32_t, uint64_t
#include <cstdio>     // std::fprintf
#include <cstdlib>    // std::abort
#include <cstring>    // std::memcpy
#include <span>       // std::span
#include <string>     // std::string
#include <vector>     // std::vector

#include "scalify/cpu.hpp"                // all_cpu_paths, cpu_supports, scoped_cpu_path
#include "scalify/formats/convert.hpp"    // convert, convert_with_stats
#include "support/narrow_types.hpp"       // ref_format, code_of, from_code
#include "support/reference.hpp"          // ref::codec, ref::decode, ref::accumulate

namespace {

namespace ref = scalify_test::ref;
using scalify::cpu_path;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_convert finding: %s\n", what.c_str());
  std::abort();
}

struct reader {
  const uint8_t* data;
  size_t size, pos = 0;
  uint8_t byte() { return pos < size ? data[pos++] : 0; }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{byte()} << (8 * i);
    return v;
  }
};

/// bit 4 of the options: exponent e -> 97 + e % 50 (2^-30 .. 2^19), inf and NaN kept.
uint32_t squeeze(uint32_t bits) {
  const uint32_t e = (bits >> 23) & 0xFF;
  if (e == 0xFF) return bits;
  return (bits & 0x807F'FFFFu) | ((97 + e % 50) << 23);
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

template <class To>
const ref::codec& codec_of() {
  static const ref::codec c(scalify_test::ref_format<To>);
  return c;
}

struct narrow_result {
  std::vector<uint32_t> codes;
  scalify::cast_stats stats;
};

/// One narrowing cast on the active path; checks the guard elements before dst.
template <class To>
narrow_result narrow_once(const std::vector<float>& buf, size_t start, const scalify::convert_options& o,
                          bool with_stats) {
  const size_t n = buf.size() - start;
  const To guard = scalify_test::from_code<To>(0x5A);
  std::vector<To> out(buf.size(), guard);  // ends where the data ends: ASan sees writes past it
  const std::span<const float> src(buf.data() + start, n);
  const std::span<To> dst(out.data() + start, n);
  narrow_result r;
  if (with_stats) {
    r.stats = scalify::convert_with_stats(src, dst, o);
  } else {
    scalify::convert(src, dst, o);
  }
  for (size_t i = 0; i < start; ++i) {
    if (scalify_test::code_of(out[i]) != 0x5A) finding("convert wrote before the destination");
  }
  for (size_t i = 0; i < n; ++i) r.codes.push_back(scalify_test::code_of(dst[i]));
  return r;
}

bool same_stats(const scalify::cast_stats& a, const scalify::cast_stats& b) {
  return std::bit_cast<uint32_t>(a.amax) == std::bit_cast<uint32_t>(b.amax) && a.overflow == b.overflow &&
         a.underflow == b.underflow && a.nan == b.nan;
}

template <class To>
void fuzz_narrow(reader& in, uint8_t opt, size_t start, uint64_t seed, uint64_t offset, size_t split) {
  const auto round = (opt & 3) == 1 ? scalify::rounding::toward_zero
                     : (opt & 3) == 2 ? scalify::rounding::stochastic
                                      : scalify::rounding::nearest_even;
  const scalify::convert_options o{.saturate = (opt & 4) != 0, .round = round, .seed = seed, .offset = offset};
  const bool with_stats = (opt & 8) != 0;
  std::vector<float> buf(start);
  while (in.size - in.pos >= 4) {
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= uint32_t{in.byte()} << (8 * i);
    buf.push_back(std::bit_cast<float>((opt & 16) != 0 ? squeeze(bits) : bits));
  }
  const size_t n = buf.size() - start;
  const std::string what = std::string(scalify_test::ref_format<To>.name) + " n " + std::to_string(n) + " start " +
                           std::to_string(start) + " round " + std::to_string(int(round)) +
                           (o.saturate ? " saturate" : "") + (with_stats ? " stats" : "");

  // Two chunks, the second with offset + split: the same bytes as one call
  // (documented for stochastic rounding; trivially true for the others).
  auto check_chunks = [&](cpu_path p) {
    if ((opt & 32) == 0) return;
    const size_t s = split % (n + 1);
    std::vector<To> whole(n), parts(n);
    scalify::convert(std::span<const float>(buf.data() + start, n), std::span<To>(whole), o);
    scalify::convert(std::span<const float>(buf.data() + start, s), std::span<To>(parts.data(), s), o);
    scalify::convert_options o2 = o;
    o2.offset = offset + s;
    scalify::convert(std::span<const float>(buf.data() + start + s, n - s), std::span<To>(parts.data() + s, n - s),
                     o2);
    for (size_t i = 0; i < n; ++i) {
      if (scalify_test::code_of(whole[i]) != scalify_test::code_of(parts[i])) {
        finding(what + ": path " + std::string(scalify::to_string(p)) + ", cast in two chunks at " +
                std::to_string(s) + " differs at element " + std::to_string(i));
      }
    }
  };

  narrow_result scalar;
  {
    scalify::scoped_cpu_path guard(cpu_path::scalar);
    scalar = narrow_once<To>(buf, start, o, with_stats);
    check_chunks(cpu_path::scalar);
  }
  // The scalar path against the reference.
  const ref::codec& c = codec_of<To>();
  const ref::mode m{round == scalify::rounding::toward_zero ? ref::rounding::toward_zero : ref::rounding::nearest_even,
                    o.saturate};
  ref::stats expected_stats;
  for (size_t i = 0; i < n; ++i) {
    const float x = buf[start + i];
    const uint32_t e = round == scalify::rounding::stochastic
                           ? c.encode_stochastic(x, scalify::stochastic_bits(seed, offset + i))
                           : c.encode(x, m);
    if (scalar.codes[i] != e) {
      finding(what + ": scalar path, input " + hex(std::bit_cast<uint32_t>(x)) + " gives " + hex(scalar.codes[i]) +
              ", the reference " + hex(e));
    }
    ref::accumulate(expected_stats, c, m, x, e);
  }
  if (with_stats) {
    const bool overflow_defined = round != scalify::rounding::stochastic;  // the reference's rule is for RNE/RTZ
    if (std::bit_cast<uint32_t>(scalar.stats.amax) != std::bit_cast<uint32_t>(expected_stats.amax) ||
        scalar.stats.nan != expected_stats.nan || scalar.stats.underflow != expected_stats.underflow ||
        (overflow_defined && scalar.stats.overflow != expected_stats.overflow)) {
      finding(what + ": scalar statistics differ from the reference");
    }
  }
  // Every other path against the scalar one, bit for bit.
  for (cpu_path p : scalify::all_cpu_paths) {
    if (p == cpu_path::scalar || !scalify::cpu_supports(p)) continue;
    scalify::scoped_cpu_path guard(p);
    const narrow_result r = narrow_once<To>(buf, start, o, with_stats);
    for (size_t i = 0; i < n; ++i) {
      if (r.codes[i] != scalar.codes[i]) {
        finding(what + ": path " + std::string(scalify::to_string(p)) + ", element " + std::to_string(i) +
                ", input " + hex(std::bit_cast<uint32_t>(buf[start + i])) + " gives " + hex(r.codes[i]) +
                ", the scalar path " + hex(scalar.codes[i]));
      }
    }
    if (with_stats && !same_stats(r.stats, scalar.stats)) {
      finding(what + ": path " + std::string(scalify::to_string(p)) + " statistics differ from the scalar path's");
    }
    check_chunks(p);
  }
}

/// One widening cast on the active path, as float bits.
template <class From>
std::vector<uint32_t> widen_once(const std::vector<From>& buf, size_t start) {
  const size_t n = buf.size() - start;
  std::vector<float> out(buf.size(), std::bit_cast<float>(0xDEADBEEFu));
  scalify::convert(std::span<const From>(buf.data() + start, n), std::span<float>(out.data() + start, n));
  for (size_t i = 0; i < start; ++i) {
    if (std::bit_cast<uint32_t>(out[i]) != 0xDEADBEEFu) finding("convert wrote before the destination");
  }
  std::vector<uint32_t> bits;
  for (size_t i = 0; i < n; ++i) bits.push_back(std::bit_cast<uint32_t>(out[start + i]));
  return bits;
}

template <class From>
void fuzz_widen(reader& in, size_t start) {
  constexpr size_t kBytes = sizeof(From);
  std::vector<From> buf(start, scalify_test::from_code<From>(0));
  while (in.size - in.pos >= kBytes) {
    uint32_t code = 0;
    for (size_t i = 0; i < kBytes; ++i) code |= uint32_t{in.byte()} << (8 * i);
    buf.push_back(scalify_test::from_code<From>(code));
  }
  const size_t n = buf.size() - start;
  const std::string what = std::string(scalify_test::ref_format<From>.name) + " -> float, n " + std::to_string(n);
  std::vector<uint32_t> scalar;
  {
    scalify::scoped_cpu_path guard(cpu_path::scalar);
    scalar = widen_once(buf, start);
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t code = scalify_test::code_of(buf[start + i]);
    const double e = ref::decode(scalify_test::ref_format<From>, code);
    const float got = std::bit_cast<float>(scalar[i]);
    const bool ok = std::isnan(e) ? std::isnan(got) && std::signbit(got) == std::signbit(e)
                                  : static_cast<double>(got) == e && std::signbit(got) == std::signbit(e);
    if (!ok) finding(what + ": scalar path, code " + hex(code) + " gives " + hex(scalar[i]));
  }
  for (cpu_path p : scalify::all_cpu_paths) {
    if (p == cpu_path::scalar || !scalify::cpu_supports(p)) continue;
    scalify::scoped_cpu_path guard(p);
    const std::vector<uint32_t> r = widen_once(buf, start);
    for (size_t i = 0; i < n; ++i) {
      if (r[i] != scalar[i]) {
        finding(what + ": path " + std::string(scalify::to_string(p)) + ", code " +
                hex(scalify_test::code_of(buf[start + i])) + " gives " + hex(r[i]) + ", the scalar path " +
                hex(scalar[i]));
      }
    }
  }
}

template <class T>
void fuzz_type(reader& in, uint8_t op, uint8_t opt, size_t start, uint64_t seed, uint64_t offset, size_t split) {
  if ((op & 4) != 0) {
    fuzz_widen<T>(in, start);
  } else {
    fuzz_narrow<T>(in, opt, start, seed, offset, split);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  reader in{data, size};
  const uint8_t op = in.byte(), opt = in.byte();
  const size_t start = in.byte() % 64;
  const uint64_t seed = in.u64(), offset = in.u64();
  const size_t split = in.byte();
  try {
    switch (op & 3) {
      case 0: fuzz_type<scalify::float8_e4m3fn>(in, op, opt, start, seed, offset, split); break;
      case 1: fuzz_type<scalify::float8_e5m2>(in, op, opt, start, seed, offset, split); break;
      case 2: fuzz_type<scalify::float16>(in, op, opt, start, seed, offset, split); break;
      default: fuzz_type<scalify::bfloat16>(in, op, opt, start, seed, offset, split); break;
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  }
  return 0;
}
