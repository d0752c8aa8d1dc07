// scalify nn: optimizers with scaled low-precision master weights and state.
//
//   sgd     v = mu v + g + wd w;  w -= lr v                       (PyTorch's SGD with momentum)
//   adamw   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//           w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd w
//           (Loshchilov & Hutter 2019, decoupled weight decay; PyTorch's AdamW)
//
// Every parameter's master copy and each state tensor is a scaled_buffer: a
// ScaledMatrix stored in float32, float16 or bfloat16 (state_config::format).
// The update itself is computed in float32 from the widened values; then
//   - the buffer is rebased (dynamic scale): scale = pow2_round_down(RMS of the
//     values), so the data's RMS is in [1, 2), far from float16's underflow and
//     overflow whatever the magnitude of the tensor;
//   - the data is rounded into the format, stochastically for the master
//     weights by default, so that updates smaller than half an ulp of a weight
//     are kept on average instead of being rounded away.
// AdamW keeps r = sqrt(v) instead of v: r spans half the binary orders of
// magnitude of v, so small second moments do not underflow next to large ones
// in one per-tensor scale.
//
// After each step the layer's parameter (a Tensor, float32 data) is set to the
// master's exact values (its data widened, its scale), so forward passes see
// precisely the stored low-precision weights.
#ifndef SCALIFY_NN_OPTIM_HPP_
#define SCALIFY_NN_OPTIM_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cmath>       // std::sqrt, std::pow, std::isfinite
#include <cstdint>     // uint64_t
#include <string>      // std::string
#include <utility>     // std::move
#include <variant>     // std::visit
#include <vector>      // std::vector

#include "scalify/core/pow2.hpp"  // pow2_round_down
#include "scalify/errors.hpp"     // SCALIFY_CHECK, shape_error
#include "scalify/nn/mlp.hpp"     // param_ref
#include "scalify/nn/tensor.hpp"  // Tensor, dtype, cast_to

namespace scalify::nn {

/// How optimizer state and master weights are stored.
///
/// | field | meaning |
/// |---|---|
/// | `format` | float32, float16 or bfloat16 |
/// | `dynamic_scale` | rebase every store to scale pow2_round_down(RMS) (else scale 1: plain values) |
/// | `stochastic_master` | round master weights stochastically when stored (else nearest even) |
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

/// One tensor of optimizer state (or master weights) in a state_config format.
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

  /// Stores `values` (plain float32 values) with `cfg`: rebased to
  /// pow2_round_down(RMS) if cfg.dynamic_scale, rounded into cfg.format
  /// (stochastically with seed `seed` if `stochastic`, saturating).
  void store(const Matrix& values, const state_config& cfg, bool stochastic, uint64_t seed) {
    float scale = 1.0f;
    if (cfg.dynamic_scale && values.size() > 0) {
      const float rms = std::sqrt(values.squaredNorm() / static_cast<float>(values.size()));
      if (std::isfinite(rms) && rms > 0.0f) scale = pow2_round_down(rms);
    }
    convert_options o{.saturate = cfg.dynamic_scale};
    if (stochastic && cfg.format != dtype::float32) {
      o.round = rounding::stochastic;
      o.seed = seed;
    }
    data_ = cast_to(Tensor(Matrix(values / scale), scale), cfg.format, o);
  }

 private:
  AnyTensor data_;
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

/// Common part of the optimizers: parameters, master copies, step counter.
class optimizer_base {
 public:
  optimizer_base(std::vector<param_ref> params, const state_config& state) : params_(std::move(params)), state_(state) {
    SCALIFY_CHECK(detail::valid_dtype(state.format), std::invalid_argument,
                  "scalify::nn optimizer: state_config.format is an unknown dtype " +
                      std::to_string(static_cast<int>(state.format)));
    for (auto& p : params_) {
      check_param(p);
      master_.emplace_back();
      master_.back().store(values(*p.value), state_, false, 0);
      *p.value = master_.back().load();
    }
  }
  long step_count() const { return t_; }
  const state_config& state() const { return state_; }
  const scaled_buffer& master(size_t i) const { return master_.at(i); }

 protected:
  static Matrix values(const Tensor& t) { return t.data() * t.scale(); }
  void check_unchanged_shapes() const {
    for (size_t i = 0; i < params_.size(); ++i) {
      check_param(params_[i]);
      SCALIFY_CHECK(params_[i].value->rows() == master_[i].rows() && params_[i].value->cols() == master_[i].cols(),
                    shape_error, "scalify::nn optimizer: parameter '" + params_[i].name + "' changed shape");
    }
  }
  /// Stores the new weights into the master copy i and the layer's parameter.
  void store_weights(size_t i, const Matrix& w) {
    master_[i].store(w, state_, state_.stochastic_master, mix_seed(state_.seed, (static_cast<uint64_t>(t_) << 20) + 3 * i));
    *params_[i].value = master_[i].load();
  }
  uint64_t state_seed(size_t i, int which) const {
    return mix_seed(state_.seed, (static_cast<uint64_t>(t_) << 20) + 3 * i + 1 + static_cast<uint64_t>(which));
  }

