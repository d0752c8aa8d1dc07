// scalify nn: optimizers that store the weights and their state in scaled low precision.
//
//   sgd     v = mu v + g + wd w;  w -= lr v                       (PyTorch's SGD with momentum)
//   adamw   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//           w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd w
//           (Loshchilov & Hutter 2019, decoupled weight decay; PyTorch's AdamW)
//
// The weights live in one place: the module's parameter tensors. The optimizer
// keeps no copy of them: every step reads the weights from the parameter,
// computes the update in float32 and writes the result back, stored in the
// state_config format (float32, float16 or bfloat16 values on a per-tensor
// power-of-two scale). So weights loaded or edited in the module between
// steps are the ones the next step updates. Each state tensor (momentum, Adam
// moments) is a scaled_buffer: a ScaledMatrix stored in state_config::format.
// Every store
//   - rebases the values (dynamic scale): scale = pow2_round_down(RMS of the
//     values), so the data's RMS is in [1, 2), far from float16's underflow
//     and overflow whatever the magnitude of the tensor (the RMS comes from
//     a float32 sum of the squares, or a double one where squares underflow
//     or overflow float32; the scale is at least 2^-126);
//   - rounds the data into the format, stochastically for the weights by
//     default, so that updates smaller than half an ulp of a weight are kept
//     on average instead of being rounded away.
// The parameter then holds the stored values exactly (data widened to float,
// same scale), so forward passes see precisely the low-precision weights.
// AdamW keeps r = sqrt(v) instead of v: r spans half the binary orders of
// magnitude of v, so small second moments do not underflow next to large ones
// in one per-tensor scale.
//
// Non-finite gradients: before changing anything, step() checks every
// gradient's values, data * scale, so an inf or NaN scale or a product that
// overflows float counts too (one pass over its data; sgd with a dynamic
// scale uses the pass that sums the squares for the scales, which reads the
// same products, and reads a gradient again only if that sum is not
// finite). If one is not finite the whole
// step is skipped: no weight, momentum, moment, step count or rounding seed
// changes, and skipped_steps() goes up by one. With nonfinite_policy::raise
// it throws nonfinite_gradient_error instead (also with nothing changed).
#ifndef SCALIFY_NN_OPTIM_HPP_
#define SCALIFY_NN_OPTIM_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <algorithm>   // std::max, std::min, std::copy_n
#include <cmath>       // std::sqrt, std::pow, std::isfinite
#include <cstdint>     // uint64_t
#include <cstdio>      // std::snprintf
#include <limits>      // std::numeric_limits
#include <span>        // std::span
#include <stdexcept>   // std::runtime_error
#include <string>      // std::string
#include <type_traits> // std::is_base_of_v, std::is_same_v
#include <utility>     // std::move, std::pair
#include <variant>     // std::visit
#include <vector>      // std::vector

#include "scalify/core/pow2.hpp"  // pow2_round_down
#include "scalify/errors.hpp"     // SCALIFY_CHECK, shape_error
#include "scalify/nn/detail/sgd_kernels.hpp"  // sgd_kernels_for, sgd_block, step_sums
#include "scalify/nn/mlp.hpp"     // param_ref
#include "scalify/nn/tensor.hpp"  // Tensor, dtype, cast_to

namespace scalify::nn {

/// How the optimizer stores the weights it writes and its state.
///
/// | field | meaning |
/// |---|---|
/// | `format` | float32, float16 or bfloat16 |
/// | `dynamic_scale` | rebase every store to scale pow2_round_down(RMS) (else scale 1: plain values) |
/// | `stochastic_master` | round the weights stochastically when a step stores them (else nearest even) |
/// | `seed` | seed of the stochastic rounding |
///
/// **Example**: `state_config s{.format = dtype::bfloat16};`
struct state_config {
  dtype format = dtype::float16;
  bool dynamic_scale = true;
  bool stochastic_master = true;
  uint64_t seed = 0x5ca1'1f7;

  /// Everything in plain float32 (the comparison optimizer).
  static state_config fp32() { return {dtype::float32, false, false, 0}; }
  /// Plain float16 values (scale 1, nearest even): what an unscaled float16 optimizer does.
  static state_config fp16_naive() { return {dtype::float16, false, false, 0}; }
};

namespace detail {

/// A float matrix or matrix/array expression, read by blocks of rows:
/// fill(r, count, factor, out) writes factor * rows [r, r + count) into `out`
/// (row-major, count x cols()). The optimizers' stores read their values
/// through one, so that their code is compiled once whatever the update
/// expression (each expression adds only its fill). Refers to the expression:
/// use it while that lives.
class row_source {
 public:
  template <class E>
    requires std::is_base_of_v<Eigen::DenseBase<E>, E>
  row_source(const E& e)  // NOLINT(google-explicit-constructor): stands for the expression
      : rows_(e.rows()), cols_(e.cols()), expr_(&e), fill_(&fill_from<E>) {
    if constexpr (std::is_same_v<E, Matrix> || std::is_same_v<E, Eigen::Map<Matrix>> ||
                  std::is_same_v<E, Eigen::Map<const Matrix>>) {
      direct_ = e.data();
    }
  }

  Eigen::Index rows() const { return rows_; }
  Eigen::Index cols() const { return cols_; }
  Eigen::Index size() const { return rows_ * cols_; }
  void fill(Eigen::Index r, Eigen::Index count, float factor, float* out) const {
    fill_(expr_, r, count, factor, out);
  }
  /// The values in memory (row-major) when the source is a plain float matrix (or a Map of one), else null.
  const float* direct() const { return direct_; }

 private:
  template <class E>
  static void fill_from(const void* e, Eigen::Index r, Eigen::Index count, float factor, float* out) {
    const E& x = *static_cast<const E*>(e);
    Eigen::Map<Matrix>(out, count, x.cols()) = (x.middleRows(r, count) * factor).matrix();
  }

