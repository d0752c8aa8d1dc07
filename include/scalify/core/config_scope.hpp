// scalify: the thread-local configuration scope (jax-scalify's ScalifyConfig).
//
// The configuration decides how ops round scales to powers of two and how a
// result is cast when it is stored into a narrow type, and how many threads
// the library's parallel regions use. It is thread-local and set for a scope
// (RAII); scopes nest.
//
// Threads: one setting limits every parallel region of the library (the GEMM
// of matmul and gemm(), the evaluation of large stored results, which is also
// where ScaledArray casts and stores into narrow types run): `threads` of the
// scope if > 0, else the environment variable SCALIFY_NUM_THREADS (read once;
// an integer >= 0, 0: every hardware thread; an invalid value makes the first
// parallel region throw std::invalid_argument naming it), else every hardware
// thread. thread_limit() (kernels/thread_pool.hpp) gives the value in force.
//
//   SCALIFY_NUM_THREADS=1 ./train                           one thread everywhere
//   { scalify::config_scope s({.threads = 2}); ... }        two, whatever the variable says
#ifndef SCALIFY_CORE_CONFIG_SCOPE_HPP_
#define SCALIFY_CORE_CONFIG_SCOPE_HPP_

#include <cstdint>    // uint64_t
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string, std::to_string

#include "scalify/core/pow2.hpp"            // pow2_mode
#include "scalify/errors.hpp"               // SCALIFY_CHECK
#include "scalify/formats/convert.hpp"      // convert_options, check_convert_options
#include "scalify/kernels/thread_pool.hpp"  // thread_limit, kernels::detail::scoped_threads

namespace scalify {

/// Which type ops use for the scales they compute when the operands' scale
/// types do not decide it (float unless a double scale is involved).
enum class scale_format {
  float32,         ///< scales kept as float (default)
  float8_e8m0fnu,  ///< results stored with an E8M0 scale round it (see ScaledArray)
};

/// Settings read by every scaled op on this thread.
///
/// | field | meaning |
/// |---|---|
/// | `rounding` | pow2 rounding of computed scales (add/sub, matmul, sum): down (default), up, none, stochastic |
/// | `seed` | seed of stochastic pow2 rounding: the i-th stochastic rounding on this thread in the scope uses `stochastic_bits(seed, i)` |
/// | `store` | cast options used when a value is stored into a narrow data type: every ScaledArray store, `as_scaled`, `x.cast<T>()` (default: nearest even, **saturating**: finite data beyond the type's range becomes its largest finite value of that sign; NaN stays NaN; +-inf stays +-inf, or becomes NaN in float8_e4m3fn, which has no infinity). `{.saturate = false}` gives the OCP reference cast (overflow to inf, or NaN in e4m3fn) |
/// | `scale` | preferred scale format for new scales |
/// | `threads` | the most threads of every parallel region started on this thread (thread_limit()): the GEMM of a scaled matmul or of gemm(), the evaluation of a large stored result (at least 2^16 elements per thread), casts through it, the nn GELU layers (2^15). 0 (default) = SCALIFY_NUM_THREADS if set, else every hardware thread; 1 = the calling thread only; never more than the hardware threads |
struct scalify_config {
  pow2_mode rounding = pow2_mode::down;
  uint64_t seed = 0;
  convert_options store = {.saturate = true};  // the one default for overflow on store
  scale_format scale = scale_format::float32;
  int threads = 0;
};

namespace detail {

struct config_state {
  scalify_config config;
  uint64_t stochastic_counter = 0;
};

inline config_state& thread_config_state() {
  thread_local config_state state;
  return state;
}

}  // namespace detail

/// The configuration in force on this thread.
inline const scalify_config& current_config() { return detail::thread_config_state().config; }

/// Rounds a computed scale to a power of two with the current configuration
/// (stochastic mode draws the next counter value of this thread's scope).
template <class F>
F config_pow2_round(F x) {
  auto& state = detail::thread_config_state();
  uint32_t bits = 0;
  if (state.config.rounding == pow2_mode::stochastic) {
    bits = stochastic_bits(state.config.seed, state.stochastic_counter++);
  }
  return pow2_round(x, state.config.rounding, bits);
}

/// Throws std::invalid_argument naming the field and its value unless every
/// field of `config` is valid: the enums (`rounding`, `store.round`, `scale`)
/// hold one of their values and `threads >= 0`.
///
/// **Example**: `scalify::check_config({.threads = -1});  // throws`
inline void check_config(const scalify_config& config) {
  const auto bad = [](const char* field, int value, const char* expected) {
    return std::string("scalify::config_scope: invalid ") + field + " " + std::to_string(value) + " (expected " +
           expected + ")";
  };
  const auto r = config.rounding;
  SCALIFY_CHECK(r == pow2_mode::down || r == pow2_mode::up || r == pow2_mode::none || r == pow2_mode::stochastic,
                std::invalid_argument, bad("rounding", static_cast<int>(r), "down, up, none or stochastic"));
  detail::check_convert_options(config.store, "scalify::config_scope: store");
  SCALIFY_CHECK(config.scale == scale_format::float32 || config.scale == scale_format::float8_e8m0fnu,
                std::invalid_argument, bad("scale", static_cast<int>(config.scale), "float32 or float8_e8m0fnu"));
  SCALIFY_CHECK(config.threads >= 0, std::invalid_argument, bad("threads", config.threads, ">= 0, 0 = all"));
}

/// Sets the configuration of this thread until the end of the scope, then
/// restores the previous one (scopes nest). Throws std::invalid_argument for
/// an invalid configuration (check_config()), leaving the current one in force.
///
/// **Example**:
/// ```
/// { scalify::config_scope cfg({.rounding = scalify::pow2_mode::up}); auto z = x + y; }
/// ```
class config_scope {
 public:
  explicit config_scope(const scalify_config& config) : previous_(detail::thread_config_state()) {
    check_config(config);
    detail::thread_config_state() = {config, 0};
    kernels::detail::scoped_threads() = config.threads;
  }
  ~config_scope() {
    detail::thread_config_state() = previous_;
    kernels::detail::scoped_threads() = previous_.config.threads;
  }
  config_scope(const config_scope&) = delete;
  config_scope& operator=(const config_scope&) = delete;

 private:
  detail::config_state previous_;
};

}  // namespace scalify

#endif  // SCALIFY_CORE_CONFIG_SCOPE_HPP_
