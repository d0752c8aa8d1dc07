// scalify nn: layers as small classes, a sequential container and an MLP
// builder.
//
//   module              the interface: forward(x) keeps what backward needs;
//                       backward(dy) returns dx and accumulates the parameter
//                       gradients (+=); zero_grad() clears them
//   linear_layer, relu_layer, gelu_layer (activation_layer), layernorm_layer
//                       thin wrappers of the forward/backward pairs of
//                       nn/linear.hpp, nn/activations.hpp, nn/layernorm.hpp
//   sequential          layers run in order; parameters() for the optimizers
//   make_mlp(cfg)       Linear -> act -> ... -> Linear, e.g. 784-512-512-10
//
// A user layer derives from module (see examples/custom_layer.cpp).
#ifndef SCALIFY_NN_MLP_HPP_
#define SCALIFY_NN_MLP_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cstdint>     // uint64_t
#include <memory>      // std::unique_ptr
#include <stdexcept>   // std::invalid_argument
#include <string>      // std::string, std::to_string
#include <utility>     // std::move
#include <vector>      // std::vector

#include "scalify/activation.hpp"      // activation
#include "scalify/errors.hpp"          // SCALIFY_CHECK
#include "scalify/nn/activations.hpp"  // relu_*, gelu_*
#include "scalify/nn/layernorm.hpp"    // layernorm_*
#include "scalify/nn/linear.hpp"       // linear_*
#include "scalify/nn/tensor.hpp"       // Tensor

namespace scalify::nn {

/// A parameter and its gradient, as the optimizers see them (same shape).
struct param_ref {
  std::string name;
  Tensor* value;
  Tensor* grad;
};

/// A layer with an explicit forward/backward pair.
///
/// **Example**:
/// ```
/// struct square : scalify::nn::module {  // y = x * x, dx = 2 x dy
///   scalify::nn::Tensor x;
///   std::string name() const override { return "square"; }
///   scalify::nn::Tensor forward(const scalify::nn::Tensor& in) override { x = in; return scalify::mul(in, in); }
///   scalify::nn::Tensor backward(const scalify::nn::Tensor& dy, bool) override {
///     scalify::nn::Tensor dx = scalify::mul(dy, x);
///     dx.set_scale(2 * dx.scale());
///     return dx;
///   }
/// };
/// ```
class module {
 public:
  virtual ~module() = default;
  /// A short description, e.g. "linear 784x512 (e4m3fn,e4m3fn | e5m2,e4m3fn | e4m3fn,e5m2)".
  virtual std::string name() const = 0;
  /// y = f(x); keeps what backward() needs.
  virtual Tensor forward(const Tensor& x) = 0;
  /// Returns dx for `dy` (an empty tensor if !need_dx) and accumulates (+=)
  /// the parameter gradients. Call after forward() on the same batch.
  virtual Tensor backward(const Tensor& dy, bool need_dx) = 0;
  /// The parameters and their gradients (none by default).
  virtual std::vector<param_ref> parameters() { return {}; }
  /// Sets the parameter gradients to zero.
  virtual void zero_grad() {}
};

/// y = x W + b (nn/linear.hpp).
class linear_layer : public module {
 public:
  /// Throws std::invalid_argument for sizes linear_init() rejects or an invalid `cfg`.
  linear_layer(Eigen::Index in, Eigen::Index out, const linear_config& cfg, uint64_t seed) : cfg_(cfg) {
    detail::check_linear_config("scalify::nn::linear_layer", cfg);
    linear_init(params_, in, out, seed);
    linear_zero_grad(grads_, params_);
  }
  std::string name() const override {
    auto f = [](matmul_formats m) { return std::string(dtype_name(m.lhs)) + "," + dtype_name(m.rhs); };
    return "linear " + std::to_string(params_.w.rows()) + "x" + std::to_string(params_.w.cols()) + " (" +
           f(cfg_.forward) + " | " + f(cfg_.grad_input) + " | " + f(cfg_.grad_weight) + ")" +
           (cfg_.scaled ? "" : " unscaled");
  }
  Tensor forward(const Tensor& x) override {
    Tensor y;
    linear_forward(y, cache_, x, params_, cfg_);
    return y;
  }
  Tensor backward(const Tensor& dy, bool need_dx) override {
    Tensor dx;
    linear_backward(need_dx ? &dx : nullptr, grads_, dy, cache_, params_, cfg_);
    return dx;
  }
  std::vector<param_ref> parameters() override {
    return {{"w", &params_.w, &grads_.dw}, {"b", &params_.b, &grads_.db}};
  }
  void zero_grad() override { linear_zero_grad(grads_, params_); }