  Eigen::Index rows_, cols_;
  const void* expr_;
  void (*fill_)(const void*, Eigen::Index, Eigen::Index, float, float*);
  const float* direct_ = nullptr;
};

/// Rounds factor * w into T (with `o`) by blocks of rows split across the
/// scope's threads: the codes into `codes` (row-major, w's shape) if not
/// null, and widened back into float `widened` if not null (the rows read
/// are the rows written, so w may read `widened`). The elements' stochastic
/// rounding offsets are their positions: the result does not depend on the
/// thread count. Float32 is written straight into its destination.
template <class T>
void round_rows(const row_source& w, float factor, const convert_options& o, T* codes, float* widened) {
  const Eigen::Index rows = w.rows(), cols = std::max<Eigen::Index>(w.cols(), 1);
  const Eigen::Index step = std::max<Eigen::Index>(1, 8192 / cols);                    // 32 KiB of float
  const Eigen::Index grain = std::max<Eigen::Index>(1, (Eigen::Index{1} << 16) / cols);  // per thread
  scalify::detail::parallel_ranges(rows, grain, step, current_config().threads, [&](int64_t begin, int64_t end) {
    Matrix values(std::is_same_v<T, float> ? 0 : std::min<Eigen::Index>(step, end - begin), w.cols());
    std::vector<T> buffer(std::is_same_v<T, float> || codes != nullptr ? 0 : static_cast<size_t>(values.size()));
    convert_options chunk = o;
    for (Eigen::Index r = begin; r < end; r += step) {
      const Eigen::Index count = std::min<Eigen::Index>(step, end - r);
      const auto n = static_cast<size_t>(count * w.cols());
      const auto at = static_cast<size_t>(r * w.cols());
      if constexpr (std::is_same_v<T, float>) {
        float* first = codes != nullptr ? codes + at : widened + at;
        w.fill(r, count, factor, first);
        if (codes != nullptr && widened != nullptr) std::copy_n(first, n, widened + at);
      } else {
        w.fill(r, count, factor, values.data());
        T* out = codes != nullptr ? codes + at : buffer.data();
        chunk.offset = o.offset + at;
        convert(std::span<const float>(values.data(), n), std::span<T>(out, n), chunk);
        if (widened != nullptr) convert(std::span<const T>(out, n), std::span<float>(widened + at, n));
      }
    }
  });
}

/// Calls f.template operator()<T>() for the scalar type T of `t`.
template <class F>
void with_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::float32: f.template operator()<float>(); return;
    case dtype::float16: f.template operator()<float16>(); return;
    case dtype::bfloat16: f.template operator()<bfloat16>(); return;
    case dtype::e4m3fn: f.template operator()<float8_e4m3fn>(); return;
    case dtype::e5m2: f.template operator()<float8_e5m2>(); return;
  }
  throw bad_dtype("scalify::nn optimizer", t);
}

}  // namespace detail

/// One tensor of optimizer state in a state_config format.
class scaled_buffer {
 public:
  scaled_buffer() = default;

  /// The values (data widened to float, times the scale) as float data on the same scale.
  Tensor load() const {
    return std::visit([](const auto& v) { return Tensor(v); }, data_);
  }
  float scale() const {
    return std::visit([](const auto& v) { return v.scale(); }, data_);
  }
  Eigen::Index rows() const { return rows_of(data_); }
  Eigen::Index cols() const { return cols_of(data_); }
  const AnyTensor& stored() const { return data_; }
  /// True before the first store.
  bool empty() const { return rows() == 0 && cols() == 0; }
  /// Replaces the stored tensor as it is (a checkpoint's; io/checkpoint.hpp
  /// checks its format and shape first).
  void restore(AnyTensor stored) { data_ = std::move(stored); }
  /// The stored codes, for a store in place, if the stored tensor is a
  /// ScaledMatrix<T> of rows x cols; else null.
  template <class T>
  T* data_as(Eigen::Index rows, Eigen::Index cols) {
    auto* t = std::get_if<ScaledMatrix<T>>(&data_);
    if (t == nullptr || t->rows() != rows || t->cols() != cols) return nullptr;
    return t->data().data();
  }
  /// Sets the stored tensor's scale (after a store in place through data_as()).
  void set_scale(float scale) {
    std::visit([&](auto& v) { v.set_scale(scale); }, data_);
  }

