// scalify: CPU feature detection and run-time choice of the SIMD path.
//
// SIMD routines exist per path (scalar, avx2, avx512, avx512bf16), compiled
// with target regions (scalify/config.hpp) rather than -m flags; a routine
// with nothing to gain from a path uses the one below it (the bulk casts run
// their avx512 kernels on avx512bf16). The active path is the best one the CPU
// supports, chosen once; the environment variable SCALIFY_CPU_PATH or
// force_cpu_path() overrides it for tests and benchmarks.
#ifndef SCALIFY_CPU_HPP_
#define SCALIFY_CPU_HPP_

#include <atomic>       // std::atomic
#include <cstdint>      // uint64_t
#include <cstdlib>      // std::getenv
#include <mutex>        // std::mutex, std::lock_guard
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <utility>      // std::pair
#include <vector>       // std::vector, std::erase_if

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD

#if SCALIFY_HAVE_X86_SIMD
#include <cpuid.h>  // __get_cpuid_max, __cpuid_count (GCC and Clang)
#endif
#include "scalify/errors.hpp"  // SCALIFY_CHECK

namespace scalify {

/// The instruction-set paths, from the most portable to the fastest.
enum class cpu_path {
  scalar,      ///< portable C++, the reference every other path must match
  avx2,        ///< AVX2 + FMA + F16C
  avx512,      ///< AVX-512 F/BW/VL/DQ
  avx512bf16,  ///< AVX-512 plus BF16 dot products (vdpbf16ps)
};

/// All paths, for loops in tests and benchmarks.
inline constexpr cpu_path all_cpu_paths[] = {cpu_path::scalar, cpu_path::avx2, cpu_path::avx512,
                                             cpu_path::avx512bf16};

/// The path's name as SCALIFY_CPU_PATH spells it. **Example**: `to_string(cpu_path::avx2) == "avx2"`.
constexpr std::string_view to_string(cpu_path p) {
  switch (p) {
    case cpu_path::scalar: return "scalar";
    case cpu_path::avx2: return "avx2";
    case cpu_path::avx512: return "avx512";
    case cpu_path::avx512bf16: return "avx512bf16";
  }
  return "unknown";
}

/// Parses a path name; throws std::invalid_argument naming the valid ones.
inline cpu_path parse_cpu_path(std::string_view name) {
  for (cpu_path p : all_cpu_paths) {
    if (to_string(p) == name) return p;
  }
  throw std::invalid_argument("scalify: unknown CPU path '" + std::string(name) +
                              "' (expected scalar, avx2, avx512 or avx512bf16)");
}

namespace detail {

/// What cpuid and xgetbv report, read once.
struct cpu_features {
  bool avx2 = false, avx512 = false, avx512bf16 = false;
  /// vdpbf16ps does more multiply-adds per cycle than float32 FMA, so the
  /// avx512bf16 GEMM kernel beats the avx512 one. True on AMD (Zen 4: one
  /// 32-product vdpbf16ps per cycle against one 16-lane FMA), false on Intel:
  /// on a Sapphire Rapids-class Xeon it retires one per 2 cycles against two
  /// FMAs per cycle (half the rate; docs/benchmarks.md).
  bool fast_bf16_dot = false;
  /// FMAs take float32 subnormal operands at full speed, so the streaming
  /// GEMV may decode e4m3fn codes straight to float32 bits (subnormal codes
  /// -> subnormal floats; kernels::gemv_block_with). True on AMD (measured on
  /// a Zen 5: the same FMA rate with subnormal operands); false elsewhere:
  /// Intel cores may take a microcode assist on subnormal operands (not
  /// measured here), which would make the decode far slower there.
  bool fast_subnormal_fma = false;
};

inline cpu_features detect_cpu_features() {
  cpu_features f;
#if SCALIFY_HAVE_X86_SIMD
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(1, 0, a, b, c, d);
  const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  // The OS must save the registers: XCR0 bits 1-2 (SSE, AVX), 5-7 (AVX-512).
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_avx = (xcr0_lo & 0x06u) == 0x06u, os_avx512 = (xcr0_lo & 0xE6u) == 0xE6u;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1;
  const bool avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  f.avx2 = os_avx && avx2 && fma && f16c && bmi2;
  f.avx512 = f.avx2 && os_avx512 && avx512f && avx512dq && avx512bw && avx512vl;
  __cpuid_count(7, 1, a, b, c, d);
  f.avx512bf16 = f.avx512 && ((a >> 5) & 1);
  __cpuid_count(0, 0, a, b, c, d);  // vendor string in ebx, edx, ecx
  const bool amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;  // "Auth" "enti" "cAMD"
  f.fast_bf16_dot = f.avx512bf16 && amd;
  f.fast_subnormal_fma = amd;
#endif
  return f;
}

inline const cpu_features& cpu() {
  static const cpu_features features = detect_cpu_features();
  return features;
}

}  // namespace detail

/// True if this CPU (and OS) can run path `p`.
inline bool cpu_supports(cpu_path p) {
  switch (p) {
    case cpu_path::scalar: return true;
    case cpu_path::avx2: return detail::cpu().avx2;
    case cpu_path::avx512: return detail::cpu().avx512;
    case cpu_path::avx512bf16: return detail::cpu().avx512bf16;
  }
  return false;
}

/// The fastest path this CPU supports. That is avx512, not avx512bf16, on a
/// CPU whose BF16 dot products are slower than its float32 FMAs (Intel's so
/// far): there the bfloat16-pair GEMM kernel runs at half the float32 one's
/// speed, and nothing else differs between the two paths. avx512bf16 can
/// still be forced there (SCALIFY_CPU_PATH, force_cpu_path).
inline cpu_path best_cpu_path() {
  if (detail::cpu().fast_bf16_dot) return cpu_path::avx512bf16;
  for (auto p : {cpu_path::avx512, cpu_path::avx2}) {
    if (cpu_supports(p)) return p;
  }
  return cpu_path::scalar;
}

namespace detail {

/// The path chosen at first use: SCALIFY_CPU_PATH if set (it must name a path
/// this CPU supports), else the best one.
inline cpu_path initial_cpu_path() {
  const char* env = std::getenv("SCALIFY_CPU_PATH");
  if (env == nullptr || *env == '\0') return best_cpu_path();
  const cpu_path p = parse_cpu_path(env);
  SCALIFY_CHECK(cpu_supports(p), std::invalid_argument,
                "scalify: SCALIFY_CPU_PATH=" + std::string(env) + " but this CPU does not support it");
  return p;
}

/// The process-wide path state: the base path (chosen at first use, or
/// forced) and the scoped_cpu_path guards alive, oldest first. The newest
/// alive guard's path is active, else the base; `active` mirrors that, so
/// that active_cpu_path() is one relaxed load.
struct cpu_path_state {
  std::mutex mutex;
  cpu_path base = initial_cpu_path();
  std::vector<std::pair<uint64_t, cpu_path>> guards;  // (id, path)
  uint64_t next_id = 0;
  std::atomic<cpu_path> active{base};