  linear_params& params() { return params_; }
  linear_grads& grads() { return grads_; }
  linear_config& config() { return cfg_; }

 private:
  linear_config cfg_;
  linear_params params_;
  linear_grads grads_;
  linear_cache cache_;
};

/// A parameter-free activation module over a forward/backward function pair of
/// nn/activations.hpp: y = f(x), dx = f'(x) * dy. Keeps x for the backward.
template <void (*Forward)(Tensor& y, const Tensor& x), void (*Backward)(Tensor& dx, const Tensor& dy, const Tensor& x)>
class activation_layer : public module {
 public:
  explicit activation_layer(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  Tensor forward(const Tensor& x) override {
    x_ = x;
    Tensor y;
    Forward(y, x);
    return y;
  }
  Tensor backward(const Tensor& dy, bool need_dx) override {
    Tensor dx;
    if (need_dx) Backward(dx, dy, x_);
    return dx;
  }

 private:
  std::string name_;
  Tensor x_;
};

/// y = max(x, 0).
class relu_layer : public activation_layer<relu_forward, relu_backward> {
 public:
  relu_layer() : activation_layer("relu") {}
};

/// y = gelu(x), tanh approximation (scalify::gelu_tanh).
class gelu_layer : public activation_layer<gelu_forward, gelu_backward> {
 public:
  gelu_layer() : activation_layer("gelu") {}
};

/// Layer normalisation over the features (nn/layernorm.hpp).
class layernorm_layer : public module {
 public:
  explicit layernorm_layer(Eigen::Index channels) {
    layernorm_init(params_, channels);
    zero_grad();
  }
  std::string name() const override { return "layernorm " + std::to_string(params_.gamma.cols()); }
  Tensor forward(const Tensor& x) override {
    Tensor y;
    layernorm_forward(y, cache_, x, params_);
    return y;
  }
  Tensor backward(const Tensor& dy, bool need_dx) override {
    Tensor dx;
    layernorm_backward(dx, grads_, dy, cache_, params_);
    if (!need_dx) dx = Tensor();
    return dx;
  }
  std::vector<param_ref> parameters() override {
    return {{"gamma", &params_.gamma, &grads_.dgamma}, {"beta", &params_.beta, &grads_.dbeta}};
  }
  void zero_grad() override {
    set_zeros(grads_.dgamma, 1, params_.gamma.cols());
    set_zeros(grads_.dbeta, 1, params_.beta.cols());
  }