  /// The scale a store of `values` (a float matrix or expression) with
  /// `cfg` uses: pow2_round_down(RMS) if cfg.dynamic_scale (and the RMS is
  /// finite and > 0), else 1. The RMS comes from a float32 sum of the
  /// squares, or from a double one where the float sum is not accurate
  /// (accurate_sum(): values whose squares underflow or overflow float).
  static float store_scale(const detail::row_source& values, const state_config& cfg) {
    if (!cfg.dynamic_scale || values.size() == 0) return 1.0f;
    const float sum_sq = sum_of_squares(values);
    if (accurate_sum(sum_sq)) return scale_for(sum_sq, values.size(), cfg);
    return scale_for(sum_of_squares<double>(values), values.size(), cfg);
  }
  /// True if `sum_sq`, a float32 sum of squares, gives the RMS to float
  /// accuracy: finite (no square or partial sum overflowed) and at least
  /// 2^-100 (the squares and partial sums below float's normal range,
  /// 2^-126, lose at most about count * 2^-149 in all). Else (0 included)
  /// the scale is taken from a double sum: every float's square is a normal double.
  static bool accurate_sum(float sum_sq) {
    return sum_sq >= 0x1p-100f && sum_sq <= std::numeric_limits<float>::max();
  }
  /// store_scale's rule for `count` values whose squares sum to `sum_sq`
  /// (an accurate float32 sum, see accurate_sum()).
  static float scale_for(float sum_sq, Eigen::Index count, const state_config& cfg) {
    if (!cfg.dynamic_scale || count == 0) return 1.0f;
    const float rms = std::sqrt(sum_sq / static_cast<float>(count));
    return std::isfinite(rms) && rms > 0.0f ? pow2_round_down(rms) : 1.0f;
  }
  /// The same for a double sum of squares (of float values: the RMS is at
  /// most float's largest number). The scale is at least 2^-126, float's
  /// smallest normal, so that the stores' factor 1 / scale is finite: values
  /// whose RMS is below it keep a data RMS below 1.
  static float scale_for(double sum_sq, Eigen::Index count, const state_config& cfg) {
    if (!cfg.dynamic_scale || count == 0) return 1.0f;
    const double rms = std::sqrt(sum_sq / static_cast<double>(count));
    return std::isfinite(rms) && rms > 0.0 ? static_cast<float>(std::max(pow2_round_down(rms), 0x1p-126)) : 1.0f;
  }
  /// The sum of the squares of `values` in `Sum` (float or double), by
  /// blocks of rows split across the scope's threads; the blocks' sums are
  /// added in order, so the result does not depend on the thread count.
  template <class Sum = float>
  static Sum sum_of_squares(const detail::row_source& values) {
    const Eigen::Index rows = values.rows(), cols = std::max<Eigen::Index>(values.cols(), 1);
    const Eigen::Index block = std::max<Eigen::Index>(1, (Eigen::Index{1} << 15) / cols);
    const Eigen::Index blocks = (rows + block - 1) / block;
    std::vector<Sum> partial(static_cast<size_t>(blocks), Sum(0));
    const auto squares = [](const auto& m) -> Sum {
      if constexpr (std::is_same_v<Sum, float>) {
        return m.squaredNorm();
      } else {
        return m.template cast<Sum>().squaredNorm();
      }
    };
    scalify::detail::parallel_ranges(blocks, 2, 1, current_config().threads, [&](int64_t begin, int64_t end) {
      Matrix buffer(values.direct() != nullptr ? 0 : std::min(block, rows), values.cols());
      for (int64_t b = begin; b < end; ++b) {
        const Eigen::Index r = b * block, count = std::min(block, rows - r);
        if (values.direct() != nullptr) {  // a plain matrix: read in place
          partial[static_cast<size_t>(b)] =
              squares(Eigen::Map<const Matrix>(values.direct() + r * values.cols(), count, values.cols()));
          continue;
        }
        values.fill(r, count, 1.0f, buffer.data());
        partial[static_cast<size_t>(b)] = squares(buffer.topRows(count));
      }
    });
    Sum sum = 0;
    for (Sum p : partial) sum += p;
    return sum;
  }
  /// The cast options of a store: saturating with a dynamic scale, stochastic on request.
  static convert_options store_options(const state_config& cfg, bool stochastic, uint64_t seed) {
    convert_options o{.saturate = cfg.dynamic_scale};
    if (stochastic && cfg.format != dtype::float32) {
      o.round = rounding::stochastic;
      o.seed = seed;
    }
    return o;
  }

  /// Stores `values` (plain float32 values: a float matrix or expression of
  /// the same shape, read twice, not copied) with `cfg`: rebased to
  /// pow2_round_down(RMS) if cfg.dynamic_scale, rounded into cfg.format
  /// (stochastically with seed `seed` if `stochastic`, saturating).
  /// `values` must not read this buffer's data, but for a float32 store.
  void store(const detail::row_source& values, const state_config& cfg, bool stochastic, uint64_t seed) {
    const float scale = store_scale(values, cfg);
    const convert_options o = store_options(cfg, stochastic, seed);
    // values / scale (exact: a power of two) rounded into the format in one
    // pass, no float copy, into the stored tensor's memory when it has this
    // format and shape (a step's store: no new allocation).
    detail::with_dtype(cfg.format, [&]<class T>() {
      auto* stored = std::get_if<ScaledMatrix<T>>(&data_);
      if (stored == nullptr || stored->rows() != values.rows() || stored->cols() != values.cols()) {
        data_ = ScaledMatrix<T>(
            Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>(values.rows(), values.cols()), scale);
        stored = std::get_if<ScaledMatrix<T>>(&data_);
      }
      detail::round_rows<T>(values, 1.0f / scale, o, stored->data().data(), nullptr);
      stored->set_scale(scale);
    });
  }

 private:
  AnyTensor data_;
};

/// One tensor of an optimizer's state, as checkpoints see it: `name` is
/// "<parameter>.<what>" (e.g. "0.w.momentum", "tok.adam_m"); `required`
/// says whether the optimizer's next step reads it (a checkpoint must then
/// hold it); `param` is the index of its parameter (same shape).
struct state_ref {
  std::string name;
  scaled_buffer* buffer;
  bool required;
  size_t param;
};

namespace detail {

/// splitmix64: the per-(step, parameter, buffer) seeds of stochastic rounding.
inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9E37'79B9'7F4A'7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58'476D'1CE4'E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D0'49BB'1331'11EBull;
  return z ^ (z >> 31);
}

inline void check_param(const param_ref& p) {
  SCALIFY_CHECK(p.value != nullptr && p.grad != nullptr, std::invalid_argument,
                "scalify::nn optimizer: parameter '" + p.name + "' has a null value or gradient");
  SCALIFY_CHECK(p.value->rows() == p.grad->rows() && p.value->cols() == p.grad->cols(), shape_error,
                "scalify::nn optimizer: parameter '" + p.name + "' is " + scalify::detail::shape_string(*p.value) +
                    " but its gradient is " + scalify::detail::shape_string(*p.grad));
}

}  // namespace detail

/// What an optimizer's step() does when a gradient is not finite.
///
/// **Example**: `scalify::nn::sgd opt(net.parameters(), {.lr = 0.05f, .on_nonfinite = nonfinite_policy::raise});`
enum class nonfinite_policy {
  skip,   ///< skip the whole step (nothing changes), count it in skipped_steps(), return false
  raise,  ///< throw nonfinite_gradient_error (nothing changes; also counted)
};

/// Thrown by step() under nonfinite_policy::raise: names the parameter, the
/// gradient's scale and its first non-finite value.
class nonfinite_gradient_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// True if every value data * scale of `g` is finite, in one vectorized pass:
/// (d * s) * 0 is 0 where d * s is finite and NaN where it is not (inf * 0,
/// NaN), so the sum is NaN exactly when some value is not finite. (Eigen's
/// isFinite().all() runs element by element, about 10x slower.)
inline bool all_finite(const Tensor& g) {
  if (!std::isfinite(g.scale())) return g.size() == 0;
  return !std::isnan((g.data().array() * g.scale() * 0.0f).sum());
}

