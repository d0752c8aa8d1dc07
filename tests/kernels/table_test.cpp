// The kernel table (kernels/table.hpp, and the casts' part in
// formats/convert.hpp): every entry of every CPU path this machine has,
// called directly, against the portable scalar routine it stands for.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "scalify/core/scaled_array.hpp"  // detail::type_name
#include "scalify/cpu.hpp"
#include "scalify/formats/convert.hpp"
#include "scalify/kernels/table.hpp"

#if SCALIFY_HAVE_X86_SIMD
#include <xmmintrin.h>  // _mm_getcsr, _mm_setcsr
#endif

using scalify::bfloat16;
using scalify::cpu_path;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
namespace k = scalify::kernels;

namespace {

/// Random finite values of T (normal, sigma 4), a few zeros.
template <class T>
std::vector<T> random_values(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float x = i % 17 == 3 ? 0.0f : dist(gen);
    if constexpr (std::is_same_v<T, float>) {
      v[i] = x;
    } else {
      v[i] = scalify::saturate_cast<T>(x);
    }
  }
  return v;
}

bool same_bits(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(uint32_t)) == 0;
}

std::vector<cpu_path> machine_paths() {
  std::vector<cpu_path> paths;
  for (cpu_path p : scalify::all_cpu_paths) {
    if (scalify::cpu_supports(p)) paths.push_back(p);
  }
  return paths;
}