  /// Updates `active`; the caller holds `mutex`.
  void publish() { active.store(guards.empty() ? base : guards.back().second, std::memory_order_relaxed); }
};

inline cpu_path_state& path_state() {
  static cpu_path_state state;
  return state;
}

}  // namespace detail

/// The path the library dispatches to now.
inline cpu_path active_cpu_path() { return detail::path_state().active.load(std::memory_order_relaxed); }

/// Forces every later dispatch onto path `p` (process-wide), once no
/// scoped_cpu_path is alive (the newest one wins while it lives). Throws
/// std::invalid_argument if this CPU cannot run it.
///
/// **Example**: `scalify::force_cpu_path(scalify::cpu_path::scalar);`
inline void force_cpu_path(cpu_path p) {
  SCALIFY_CHECK(cpu_supports(p), std::invalid_argument,
                "scalify::force_cpu_path: this CPU does not support path " + std::string(to_string(p)));
  auto& state = detail::path_state();
  const std::lock_guard<std::mutex> lock(state.mutex);
  state.base = p;
  state.publish();
}

/// Goes back to the path chosen at start-up (SCALIFY_CPU_PATH or the best).
inline void reset_cpu_path() {
  const cpu_path initial = detail::initial_cpu_path();
  auto& state = detail::path_state();
  const std::lock_guard<std::mutex> lock(state.mutex);
  state.base = initial;
  state.publish();
}

/// Forces a path for the lifetime of the object (process-wide, for tests and
/// benchmarks). Guards may live on several threads and end in any order: the
/// newest guard still alive decides the path, and once every guard has ended
/// the path is the one before the first (force_cpu_path's, or the start-up
/// one). Throws std::invalid_argument if this CPU cannot run `p`.
///
/// **Example**: `{ scalify::scoped_cpu_path guard(scalify::cpu_path::avx2); run(); }`
class scoped_cpu_path {
 public:
  explicit scoped_cpu_path(cpu_path p) {
    SCALIFY_CHECK(cpu_supports(p), std::invalid_argument,
                  "scalify::scoped_cpu_path: this CPU does not support path " + std::string(to_string(p)));
    auto& state = detail::path_state();
    const std::lock_guard<std::mutex> lock(state.mutex);
    id_ = state.next_id++;
    state.guards.emplace_back(id_, p);
    state.publish();
  }
  ~scoped_cpu_path() {
    auto& state = detail::path_state();
    const std::lock_guard<std::mutex> lock(state.mutex);
    std::erase_if(state.guards, [this](const auto& g) { return g.first == id_; });
    state.publish();
  }
  scoped_cpu_path(const scoped_cpu_path&) = delete;
  scoped_cpu_path& operator=(const scoped_cpu_path&) = delete;

 private:
  uint64_t id_ = 0;
};

}  // namespace scalify

#endif  // SCALIFY_CPU_HPP_