/// `x` as printf's %g does ("0.5", "3e+30", "inf", "nan").
inline std::string g_string(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// The message of a nonfinite_gradient_error for gradient `g` of parameter `name`.
inline std::string nonfinite_message(const char* where, const std::string& name, const Tensor& g) {
  std::string m = std::string(where) + ": the gradient of parameter '" + name + "' " +
                  scalify::detail::shape_string(g) + " is not finite (scale " + g_string(g.scale());
  for (Eigen::Index r = 0; r < g.rows(); ++r) {
    for (Eigen::Index c = 0; c < g.cols(); ++c) {
      const float d = g.data()(r, c);
      if (!std::isfinite(d * g.scale())) {
        m += "; first non-finite value at (" + std::to_string(r) + ", " + std::to_string(c) + "): data " +
             g_string(d) + ", value " + g_string(d * g.scale());
        r = g.rows();
        break;
      }
    }
  }
  return m + "); nothing was changed (nonfinite_policy::raise)";
}

/// Common part of the optimizers: parameters, step counters, the finiteness check.
class optimizer_base {
 public:
  /// Checks the parameters and `state`, changing nothing: the optimizer's
  /// constructor checks its hyperparameters, then calls round_parameters().
  optimizer_base(std::vector<param_ref> params, const state_config& state) : params_(std::move(params)), state_(state) {
    SCALIFY_CHECK(detail::valid_dtype(state.format), std::invalid_argument,
                  "scalify::nn optimizer: state_config.format is an unknown dtype " +
                      std::to_string(static_cast<int>(state.format)));
    for (const auto& p : params_) {
      check_param(p);
      shapes_.emplace_back(p.value->rows(), p.value->cols());
    }
  }
  /// Steps applied so far (AdamW's bias correction uses it); skipped steps do not count.
  long step_count() const { return t_; }
  /// The largest step count restore_counters() takes.
  static constexpr long kMaxStepCount = 1L << 62;
  /// Steps skipped (or thrown, under nonfinite_policy::raise) because a gradient was not finite.
  long skipped_steps() const { return skipped_; }
  const state_config& state() const { return state_; }
  /// The parameters it updates.
  const std::vector<param_ref>& parameters() const { return params_; }
  /// Sets the step counters, e.g. from a checkpoint (io/checkpoint.hpp).
  /// Throws std::invalid_argument for a negative count or one above
  /// kMaxStepCount (2^62: no run reaches it; the steps' counters and seeds
  /// must not overflow).
  void restore_counters(long step_count, long skipped_steps) {
    SCALIFY_CHECK(step_count >= 0 && skipped_steps >= 0 && step_count <= kMaxStepCount &&
                      skipped_steps <= kMaxStepCount,
                  std::invalid_argument,
                  "scalify::nn optimizer: step counts must be in [0, 2^62], got " + std::to_string(step_count) +
                      " and " + std::to_string(skipped_steps));
    t_ = step_count;
    skipped_ = skipped_steps;
  }

  /// Rounds the parameters' current values into state().format (nearest
  /// even, rebased to pow2_round_down(RMS) if state().dynamic_scale), as the
  /// constructor does. Optional after loading weights into the module: the
  /// next step() reads them anyway; this makes them the stored format's values
  /// at once, so a step that changes nothing (lr = 0, zero gradients) keeps
  /// them bit for bit.
  ///
  /// **Example**: `net_layer.params().w = loaded_w;  opt.round_parameters();`
  void round_parameters() {
    check_unchanged_shapes();
    for (auto& p : params_) {
      scaled_buffer b;
      b.store(values(*p.value), state_, false, 0);
      *p.value = b.load();
    }
  }

 protected:
  static Matrix values(const Tensor& t) { return t.data() * t.scale(); }
  void check_unchanged_shapes() const {
    for (size_t i = 0; i < params_.size(); ++i) {
      check_param(params_[i]);
      SCALIFY_CHECK(params_[i].value->rows() == shapes_[i].first && params_[i].value->cols() == shapes_[i].second,
                    shape_error,
                    "scalify::nn optimizer: parameter '" + params_[i].name + "' changed shape from " +
                        scalify::detail::shape_string(shapes_[i].first, shapes_[i].second) + " to " +
                        scalify::detail::shape_string(*params_[i].value));
    }
  }
  /// Throws before a step changes anything: shape_error if a parameter
  /// changed shape, std::invalid_argument for a policy outside the enum.
  void check_step(const char* where, nonfinite_policy policy) const {
    check_unchanged_shapes();
    SCALIFY_CHECK(policy == nonfinite_policy::skip || policy == nonfinite_policy::raise, std::invalid_argument,
                  std::string(where) + ": unknown nonfinite_policy " + std::to_string(static_cast<int>(policy)));
  }
  /// check_step(), then every gradient but those with known_finite[i] set:
  /// true if the step may proceed; false (skip) or throws (raise) if a
  /// gradient is not finite, counting it.
  bool begin_step(const char* where, nonfinite_policy policy, const std::vector<bool>& known_finite = {}) {
    check_step(where, policy);
    for (size_t i = 0; i < params_.size(); ++i) {
      const param_ref& p = params_[i];
      if ((i < known_finite.size() && known_finite[i]) || all_finite(*p.grad)) continue;
      ++skipped_;
      if (policy == nonfinite_policy::raise) throw nonfinite_gradient_error(nonfinite_message(where, p.name, *p.grad));
      return false;
    }
    ++t_;
    return true;
  }
  /// Stores the new weights `w` of parameter i into the state format and the
  /// parameter: what scaled_buffer::store then load() give, without the
  /// narrow tensor. Rows of w / scale are rounded into the format in a
  /// cache-sized buffer and widened straight back into the parameter (the
  /// rows read are the rows written, so w may read the parameter).
  void store_weights(size_t i, const detail::row_source& w) {
    const float scale = scaled_buffer::store_scale(w, state_);
    Tensor& param = *params_[i].value;
    const convert_options o = scaled_buffer::store_options(state_, state_.stochastic_master, weight_seed(i));
    with_dtype(state_.format,
               [&]<class T>() { round_rows<T>(w, 1.0f / scale, o, nullptr, param.data().data()); });
    param.set_scale(scale);
  }
  /// Throws shape_error, before a step changes anything, if a stored state
  /// tensor in `buffers` (one per parameter, `what` in the message) has
  /// another shape than its parameter: restore() takes any tensor.
  void check_state_shapes(const char* where, const std::vector<scaled_buffer>& buffers, const char* what) const {
    for (size_t i = 0; i < buffers.size() && i < params_.size(); ++i) {
      const scaled_buffer& b = buffers[i];
      if (b.empty() || params_[i].value == nullptr) continue;
      SCALIFY_CHECK(b.rows() == params_[i].value->rows() && b.cols() == params_[i].value->cols(), shape_error,
                    std::string(where) + ": the " + what + " of parameter '" + params_[i].name + "' is " +
                        scalify::detail::shape_string(b.rows(), b.cols()) + " but the parameter is " +
                        scalify::detail::shape_string(*params_[i].value));
    }
  }
  /// state_refs "<parameter>.<suffix>" of `buffers` (one per parameter).
  std::vector<state_ref> named(std::vector<scaled_buffer>& buffers, const char* suffix, bool required) {
    std::vector<state_ref> out;
    for (size_t i = 0; i < buffers.size(); ++i) {
      out.push_back({params_[i].name + "." + suffix, &buffers[i], required, i});
    }
    return out;
  }
  /// The seed of the stochastic rounding of parameter i's weights in the current step.
  uint64_t weight_seed(size_t i) const { return mix_seed(state_.seed, (static_cast<uint64_t>(t_) << 20) + 3 * i); }
  uint64_t state_seed(size_t i, int which) const {
    return mix_seed(state_.seed, (static_cast<uint64_t>(t_) << 20) + 3 * i + 1 + static_cast<uint64_t>(which));
  }

  std::vector<param_ref> params_;
  state_config state_;
  std::vector<std::pair<Eigen::Index, Eigen::Index>> shapes_;
  long t_ = 0;
  long skipped_ = 0;
};

}  // namespace detail