template <class T>
void check_operand_entries(cpu_path path) {
  const k::operand_kernels<T>& t = k::operand_kernels_for<T>(path);
  const k::path_kernels& pk = k::kernels_for(path);
  INFO("path " << scalify::to_string(path) << ", type " << scalify::detail::type_name<T>());
  if (path == cpu_path::scalar) {
    CHECK(t.pack_a_f32 == nullptr);
    CHECK(t.pack_b_f32 == nullptr);
    CHECK(t.gemv_axpy[0] == nullptr);
    CHECK(t.gemv_dot[0] == nullptr);
    CHECK(t.gemv_dot_bits[0] == nullptr);
  }
  CHECK((t.pack_a_bf16 == nullptr || k::kExactInBf16<T>));
  const int nr = 16;  // nr: any multiple of 8
  // Panel heights: the tile's, and the short tile's (MR - 1; 5 on AVX2, its own transposing packer).
  const int tile_mr = pk.tile_f32->block.mr;
  for (const auto& [m, kk] : {std::pair<int, int>{13, 37}, {6, 64}, {1, 9}, {20, 1}, {40, 21}}) {
    INFO(m << " x " << kk);
    // A, row-major (a.cs == 1).
    const std::vector<T> a = random_values<T>(static_cast<std::size_t>(m * kk), 7);
    const k::strided<T> as{a.data(), kk, 1};
    for (const int mr : {tile_mr, tile_mr - 1}) {
      for (int i0 = 0; i0 < m; i0 += mr) {
        INFO("panel height " << mr << ", i0 " << i0);
        if (t.pack_a_f32 != nullptr) {  // a margin after the panel, which must stay untouched
          std::vector<uint32_t> got(static_cast<std::size_t>(kk * mr + 16), 0xDEADBEEFu), want(got);
          t.pack_a_f32(as, m, kk, i0, mr, got.data());
          k::pack_a_panel<k::packing::f32>(as, m, kk, i0, mr, want.data());
          CHECK(same_bits(got, want));
        }
        if (t.pack_a_bf16 != nullptr) {
          const std::ptrdiff_t ku = (kk + 1) / 2;
          std::vector<uint32_t> got(static_cast<std::size_t>(ku * mr + 16), 0xDEADBEEFu), want(got);
          t.pack_a_bf16(as, m, kk, i0, mr, got.data());
          k::pack_a_panel<k::packing::bf16x2>(as, m, kk, i0, mr, want.data());
          CHECK(same_bits(got, want));
        }
      }
    }
    // A with contiguous columns (a.rs == 1: a transposed row-major matrix);
    // the panel buffer has a margin that must stay untouched.
    const k::strided<T> at{a.data(), 1, m};
    for (const int mr : {tile_mr, tile_mr - 1}) {
      for (int i0 = 0; i0 < m; i0 += mr) {
        if (path == cpu_path::scalar) CHECK(t.pack_a_f32_cols == nullptr);
        if (t.pack_a_f32_cols == nullptr) continue;
        INFO("pack_a_f32_cols, panel height " << mr << ", i0 " << i0);
        std::vector<uint32_t> got(static_cast<std::size_t>(kk * mr + 16), 0xDEADBEEFu), want(got);
        t.pack_a_f32_cols(at, m, kk, i0, mr, got.data());
        k::pack_a_panel<k::packing::f32>(at, m, kk, i0, mr, want.data());
        CHECK(same_bits(got, want));
      }
    }
    // B (kk x n), rows contiguous, every panel of columns [j0, n).
    const int n = 3 * nr + 5, j0 = 2;
    const std::vector<T> b = random_values<T>(static_cast<std::size_t>(kk * n), 8);
    const k::strided<T> bs{b.data(), n, 1};
    const int panels = (n - j0 + nr - 1) / nr;
    for (const bool pairs : {false, true}) {
      const auto f = pairs ? t.pack_b_bf16 : t.pack_b_f32;
      if (f == nullptr) continue;
      const std::ptrdiff_t ku = pairs ? (kk + 1) / 2 : kk;
      std::vector<uint32_t> got(static_cast<std::size_t>(panels * ku * nr), 0xDEADBEEFu), want(got);
      f(bs, kk, 0, ku, j0, n - j0, nr, got.data(), ku * nr);
      for (int p = 0; p < panels; ++p) {
        uint32_t* dst = want.data() + p * ku * nr;
        if (pairs) {
          k::pack_b_panel<k::packing::bf16x2>(bs, kk, n, j0 + p * nr, nr, dst);
        } else {
          k::pack_b_panel<k::packing::f32>(bs, kk, n, j0 + p * nr, nr, dst);
        }
      }
      INFO("pack_b, pairs " << pairs);
      CHECK(same_bits(got, want));
      // A slab: units [u0, u1) of every panel, panels ps units apart (as the
      // GEMM packs one KC block at a time), against the same units of the
      // scalar routine's slab and of the whole panels.
      if (ku < 3) continue;
      const std::ptrdiff_t u0 = 1, u1 = ku - 1, ps = (u1 - u0) * nr + 5;
      std::vector<uint32_t> slab(static_cast<std::size_t>(panels * ps), 0xDEADBEEFu), want_slab(slab);
      f(bs, kk, u0, u1, j0, n - j0, nr, slab.data(), ps);
      for (int p = 0; p < panels; ++p) {
        uint32_t* dst = want_slab.data() + p * ps;
        if (pairs) {
          k::pack_b_panel_units<k::packing::bf16x2>(bs, kk, n, j0 + p * nr, nr, u0, u1, dst);
        } else {
          k::pack_b_panel_units<k::packing::f32>(bs, kk, n, j0 + p * nr, nr, u0, u1, dst);
        }
        for (std::ptrdiff_t u = u0; u < u1; ++u) {
          INFO("slab, panel " << p << ", unit " << u);
          CHECK(std::memcmp(&slab[static_cast<std::size_t>(p * ps + (u - u0) * nr)],
                            &want[static_cast<std::size_t>((p * ku + u) * nr)], nr * sizeof(uint32_t)) == 0);
        }
      }
      CHECK(same_bits(slab, want_slab));  // the padding between panels untouched by both
    }
    // The streaming GEMV: A widened to float (m rows), B rows or columns contiguous.
    const std::vector<float> af = random_values<float>(static_cast<std::size_t>(4 * kk), 9);
    const k::strided<float> a_rows{af.data(), kk, 1};
    const std::vector<T> bt = random_values<T>(static_cast<std::size_t>(kk * n), 10);  // column-major: b.rs == 1
    const k::strided<T> b_cols{bt.data(), 1, kk};
    for (int rows = 1; rows <= k::kGemvMaxRows; ++rows) {
      INFO("gemv with " << rows << " rows");
      const std::ptrdiff_t ld = n + 3;
      std::vector<float> want(static_cast<std::size_t>(rows * ld), 0.0f);
      if (t.gemv_axpy[rows - 1] != nullptr) {
        std::vector<float> got(want.size(), 0.0f);
        t.gemv_axpy[rows - 1](a_rows, bs, kk, j0, n - j0, got.data(), ld);
        k::gemv_block_scalar(a_rows, bs, rows, kk, j0, n - j0, want.data(), ld);
        for (int i = 0; i < rows; ++i) {
          CHECK(std::memcmp(got.data() + i * ld, want.data() + i * ld, (n - j0) * sizeof(float)) == 0);
        }
      }
      if (t.gemv_axpy_bits[rows - 1] != nullptr) {  // e4m3fn; |A| < 2^8 here (A ~ N(0, 4))
        CHECK(std::is_same_v<T, float8_e4m3fn>);
        std::vector<float> got(want.size(), 0.0f);
        t.gemv_axpy_bits[rows - 1](a_rows, bs, kk, j0, n - j0, got.data(), ld);
        for (int i = 0; i < rows; ++i) {
          CHECK(std::memcmp(got.data() + i * ld, want.data() + i * ld, (n - j0) * sizeof(float)) == 0);
        }
      }
      if (t.gemv_dot[rows - 1] != nullptr) {
        std::vector<float> got(want.size(), 0.0f), aw(static_cast<std::size_t>(rows * kk));
        t.gemv_dot[rows - 1](a_rows, b_cols, kk, j0, n - j0, got.data(), ld, aw.data());
        k::gemv_block_scalar(a_rows, b_cols, rows, kk, j0, n - j0, want.data(), ld);
        // Dot products sum in another order: bounded by k * u * sum |a b|.
        for (int i = 0; i < rows; ++i) {
          for (int j = 0; j < n - j0; ++j) {
            double bound = 0.0;
            for (int q = 0; q < kk; ++q) {
              bound += std::fabs(af[static_cast<std::size_t>(i * kk + q)] *
                                 static_cast<double>(static_cast<float>(bt[static_cast<std::size_t>((j0 + j) * kk + q)])));
            }
            CHECK(std::fabs(got[i * ld + j] - want[i * ld + j]) <= kk * 0x1p-23 * bound + 1e-30);
          }
        }
        if (t.gemv_dot_bits[rows - 1] != nullptr) {  // e4m3fn, |A| < 2^8: the bits of gemv_dot
          CHECK(std::is_same_v<T, float8_e4m3fn>);
          std::vector<float> got_bits(want.size(), 0.0f);
          t.gemv_dot_bits[rows - 1](a_rows, b_cols, kk, j0, n - j0, got_bits.data(), ld, aw.data());
          for (int i = 0; i < rows; ++i) {
            CHECK(std::memcmp(got_bits.data() + i * ld, got.data() + i * ld, (n - j0) * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

/// Codes of T the packers must widen like the scalar cast: NaN (e4m3fn's
/// 0x7F and 0xFF, e5m2's and float16's quiet and signaling ones), infinities,
/// subnormals, signed zeros, the extremes.
template <class T>
std::vector<T> special_values() {
  std::vector<uint32_t> codes;
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    codes = {0x7F, 0xFF, 0x01, 0x81, 0x07, 0x87, 0x00, 0x80, 0x7E, 0xFE, 0x08};
  } else if constexpr (std::is_same_v<T, float8_e5m2>) {
    codes = {0x7C, 0xFC, 0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF, 0x01, 0x83, 0x00, 0x80, 0x7B, 0xFB};
  } else if constexpr (std::is_same_v<T, float16>) {
    codes = {0x7C00, 0xFC00, 0x7C01, 0x7D00, 0x7E00, 0xFE01, 0x0001, 0x83FF, 0x0000, 0x8000, 0x7BFF};
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    codes = {0x7F80, 0xFF80, 0x7F81, 0x7FC0, 0xFFC1, 0x0001, 0x807F, 0x0000, 0x8000, 0x7F7F};
  } else {
    codes = {0x7F800000u, 0xFF800000u, 0x7F800001u, 0x7FC00000u, 0xFFC00001u, 0x00000001u, 0x807FFFFFu, 0x80000000u};
  }
  std::vector<T> v;
  for (const uint32_t c : codes) {
    if constexpr (sizeof(T) == 1) {
      v.push_back(std::bit_cast<T>(static_cast<uint8_t>(c)));
    } else if constexpr (sizeof(T) == 2) {
      v.push_back(std::bit_cast<T>(static_cast<uint16_t>(c)));
    } else {
      v.push_back(std::bit_cast<T>(c));
    }
  }
  return v;
}

/// Whether packed units are the scalar packer's: the same bits, a NaN any
/// NaN of the same sign (widen8 quiets NaNs; gemm_test's "packing widens every
/// code exactly" has the same rule).
bool same_units(const uint32_t* got, const uint32_t* want, std::size_t n, std::size_t* first_bad) {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = std::bit_cast<float>(got[i]), w = std::bit_cast<float>(want[i]);
    const bool ok = std::isnan(w) ? std::isnan(g) && std::signbit(g) == std::signbit(w) : got[i] == want[i];
    if (!ok) {
      *first_bad = i;
      return false;
    }
  }
  return true;
}

/// pack_b_f32_cols (B's columns contiguous: op(B) = W^T, W row-major) against
/// pack_b_panel_units, unit ranges from 0 and from inside K, panels more than
/// a panel apart with guard values between and after them; and against
/// pack_b_f32 (pack_b_rows) on the same values with B's rows contiguous (a
/// transposed B packs as the plain one). Bit for bit but NaN payloads: both
/// SIMD packers widen a NaN to a quiet NaN of its sign, the scalar cast to
/// another, and each leaves its own edges to the scalar cast.
template <class T>
void check_pack_b_cols(cpu_path path) {
  const k::operand_kernels<T>& t = k::operand_kernels_for<T>(path);
  INFO("pack_b_f32_cols, path " << scalify::to_string(path) << ", type " << scalify::detail::type_name<T>());
  if (path == cpu_path::scalar) CHECK(t.pack_b_f32_cols == nullptr);
  if (t.pack_b_f32_cols == nullptr) return;
  constexpr uint32_t kGuard = 0xDEADBEEFu;
  const std::vector<T> specials = special_values<T>();
  for (const int nr : {8, 16, 32}) {
    for (const int kk : {1, 7, 8, 37, 64, 203}) {
      for (const int n : {1, 5, nr, 3 * nr + 5}) {
        // W (n_total x kk, row-major, ld kk + 3) holds op(B) = W^T: column j of
        // op(B) contiguous at w + j * ld. bs holds the same values row-major.
        const int j0 = 2, n_total = n + j0, ld = kk + 3;
        std::vector<T> w = random_values<T>(static_cast<std::size_t>(n_total * ld), 20 + kk + n);
        for (std::size_t i = 0; i < w.size(); i += 5) w[i] = specials[(i / 5) % specials.size()];
        std::vector<T> rows(static_cast<std::size_t>(kk * n_total));
        for (int u = 0; u < kk; ++u) {
          for (int j = 0; j < n_total; ++j) rows[static_cast<std::size_t>(u * n_total + j)] = w[static_cast<std::size_t>(j * ld + u)];
        }
        const k::strided<T> bt{w.data(), 1, ld}, bs{rows.data(), n_total, 1};
        const int panels = (n + nr - 1) / nr;
        for (const auto& [u0, u1] : {std::pair<int, int>{0, kk}, {kk / 3, kk - kk / 4}, {3, kk}, {kk / 2, kk / 2}}) {
          if (u0 > u1 || u1 > kk) continue;
          const std::ptrdiff_t ps = (u1 - u0) * nr + 7;  // a gap of 7 units after each panel
          const std::size_t size = static_cast<std::size_t>(panels * ps + 16);
          std::vector<uint32_t> got(size, kGuard), want(size, kGuard), via_rows(size, kGuard);
          t.pack_b_f32_cols(bt, kk, u0, u1, j0, n, nr, got.data(), ps);
          for (int p = 0; p < panels; ++p) {
            k::pack_b_panel_units<k::packing::f32>(bt, kk, n_total, j0 + p * nr, nr, u0, u1,
                                                   want.data() + p * ps);
          }
          INFO("nr " << nr << ", k " << kk << ", n " << n << ", units [" << u0 << ", " << u1 << "), ps " << ps);
          std::size_t bad = 0;
          const bool same = same_units(got.data(), want.data(), size, &bad);
          if (!same) {
            FAIL_CHECK("panel " << bad / ps << ", unit " << u0 + (bad % ps) / nr << ", column " << bad % ps % nr
                                << ": " << std::hex << got[bad] << " vs " << want[bad]);
          }
          // The guards (the gaps between panels and after the last one).
          bool guards = true;
          for (std::size_t i = 0; i < size; ++i) {
            const bool gap = static_cast<std::ptrdiff_t>(i) >= panels * ps ||
                             static_cast<std::ptrdiff_t>(i) % ps >= static_cast<std::ptrdiff_t>(u1 - u0) * nr;
            if (gap) guards = guards && got[i] == kGuard;
          }
          CHECK(guards);
          if (t.pack_b_f32 != nullptr && nr % 8 == 0) {
            t.pack_b_f32(bs, kk, u0, u1, j0, n, nr, via_rows.data(), ps);
            CHECK(same_units(got.data(), via_rows.data(), size, &bad));
          }
        }
      }
    }
  }
}

template <const scalify::detail::format_spec& S, class T>
void check_cast_entries(cpu_path path) {
  const auto& t = scalify::detail::cast_kernels_for<S>(path);
  INFO("path " << scalify::to_string(path) << ", type " << scalify::detail::type_name<T>());
  if (path == cpu_path::scalar) {
    CHECK(t.widen == nullptr);
    CHECK(t.narrow[0][0] == nullptr);
    return;
  }
  // Inputs: normal(0, sigma) over many scales, plus specials, subnormals and boundaries.
  std::mt19937 gen(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> src;
  for (int i = 0; i < 3000; ++i) src.push_back(dist(gen) * std::ldexp(1.0f, static_cast<int>(gen() % 60) - 30));
  // A run whose results are all normal (no zero, subnormal or special in a
  // vector), some beyond the 8-bit formats' and float16's range: the
  // specialized kernels' main case.
  for (int i = 0; i < 1024; ++i) {
    const float m = 1.0f + static_cast<float>(gen() % (1u << 23)) * 0x1p-23f;
    src.push_back((gen() % 2 ? -m : m) * std::ldexp(1.0f, static_cast<int>(gen() % 24) - 6));
  }
  for (float v : {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::max(), 448.0f, 464.0f, 57344.0f, 65504.0f, 65520.0f}) {
    src.push_back(v);
    src.push_back(-v);
  }
  const std::size_t n = src.size();
  for (int r = 0; r < 3; ++r) {
    for (int with_stats = 0; with_stats < 2; ++with_stats) {
      for (const bool saturate : {false, true}) {
        INFO("rounding " << r << ", stats " << with_stats << ", saturate " << saturate);
        REQUIRE(t.narrow[r][with_stats] != nullptr);
        const scalify::convert_options o{.saturate = saturate, .round = static_cast<scalify::rounding>(r),
                                         .seed = 5, .offset = 100};
        const bool sat = o.saturate || o.round == scalify::rounding::stochastic;
        const auto keys = scalify::detail::make_stochastic_keys(o.seed);
        std::vector<T> got(n), want(n);
        scalify::detail::narrow_stats st_got, st_want;
        const std::size_t done = t.narrow[r][with_stats](src.data(), got.data(), n, sat, keys, o.offset, st_got);
        CHECK(done <= n);
        CHECK(done + 16 >= n);  // the scalar loop only finishes a tail
        scalify::detail::narrow_scalar<S>(src.data(), want.data(), 0, done, o, sat, keys,
                                          with_stats ? &st_want : nullptr);
        CHECK(std::memcmp(got.data(), want.data(), done * sizeof(T)) == 0);
        if (with_stats) {
          CHECK(st_got.amax_bits == st_want.amax_bits);
          CHECK(st_got.overflow == st_want.overflow);
          CHECK(st_got.underflow == st_want.underflow);
          CHECK(st_got.nan == st_want.nan);
        }
      }
    }
  }
  // Widening: every code (all 256, or every 16-bit code), exact bits; NaN to NaN.
  const std::size_t codes = sizeof(T) == 1 ? 256 : 65536;
  std::vector<T> in(codes);
  for (std::size_t c = 0; c < codes; ++c) {
    in[c] = std::bit_cast<T>(static_cast<std::conditional_t<sizeof(T) == 1, uint8_t, uint16_t>>(c));
  }
  std::vector<float> out(codes);
  const std::size_t done = t.widen(in.data(), out.data(), codes);
  CHECK(done + 16 >= codes);
  int misses = 0;
  for (std::size_t c = 0; c < done; ++c) {
    const float want = static_cast<float>(in[c]);
    const bool ok = std::isnan(want) ? std::isnan(out[c]) && std::signbit(out[c]) == std::signbit(want)
                                     : std::bit_cast<uint32_t>(out[c]) == std::bit_cast<uint32_t>(want);
    if (!ok && misses++ < 5) FAIL_CHECK("code " << c << ": " << out[c] << " vs " << want);
  }
  CHECK(misses == 0);
}

}  // namespace

TEST_CASE("kernel table: each path's table names its path and its micro-kernels", "[kernels][table]") {
  for (cpu_path p : scalify::all_cpu_paths) {
    const k::path_kernels& t = k::kernels_for(p);
    INFO(scalify::to_string(p));
    CHECK(t.path == p);
    CHECK(t.tile_f32->pack == k::packing::f32);
    CHECK(&k::select_microkernel(p, false) == t.tile_f32);
    CHECK(&k::select_microkernel(p, true) == t.tile_bf16);
    // Only the BF16 path has its own bfloat16-pair kernel; the others use their float32 one.
    CHECK((t.tile_bf16->pack == k::packing::bf16x2) == (p == cpu_path::avx512bf16));
    if (p == cpu_path::scalar) {
      CHECK(t.tile_f32->path == cpu_path::scalar);
      CHECK(t.epilogue_f32 == nullptr);
    } else {
      CHECK(t.tile_f32->path == (p == cpu_path::avx512bf16 ? cpu_path::avx512 : p));
      CHECK(t.epilogue_f32 != nullptr);
    }
  }
}

TEST_CASE("kernel table: the float32 epilogue entry equals epilogue_tile", "[kernels][table]") {
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  const std::ptrdiff_t ld = 40, m = 7, n = 37;
  std::vector<float> acc(static_cast<std::size_t>(m * ld));
  for (float& v : acc) v = dist(gen);
  acc[5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> bias(64);
  for (float& v : bias) v = dist(gen);
  for (cpu_path p : machine_paths()) {
    const k::path_kernels& t = k::kernels_for(p);
    if (t.epilogue_f32 == nullptr) continue;
    for (const float beta : {0.0f, 0.5f}) {
      for (const bool with_bias : {false, true}) {
        for (const auto act : {scalify::activation::none, scalify::activation::relu}) {
          INFO(scalify::to_string(p) << ", beta " << beta << ", bias " << with_bias << ", act " << int(act));
          const k::epilogue_params ep{0.75f, beta, with_bias ? bias.data() : nullptr, act, false, true};
          std::vector<float> c_got(static_cast<std::size_t>(20 * 50)), c_want;
          for (float& v : c_got) v = dist(gen);
          c_want = c_got;
          const float a_got = t.epilogue_f32(acc.data(), ld, m, n, 3, 5, ep, k::strided_out<float>{c_got.data(), 50, 1});
          const float a_want = k::epilogue_tile(acc.data(), ld, m, n, 3, 5, ep, k::strided_out<float>{c_want.data(), 50, 1});
          CHECK(std::memcmp(c_got.data(), c_want.data(), c_got.size() * sizeof(float)) == 0);
          CHECK(a_got == a_want);
          if (beta == 0.0f) {
            // The definition, with the product rounded on its own (volatile: no
            // compiler may fuse it into the add, whatever -ffp-contract says).
            long off = 0;
            for (std::ptrdiff_t i = 0; i < m; ++i) {
              for (std::ptrdiff_t j = 0; j < n; ++j) {
                volatile float product = ep.alpha * acc[static_cast<std::size_t>(i * ld + j)];
                float v = product;
                if (with_bias) v += bias[static_cast<std::size_t>(5 + j)];
                if (act == scalify::activation::relu) v = v > 0.0f ? v : 0.0f;
                const float got = c_got[static_cast<std::size_t>((3 + i) * 50 + 5 + j)];
                off += std::memcmp(&got, &v, sizeof v) != 0 && !(std::isnan(got) && std::isnan(v));
              }
            }
            CHECK(off == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("kernel table: every micro-kernel, full and short tiles, plain and fused, equals a scalar sum",
          "[kernels][table]") {
  // Each path's kernels called directly on random packed panels: the tile
  // against a per-element std::fma (or dpbf16_lane) loop in unit order, the
  // fused tile_out against that loop followed by the scalar epilogue_tile.
  // The short tiles (MR - 1 rows) read panels packed MR - 1 high.
  std::mt19937 gen(11);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  auto unit = [&](bool bf16) {
    const uint32_t hi = std::bit_cast<uint32_t>(dist(gen));
    return bf16 ? (hi & 0xFFFF0000u) | (std::bit_cast<uint32_t>(dist(gen)) >> 16) : hi;
  };
  std::vector<float> bias(64);
  for (float& v : bias) v = dist(gen);
  int checked = 0;
  for (cpu_path p : machine_paths()) {
    const k::path_kernels& t = k::kernels_for(p);
    for (const k::microkernel* mk : {t.tile_f32, t.tile_bf16}) {
      const bool bf16 = mk->pack == k::packing::bf16x2;
      const int nr = mk->block.nr;
      CHECK((mk->short_tile == nullptr) == (mk->tile_out == nullptr));
      CHECK((mk->short_tile_out == nullptr) == (mk->tile_out == nullptr));
      for (const int rows : {mk->block.mr, mk->block.mr - 1}) {
        const bool tall = rows == mk->block.mr;
        const auto tile = tall ? mk->tile : mk->short_tile;
        const auto tile_out = tall ? mk->tile_out : mk->short_tile_out;
        if (tile == nullptr) continue;
        for (const std::ptrdiff_t ku : {0, 1, 7, 300}) {
          std::vector<uint32_t> a(static_cast<std::size_t>(ku * rows)), b(static_cast<std::size_t>(ku * nr));
          for (auto& x : a) x = unit(bf16);
          for (auto& x : b) x = unit(bf16);
          std::vector<float> c0(static_cast<std::size_t>(rows * nr));
          for (float& v : c0) v = dist(gen);
          for (const bool accumulate : {false, true}) {
            INFO(mk->name << ", rows " << rows << ", ku " << ku << ", accumulate " << accumulate);
            std::vector<float> want = c0;
            for (int i = 0; i < rows; ++i) {
              for (int j = 0; j < nr; ++j) {
                float s = accumulate ? c0[static_cast<std::size_t>(i * nr + j)] : 0.0f;
                for (std::ptrdiff_t u = 0; u < ku; ++u) {
                  const uint32_t x = a[static_cast<std::size_t>(u * rows + i)], y = b[static_cast<std::size_t>(u * nr + j)];
                  s = bf16 ? k::scalar::dpbf16_lane(s, x, y)
                           : std::fma(std::bit_cast<float>(x), std::bit_cast<float>(y), s);
                }
                want[static_cast<std::size_t>(i * nr + j)] = s;
              }
            }
            std::vector<float> got = c0;
            tile(ku, a.data(), b.data(), got.data(), accumulate);
            CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
            ++checked;
            if (tile_out == nullptr) continue;
            for (const float beta : {0.0f, 0.5f}) {
              for (const bool relu : {false, true}) {
                INFO("beta " << beta << ", relu " << relu);
                const std::ptrdiff_t ldc = nr + 3;
                std::vector<float> c_got(static_cast<std::size_t>(rows * ldc));
                for (float& v : c_got) v = dist(gen);
                std::vector<float> c_want = c_got;
                const k::epilogue_params ep{0.75f, beta, bias.data(),
                                            relu ? scalify::activation::relu : scalify::activation::none, false, true};
                const float amax_want =
                    k::epilogue_tile(want.data(), nr, rows, nr, 0, 0, ep, k::strided_out<float>{c_want.data(), ldc, 1});
                alignas(64) float lanes[16] = {};
                tile_out(ku, a.data(), b.data(), accumulate ? c0.data() : nullptr,
                         k::f32_tile_out{c_got.data(), ldc, 0.75f, beta, bias.data(), relu, lanes});
                CHECK(std::memcmp(c_got.data(), c_want.data(), c_got.size() * sizeof(float)) == 0);
                float amax_got = 0.0f;
                for (float l : lanes) amax_got = std::max(amax_got, l);
                CHECK(amax_got == amax_want);
              }
            }
          }
        }
      }
    }
  }
  CHECK(checked >= 8);
}

TEMPLATE_TEST_CASE("kernel table: packing and GEMV entries equal the scalar routines", "[kernels][table]", float,
                   float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  for (cpu_path p : machine_paths()) check_operand_entries<TestType>(p);
}

TEMPLATE_TEST_CASE("kernel table: pack_b_f32_cols (B's columns contiguous) equals pack_b_panel_units and pack_b_rows",
                   "[kernels][table]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  for (cpu_path p : machine_paths()) check_pack_b_cols<TestType>(p);
}

TEST_CASE("kernel table: the bulk cast entries equal the scalar casts", "[kernels][table][formats]") {
  namespace d = scalify::detail;
  for (cpu_path p : machine_paths()) {
    check_cast_entries<d::kE4M3FN, float8_e4m3fn>(p);
    check_cast_entries<d::kE5M2, float8_e5m2>(p);
    check_cast_entries<d::kFloat16, float16>(p);
    check_cast_entries<d::kBFloat16, bfloat16>(p);
  }
}

#if SCALIFY_HAVE_X86_SIMD
// The float16 entries use the hardware conversions (vcvtph2ps, vcvtps2ph),
// which must give the same bits whatever MXCSR says: subnormal float16 codes
// widen exactly under denormals-are-zero, subnormal results are kept under
// flush-to-zero.
TEST_CASE("kernel table: the float16 cast entries do not depend on MXCSR's FTZ and DAZ", "[kernels][table][formats]") {
  namespace d = scalify::detail;
  std::vector<uint16_t> codes(65536);
  for (std::size_t c = 0; c < codes.size(); ++c) codes[c] = static_cast<uint16_t>(c);
  // Around and below float16's subnormal range (2^-24 .. 2^-14), float32 subnormals, both signs.
  std::mt19937 gen(5);
  std::vector<float> src;
  for (int i = 0; i < 4096; ++i) {
    const float m = 1.0f + static_cast<float>(gen() % (1u << 23)) * 0x1p-23f;
    const float x = m * std::ldexp(1.0f, -static_cast<int>(gen() % 20) - 10 - (i % 64 == 0 ? 110 : 0));
    src.push_back(gen() % 2 ? -x : x);
  }
  const auto keys = d::make_stochastic_keys(9);
  for (cpu_path p : machine_paths()) {
    if (p == cpu_path::scalar) continue;
    INFO("path " << scalify::to_string(p));
    const auto& t = d::cast_kernels_for<d::kFloat16>(p);
    std::vector<float> widened(codes.size());
    std::vector<uint16_t> nearest(src.size()), stochastic(src.size());
    d::narrow_stats stats;
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
    const std::size_t widen_done = t.widen(codes.data(), widened.data(), codes.size());
    const std::size_t nearest_done = t.narrow[0][0](src.data(), nearest.data(), src.size(), false, keys, 0, stats);
    const std::size_t stochastic_done = t.narrow[2][0](src.data(), stochastic.data(), src.size(), true, keys, 0, stats);
    _mm_setcsr(csr);
    int misses = 0;
    for (std::size_t c = 0; c < widen_done; ++c) {
      const uint32_t want = d::decode_float_bits<d::kFloat16>(static_cast<uint32_t>(c));
      if (std::bit_cast<uint32_t>(widened[c]) != want && misses++ < 5) FAIL_CHECK("widen code " << c);
    }
    for (std::size_t i = 0; i < nearest_done && i < stochastic_done; ++i) {
      const uint32_t want_nearest = d::encode<d::kFloat16>(src[i], scalify::rounding::nearest_even, false);
      const uint32_t want_stochastic =
          d::encode<d::kFloat16>(src[i], scalify::rounding::stochastic, true, d::stochastic_bits(keys, i));
      if ((nearest[i] != want_nearest || stochastic[i] != want_stochastic) && misses++ < 5) {
        FAIL_CHECK("narrow input " << src[i] << ": nearest " << nearest[i] << " vs " << want_nearest << ", stochastic "
                                   << stochastic[i] << " vs " << want_stochastic);
      }
    }
    CHECK(misses == 0);
    CHECK(widen_done + 16 >= codes.size());
    CHECK(nearest_done + 16 >= src.size());
  }
}
#endif