  std::vector<param_ref> params_;
  state_config state_;
  std::vector<scaled_buffer> master_;
  long t_ = 0;
};

}  // namespace detail

/// SGD with momentum and (coupled, L2) weight decay, as PyTorch's SGD:
/// v = momentum v + g + weight_decay w;  w -= lr v. The momentum buffer is
/// stored (nearest even) in state.format.
struct sgd_config {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
};

/// **Example**:
/// ```
/// scalify::nn::sgd opt(net.parameters(), {.lr = 0.05f, .momentum = 0.9f});   // float16 state
/// net.zero_grad(); ...forward, backward...; opt.step();
/// ```
class sgd : public detail::optimizer_base {
 public:
  sgd(std::vector<param_ref> params, const sgd_config& cfg, const state_config& state = {})
      : optimizer_base(std::move(params), state), cfg_(cfg) {
    SCALIFY_CHECK(cfg.lr >= 0.0f && cfg.momentum >= 0.0f && cfg.momentum < 1.0f && cfg.weight_decay >= 0.0f,
                  std::invalid_argument, "scalify::nn::sgd: need lr >= 0, 0 <= momentum < 1, weight_decay >= 0");
    velocity_.resize(params_.size());
  }
  /// One update from the gradients in the parameters' grad tensors.
  void step() {
    check_unchanged_shapes();
    ++t_;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Matrix w = master_[i].load().data() * master_[i].scale();
      Matrix g = values(*params_[i].grad);
      if (cfg_.weight_decay != 0.0f) g += cfg_.weight_decay * w;
      Matrix v = g;
      if (cfg_.momentum != 0.0f) {
        if (t_ > 1) v = cfg_.momentum * values(velocity_[i].load()) + g;
        velocity_[i].store(v, state_, false, state_seed(i, 0));
      }
      store_weights(i, w - cfg_.lr * v);
    }
  }
  sgd_config& config() { return cfg_; }

 private:
  sgd_config cfg_;
  std::vector<scaled_buffer> velocity_;
};

/// AdamW hyperparameters (PyTorch's defaults, but weight_decay 0.01).
struct adamw_config {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

/// AdamW with bias correction and decoupled weight decay (see the file comment).
///
/// **Example**: `scalify::nn::adamw opt(net.parameters(), {.lr = 1e-3f}, {.format = dtype::bfloat16});`
class adamw : public detail::optimizer_base {
 public:
  adamw(std::vector<param_ref> params, const adamw_config& cfg, const state_config& state = {})
      : optimizer_base(std::move(params), state), cfg_(cfg) {
    SCALIFY_CHECK(cfg.lr >= 0.0f && cfg.beta1 >= 0.0f && cfg.beta1 < 1.0f && cfg.beta2 >= 0.0f && cfg.beta2 < 1.0f &&
                      cfg.eps > 0.0f && cfg.weight_decay >= 0.0f,
                  std::invalid_argument,
                  "scalify::nn::adamw: need lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0");
    m_.resize(params_.size());
    r_.resize(params_.size());
  }
  void step() {
    check_unchanged_shapes();
    ++t_;
    const float bc1 = 1.0f - std::pow(cfg_.beta1, static_cast<float>(t_));
    const float bc2 = 1.0f - std::pow(cfg_.beta2, static_cast<float>(t_));
    for (size_t i = 0; i < params_.size(); ++i) {
      const Matrix w = master_[i].load().data() * master_[i].scale();
      const Matrix g = values(*params_[i].grad);
      Matrix m = (1.0f - cfg_.beta1) * g;
      Matrix v = (1.0f - cfg_.beta2) * g.cwiseAbs2();
      if (t_ > 1) {
        m += cfg_.beta1 * values(m_[i].load());
        v += cfg_.beta2 * values(r_[i].load()).cwiseAbs2();
      }
      m_[i].store(m, state_, false, state_seed(i, 0));
      const Matrix r = v.cwiseSqrt();
      r_[i].store(r, state_, false, state_seed(i, 1));
      // The update uses the values as stored (what the next step will see).
      const Matrix ms = values(m_[i].load()), rs = values(r_[i].load());
      const Matrix update = (ms / bc1).array() / ((rs / std::sqrt(bc2)).array() + cfg_.eps);
      store_weights(i, w - cfg_.lr * (update + cfg_.weight_decay * w));
    }
  }
  adamw_config& config() { return cfg_; }

 private:
  adamw_config cfg_;
  std::vector<scaled_buffer> m_, r_;
};

}  // namespace scalify::nn

#endif  // SCALIFY_NN_OPTIM_HPP_