/// SGD with momentum and (coupled, L2) weight decay, as PyTorch's SGD:
/// v = momentum v + g + weight_decay w;  w -= lr v. The momentum buffer is
/// stored (nearest even) in state.format. `on_nonfinite`: what step() does
/// with a NaN or inf gradient (skip the step, or throw).
struct sgd_config {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  nonfinite_policy on_nonfinite = nonfinite_policy::skip;
};

namespace detail {

/// The fixed blocks of an SGD step's passes, in elements (a multiple of
/// 16: the sums' lanes restart at each block). The blocks are split across
/// the scope's threads and their sums added in order, so nothing depends on
/// the thread count; the 4 KiB buffers of a block stay in L1.
inline constexpr Eigen::Index kSgdBlock = 1024;
static_assert(kSgdBlock % 16 == 0);

/// Elements [at, at + n) of the momentum `p` as float: in place for float
/// data, else widened into `buffer`.
inline const float* momentum_block(const AnyTensor& p, Eigen::Index at, Eigen::Index n, float* buffer) {
  return std::visit(
      [&](const auto& m) -> const float* {
        using P = typename std::decay_t<decltype(m)>::data_type::Scalar;
        if constexpr (std::is_same_v<P, float>) {
          return m.data().data() + at;
        } else {
          const auto count = static_cast<size_t>(n);
          convert(std::span<const P>(m.data().data() + at, count), std::span<float>(buffer, count));
          return buffer;
        }
      },
      p);
}

/// Where the storing pass of an SGD step puts its results, in format T:
/// v / sv rounded with `v_options` into `v_codes` (if not null), and
/// u / su rounded with `u_options` (stochastic offsets: element indices)
/// and widened back into `w_out`.
template <class T>
struct sgd_store {
  T* v_codes;
  float sv;
  convert_options v_options;
  float* w_out;
  float su;
  convert_options u_options;
};

/// One pass of an SGD step over the parameter (wt, gt), p its previous
/// momentum (null: none), with the arithmetic of nn/detail/sgd_kernels.hpp:
/// without `store`, the sums of squares of the new momentum v and of the new
/// weights u, which give the two stores' dynamic scales; with it, v and u
/// rounded into T (see sgd_store). Each element is read before it is
/// written, so v_codes may be p's codes and w_out wt's data. A float16
/// momentum is read, and float16 stores are rounded, by the kernels'
/// float16 routines in the same pass; other formats go through the bulk
/// casts and buffers of a block.
template <class T>
step_sums sgd_pass(const Tensor& wt, const Tensor& gt, const AnyTensor* p, const sgd_config& cfg,
                   const sgd_store<T>* store) {
  const Eigen::Index size = wt.size(), blocks = (size + kSgdBlock - 1) / kSgdBlock;
  if (size == 0) return {};
  const sgd_kernels& kernels = sgd_kernels_for(active_cpu_path());
  const bool decay = cfg.weight_decay != 0.0f;
  const sgd_block_fn block = kernels.block[decay][p != nullptr];
  const sgd_half_fn half = kernels.half[decay][p != nullptr];
  const float ps = p != nullptr ? std::visit([](const auto& m) { return m.scale(); }, *p) : 1.0f;
  const auto* p16 = p != nullptr ? std::get_if<ScaledMatrix<float16>>(p) : nullptr;
  constexpr bool kFloat = std::is_same_v<T, float>, kHalf = std::is_same_v<T, float16>;
  // The float16 routine: sums with a float16 momentum or none; stores into
  // float16 when the momentum is float16 or none, with the roundings it has
  // (v to nearest even, u to nearest even or stochastically, both saturating
  // alike: store_options gives these).
  const bool roundings = store == nullptr || (store->v_options.round == rounding::nearest_even &&
                                              store->v_options.saturate == store->u_options.saturate &&
                                              (store->u_options.round == rounding::nearest_even ||
                                               store->u_options.round == rounding::stochastic));
  const bool fused = (p == nullptr || p16 != nullptr) && (store == nullptr ? p16 != nullptr : kHalf) && roundings;
  std::vector<step_sums> partial(store == nullptr ? static_cast<size_t>(blocks) : 0);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / kSgdBlock);  // >= 64 Ki values per thread
  scalify::detail::parallel_ranges(blocks, grain, 1, current_config().threads, [&](int64_t begin, int64_t end) {
    const bool buffers = !fused && store != nullptr && !kFloat;
    std::vector<float> p_buffer(p != nullptr && !fused ? kSgdBlock : 0);
    std::vector<float> v_buffer(buffers ? kSgdBlock : 0), u_buffer(v_buffer.size());
    std::vector<T> u_codes(buffers ? kSgdBlock : 0);
    for (int64_t b = begin; b < end; ++b) {
      const Eigen::Index at = b * kSgdBlock, n = std::min(kSgdBlock, size - at);
      const sgd_block operands{wt.data().data() + at,
                               gt.data().data() + at,
                               p != nullptr && !fused ? momentum_block(*p, at, n, p_buffer.data()) : nullptr,
                               wt.scale(),
                               gt.scale(),
                               ps,
                               cfg.momentum,
                               cfg.weight_decay,
                               cfg.lr,
                               p16 != nullptr ? p16->data().data() + at : nullptr};
      if (fused) {
        if (store == nullptr) {
          partial[static_cast<size_t>(b)] = half(operands, n, nullptr);
          continue;
        }
        if constexpr (kHalf) {
          const sgd_half_outputs out{.v_codes = store->v_codes != nullptr ? store->v_codes + at : nullptr,
                                     .fv = 1.0f / store->sv,
                                     .u_out = store->w_out + at,
                                     .fu = 1.0f / store->su,
                                     .saturate = store->u_options.saturate,
                                     .stochastic = store->u_options.round == rounding::stochastic,
                                     .keys = scalify::detail::make_stochastic_keys(store->u_options.seed),
                                     .offset = store->u_options.offset + static_cast<uint64_t>(at)};
          half(operands, n, &out);
        }
        continue;
      }
      if (store == nullptr) {
        partial[static_cast<size_t>(b)] = block(operands, n, {.sums = true});
        continue;
      }
      sgd_outputs out{.fv = 1.0f / store->sv, .fu = 1.0f / store->su};
      if constexpr (kFloat) {
        out.v_out = store->v_codes != nullptr ? store->v_codes + at : nullptr;
        out.u_out = store->w_out + at;
        block(operands, n, out);
      } else {
        out.v_out = store->v_codes != nullptr ? v_buffer.data() : nullptr;
        out.u_out = u_buffer.data();
        block(operands, n, out);
        const auto count = static_cast<size_t>(n);
        if (store->v_codes != nullptr) {
          convert(std::span<const float>(v_buffer.data(), count), std::span<T>(store->v_codes + at, count),
                  store->v_options);
        }
        convert_options u_options = store->u_options;
        u_options.offset += static_cast<uint64_t>(at);
        convert(std::span<const float>(u_buffer.data(), count), std::span<T>(u_codes.data(), count), u_options);
        convert(std::span<const T>(u_codes.data(), count), std::span<float>(store->w_out + at, count));
      }
    }
  });
  step_sums out;
  for (const step_sums& s : partial) {
    out.v += s.v;
    out.w += s.w;
  }
  return out;
}

}  // namespace detail