 private:
  layernorm_params params_;
  layernorm_grads grads_;
  layernorm_cache cache_;
};

/// Layers run one after the other.
///
/// **Example**:
/// ```
/// scalify::nn::sequential net;
/// net.add(std::make_unique<scalify::nn::linear_layer>(784, 10, linear_config::fp8(), 1));
/// Tensor logits = net.forward(x);  ...  net.backward(dlogits);
/// ```
class sequential : public module {
 public:
  /// Appends `layer` and returns it.
  module& add(std::unique_ptr<module> layer) {
    SCALIFY_CHECK(layer != nullptr, std::invalid_argument, "scalify::nn::sequential::add: null layer");
    layers_.push_back(std::move(layer));
    return *layers_.back();
  }
  std::string name() const override {
    std::string s;
    for (const auto& l : layers_) s += (s.empty() ? "" : " -> ") + l->name();
    return s;
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& l : layers_) h = l->forward(h);
    return h;
  }
  /// Backward through every layer; the first layer computes dx only if need_dx.
  Tensor backward(const Tensor& dy, bool need_dx = false) override {
    Tensor d = dy;
    for (size_t i = layers_.size(); i-- > 0;) d = layers_[i]->backward(d, i > 0 || need_dx);
    return d;
  }
  std::vector<param_ref> parameters() override {
    std::vector<param_ref> all;
    for (size_t i = 0; i < layers_.size(); ++i) {
      for (auto& p : layers_[i]->parameters()) {
        p.name = std::to_string(i) + "." + p.name;
        all.push_back(p);
      }
    }
    return all;
  }
  void zero_grad() override {
    for (auto& l : layers_) l->zero_grad();
  }
  size_t size() const { return layers_.size(); }
  module& operator[](size_t i) { return *layers_.at(i); }

 private:
  std::vector<std::unique_ptr<module>> layers_;
};

/// The library's activation enum (scalify/activation.hpp: none, relu,
/// gelu_tanh), named here too so that `nn::activation::relu` works; it is the
/// same entity, so `using namespace scalify; using namespace scalify::nn;`
/// does not make `activation` ambiguous.
using scalify::activation;

/// An MLP: sizes {784, 512, 512, 10} gives Linear(784, 512) -> act ->
/// Linear(512, 512) -> act -> Linear(512, 10) (optionally LayerNorm before each
/// act; activation::none: no activation layer).
struct mlp_config {
  std::vector<Eigen::Index> sizes;
  activation act = activation::relu;
  bool layernorm = false;
  linear_config linear = linear_config::fp32();
  uint64_t seed = 0;
};

/// Builds the MLP of `cfg`; layer i's weights use seed cfg.seed + i.
/// Throws std::invalid_argument for fewer than 2 sizes, a size <= 0, a
/// layer too large to address (linear_init), an activation outside the enum,
/// or a format or rescale mode of cfg.linear outside its enum.
///
/// **Example**: `auto net = scalify::nn::make_mlp({.sizes = {784, 512, 10}, .linear = linear_config::fp8()});`
inline sequential make_mlp(const mlp_config& cfg) {
  SCALIFY_CHECK(cfg.sizes.size() >= 2, std::invalid_argument,
                "scalify::nn::make_mlp: need at least 2 sizes (inputs, outputs), got " +
                    std::to_string(cfg.sizes.size()));
  for (auto s : cfg.sizes) {
    SCALIFY_CHECK(s > 0, std::invalid_argument, "scalify::nn::make_mlp: sizes must be > 0, got " + std::to_string(s));
  }
  SCALIFY_CHECK(cfg.act == activation::none || cfg.act == activation::relu || cfg.act == activation::gelu_tanh,
                std::invalid_argument,
                "scalify::nn::make_mlp: unknown activation " + std::to_string(static_cast<int>(cfg.act)) +
                    " (expected none, relu or gelu_tanh)");
  detail::check_linear_config("scalify::nn::make_mlp", cfg.linear);
  sequential net;
  for (size_t i = 0; i + 1 < cfg.sizes.size(); ++i) {
    net.add(std::make_unique<linear_layer>(cfg.sizes[i], cfg.sizes[i + 1], cfg.linear, cfg.seed + i));
    if (i + 2 < cfg.sizes.size()) {
      if (cfg.layernorm) net.add(std::make_unique<layernorm_layer>(cfg.sizes[i + 1]));
      if (cfg.act == activation::relu) net.add(std::make_unique<relu_layer>());
      if (cfg.act == activation::gelu_tanh) net.add(std::make_unique<gelu_layer>());
    }
  }
  return net;
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_MLP_HPP_