/// A step makes two passes over each parameter's weights, gradient and
/// momentum (detail::sgd_pass): one sums the squares behind both stores'
/// dynamic scales, the other computes the new momentum and weights again and
/// stores both, in place (one pass with plain float32 state: no dynamic
/// scale; a third, into float buffers, for a parameter whose float32 sums
/// are not accurate, see scaled_buffer::accurate_sum). The arithmetic runs
/// on the CPU path's routine (nn/detail/sgd_kernels.hpp), the roundings on
/// the bulk casts.
///
/// **Example**:
/// ```
/// scalify::nn::sgd opt(net.parameters(), {.lr = 0.05f, .momentum = 0.9f});   // float16 state
/// net.zero_grad(); ...forward, backward...; opt.step();
/// ```
class sgd : public detail::optimizer_base {
 public:
  /// Checks everything (check_config(cfg) too) before it rounds the parameters.
  sgd(std::vector<param_ref> params, const sgd_config& cfg, const state_config& state = {})
      : optimizer_base(std::move(params), state), cfg_(cfg) {
    check_config(cfg);
    velocity_.resize(params_.size());
    round_parameters();
  }
  /// Throws std::invalid_argument, naming the values, unless lr and
  /// weight_decay are finite and >= 0 and 0 <= momentum < 1.
  static void check_config(const sgd_config& cfg) {
    SCALIFY_CHECK(std::isfinite(cfg.lr) && cfg.lr >= 0.0f && cfg.momentum >= 0.0f && cfg.momentum < 1.0f &&
                      std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0.0f,
                  std::invalid_argument,
                  "scalify::nn::sgd: need a finite lr >= 0, 0 <= momentum < 1 and a finite weight_decay >= 0, got lr " +
                      detail::g_string(cfg.lr) + ", momentum " + detail::g_string(cfg.momentum) + ", weight_decay " +
                      detail::g_string(cfg.weight_decay));
  }
  /// One update of the parameters' values from their grad tensors. Returns
  /// false, changing nothing, if a gradient is not finite (see nonfinite_policy).
  /// Throws, changing nothing, for a config() that check_config() refuses
  /// (config() may have been changed since the constructor).
  bool step() {
    const char* where = "scalify::nn::sgd::step";
    check_config(cfg_);
    if (cfg_.momentum != 0.0f) check_state_shapes(where, velocity_, "momentum");
    check_step(where, cfg_.on_nonfinite);
    // With a dynamic scale, a first pass over every parameter sums the
    // squares behind its two stores' scales. A finite sum of v^2 also shows
    // that the gradient is finite (a NaN or inf in g * gs makes v so), and
    // begin_step does not read that gradient again. Nothing changes before
    // the check.
    const long t = t_ + 1;  // the step number, if it is applied
    std::vector<detail::step_sums> sums(params_.size());
    std::vector<bool> finite(params_.size(), false);
    if (state_.dynamic_scale) {
      for (size_t i = 0; i < params_.size(); ++i) {
        sums[i] = detail::sgd_pass<float>(*params_[i].value, *params_[i].grad, previous_momentum(i, t), cfg_, nullptr);
        finite[i] = std::isfinite(sums[i].v);
      }
    }
    if (!begin_step(where, cfg_.on_nonfinite, finite)) return false;
    for (size_t i = 0; i < params_.size(); ++i) {
      detail::with_dtype(state_.format, [&]<class T>() { store_parameter<T>(i, sums[i]); });
    }
    return true;
  }
  sgd_config& config() { return cfg_; }
  const sgd_config& config() const { return cfg_; }
  /// Parameter i's momentum buffer (empty before the first step or with momentum 0; a step reads an empty one
  /// as zero: the new momentum is then the gradient term).
  const scaled_buffer& velocity(size_t i) const { return velocity_.at(i); }
  /// "sgd" (checkpoints record it).
  static const char* kind() { return "sgd"; }
  /// The momentum buffers, "<parameter>.momentum" (required once a step with momentum was applied).
  std::vector<state_ref> state_tensors() { return named(velocity_, "momentum", cfg_.momentum != 0.0f && t_ > 0); }

 private:
  /// Parameter i's momentum before step number t (null: none, the new momentum is the gradient term).
  const AnyTensor* previous_momentum(size_t i, long t) const {
    return cfg_.momentum != 0.0f && t > 1 && !velocity_[i].empty() ? &velocity_[i].stored() : nullptr;
  }
  /// The dynamic scales of parameter i's two stores (momentum, weights),
  /// from `sums` of the first pass. A float sum that is not accurate
  /// (scaled_buffer::accurate_sum: values whose squares underflow or
  /// overflow float) is taken again in double, from v and u computed again
  /// into float buffers by the same routine (the same values).
  std::pair<float, float> store_scales(size_t i, const detail::step_sums& sums) const {
    const Tensor& wt = *params_[i].value;
    const bool redo_v = cfg_.momentum != 0.0f && !scaled_buffer::accurate_sum(sums.v);
    const bool redo_u = !scaled_buffer::accurate_sum(sums.w);
    float sv = scaled_buffer::scale_for(sums.v, wt.size(), state_);
    float su = scaled_buffer::scale_for(sums.w, wt.size(), state_);
    if (!state_.dynamic_scale || wt.size() == 0 || (!redo_v && !redo_u)) return {sv, su};
    Matrix v(wt.rows(), wt.cols()), u(wt.rows(), wt.cols());
    const detail::sgd_store<float> values{v.data(), 1.0f, {}, u.data(), 1.0f, {}};
    detail::sgd_pass<float>(wt, *params_[i].grad, previous_momentum(i, t_), cfg_, &values);
    if (redo_v) sv = scaled_buffer::scale_for(scaled_buffer::sum_of_squares<double>(v), wt.size(), state_);
    if (redo_u) su = scaled_buffer::scale_for(scaled_buffer::sum_of_squares<double>(u), wt.size(), state_);
    return {sv, su};
  }
  /// The storing pass of parameter i's update with state format T, `sums`
  /// from the first pass (with a dynamic scale): the momentum is stored in
  /// place when its buffer already has format T and the shape.
  template <class T>
  void store_parameter(size_t i, const detail::step_sums& sums) {
    Tensor& wt = *params_[i].value;
    const Eigen::Index rows = wt.rows(), cols = wt.cols();
    const bool momentum = cfg_.momentum != 0.0f;
    const auto [sv, su] = store_scales(i, sums);
    T* v_codes = momentum ? velocity_[i].data_as<T>(rows, cols) : nullptr;
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> fresh;
    if (momentum && v_codes == nullptr) {
      fresh.resize(rows, cols);
      v_codes = fresh.data();
    }
    const detail::sgd_store<T> store{v_codes,
                                     sv,
                                     scaled_buffer::store_options(state_, false, state_seed(i, 0)),
                                     wt.data().data(),
                                     su,
                                     scaled_buffer::store_options(state_, state_.stochastic_master, weight_seed(i))};
    detail::sgd_pass<T>(wt, *params_[i].grad, previous_momentum(i, t_), cfg_, &store);
    if (fresh.size() != 0) {
      velocity_[i].restore(ScaledMatrix<T>(std::move(fresh), sv));
    } else if (momentum) {
      velocity_[i].set_scale(sv);
    }
    wt.set_scale(su);
  }

  sgd_config cfg_;
  std::vector<scaled_buffer> velocity_;
};

/// AdamW hyperparameters (PyTorch's defaults, weight_decay 0.01 as there);
/// `on_nonfinite` as in sgd_config.
struct adamw_config {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
  nonfinite_policy on_nonfinite = nonfinite_policy::skip;
};

/// AdamW with bias correction and decoupled weight decay (see the file comment).
///
/// **Example**: `scalify::nn::adamw opt(net.parameters(), {.lr = 1e-3f}, {.format = dtype::bfloat16});`
class adamw : public detail::optimizer_base {
 public:
  /// Checks everything (check_config(cfg) too) before it rounds the parameters.
  adamw(std::vector<param_ref> params, const adamw_config& cfg, const state_config& state = {})
      : optimizer_base(std::move(params), state), cfg_(cfg) {
    check_config(cfg);
    m_.resize(params_.size());
    r_.resize(params_.size());
    round_parameters();
  }
  /// Throws std::invalid_argument, naming the values, unless lr and
  /// weight_decay are finite and >= 0, the betas in [0, 1) and eps finite and > 0.
  static void check_config(const adamw_config& cfg) {
    SCALIFY_CHECK(std::isfinite(cfg.lr) && cfg.lr >= 0.0f && cfg.beta1 >= 0.0f && cfg.beta1 < 1.0f &&
                      cfg.beta2 >= 0.0f && cfg.beta2 < 1.0f && std::isfinite(cfg.eps) && cfg.eps > 0.0f &&
                      std::isfinite(cfg.weight_decay) && cfg.weight_decay >= 0.0f,
                  std::invalid_argument,
                  "scalify::nn::adamw: need a finite lr >= 0, betas in [0, 1), a finite eps > 0 and a finite "
                  "weight_decay >= 0, got lr " +
                      detail::g_string(cfg.lr) + ", beta1 " + detail::g_string(cfg.beta1) + ", beta2 " +
                      detail::g_string(cfg.beta2) + ", eps " + detail::g_string(cfg.eps) + ", weight_decay " +
                      detail::g_string(cfg.weight_decay));
  }
  /// One update (see sgd::step); t in the bias corrections counts applied steps only.
  bool step() {
    check_config(cfg_);
    check_state_shapes("scalify::nn::adamw::step", m_, "first moment");
    check_state_shapes("scalify::nn::adamw::step", r_, "second moment's root");
    if (!begin_step("scalify::nn::adamw::step", cfg_.on_nonfinite)) return false;
    const float bc1 = 1.0f - std::pow(cfg_.beta1, static_cast<float>(t_));
    const float bc2 = 1.0f - std::pow(cfg_.beta2, static_cast<float>(t_));
    for (size_t i = 0; i < params_.size(); ++i) {
      const Matrix w = values(*params_[i].value);
      const Matrix g = values(*params_[i].grad);
      Matrix m = (1.0f - cfg_.beta1) * g;
      Matrix v = (1.0f - cfg_.beta2) * g.cwiseAbs2();
      // An empty moment (none stored yet, or left empty by a checkpoint
      // that did not hold it) is zero, as sgd's empty momentum.
      if (t_ > 1 && !m_[i].empty()) m += cfg_.beta1 * values(m_[i].load());
      if (t_ > 1 && !r_[i].empty()) v += cfg_.beta2 * values(r_[i].load()).cwiseAbs2();
      m_[i].store(m, state_, false, state_seed(i, 0));
      const Matrix r = v.cwiseSqrt();
      r_[i].store(r, state_, false, state_seed(i, 1));
      // The update uses the values as stored (what the next step will see).
      const Matrix ms = values(m_[i].load()), rs = values(r_[i].load());
      const Matrix update = (ms / bc1).array() / ((rs / std::sqrt(bc2)).array() + cfg_.eps);
      store_weights(i, w - cfg_.lr * (update + cfg_.weight_decay * w));
    }
    return true;
  }
  adamw_config& config() { return cfg_; }
  const adamw_config& config() const { return cfg_; }
  /// Parameter i's first moment m and r = sqrt(second moment) (empty before
  /// the first step; a step reads an empty one as zero).
  const scaled_buffer& first_moment(size_t i) const { return m_.at(i); }
  const scaled_buffer& second_moment_sqrt(size_t i) const { return r_.at(i); }
  /// "adamw" (checkpoints record it).
  static const char* kind() { return "adamw"; }
  /// "<parameter>.adam_m" and "<parameter>.adam_r" (r = sqrt of the second
  /// moment), required once a step was applied.
  std::vector<state_ref> state_tensors() {
    std::vector<state_ref> out = named(m_, "adam_m", t_ > 0);
    for (auto& r : named(r_, "adam_r", t_ > 0)) out.push_back(std::move(r));
    return out;
  }

 private:
  adamw_config cfg_;
  std::vector<scaled_buffer> m_, r_;
};

/// Learning rate with linear warmup and cosine decay: from 0 up to `peak`
/// over steps [0, warmup), then down to `min_lr` along half a cosine until
/// step `total`, `min_lr` after it.
///
/// **Example**: `opt.config().lr = scalify::nn::warmup_cosine{.peak = 3e-3f, .warmup = 100, .total = 2000}.at(step);`
struct warmup_cosine {
  float peak = 1e-3f;
  float min_lr = 0.0f;
  long warmup = 0;
  long total = 1;

  /// The learning rate of step `step` (0-based). Throws std::invalid_argument
  /// unless 0 <= min_lr <= peak, 0 <= warmup <= total, total > 0 and step >= 0.
  float at(long step) const {
    SCALIFY_CHECK(min_lr >= 0.0f && min_lr <= peak && warmup >= 0 && warmup <= total && total > 0 && step >= 0,
                  std::invalid_argument,
                  "scalify::nn::warmup_cosine: need 0 <= min_lr <= peak, 0 <= warmup <= total, total > 0 and "
                  "step >= 0, got peak " + detail::g_string(peak) + ", min_lr " + detail::g_string(min_lr) +
                      ", warmup " + std::to_string(warmup) + ", total " + std::to_string(total) + ", step " +
                      std::to_string(step));
    if (step < warmup) return peak * static_cast<float>(step + 1) / static_cast<float>(warmup);
    if (step >= total) return min_lr;
    const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<long>(1, total - warmup));
    const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
    return min_lr + static_cast<float>((peak - min_lr) * cosine);
  }
};

/// The global norm of the gradients, sqrt(sum over tensors of s^2 sum d^2),
/// in double with each tensor's scale applied after its data's sum of squares
/// (no overflow or underflow for scales far from 1); if it is above
/// `max_norm`, every gradient's scale is multiplied by max_norm / norm (the
/// data unchanged). Returns the norm before clipping; a non-finite norm
/// (a non-finite gradient) changes nothing, for the optimizer's step to skip.
/// Throws std::invalid_argument unless max_norm > 0, or for a null gradient.
///
/// **Example**: `double norm = scalify::nn::clip_grad_norm(model.parameters(), 1.0);`
inline double clip_grad_norm(const std::vector<param_ref>& params, double max_norm) {
  SCALIFY_CHECK(max_norm > 0.0, std::invalid_argument,
                "scalify::nn::clip_grad_norm: max_norm must be > 0, got " + detail::g_string(max_norm));
  double sum = 0.0;
  for (const auto& p : params) {
    SCALIFY_CHECK(p.grad != nullptr, std::invalid_argument,
                  "scalify::nn::clip_grad_norm: parameter '" + p.name + "' has a null gradient");
    if (p.grad->size() == 0) continue;
    const double s = static_cast<double>(p.grad->scale());
    sum += s * s * p.grad->data().cast<double>().squaredNorm();
  }
  const double norm = std::sqrt(sum);
  if (std::isfinite(norm) && norm > max_norm) {
    const double factor = max_norm / norm;
    for (const auto& p : params) {
      p.grad->set_scale(scalify::detail::unchecked_scale, static_cast<float>(p.grad->scale() * factor));
    }
  }
  return norm;
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_OPTIM_HPP_
