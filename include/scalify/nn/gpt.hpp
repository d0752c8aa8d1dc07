// scalify nn: a GPT (decoder-only transformer, GPT-2's pre-LayerNorm block)
// on scaled tensors, forward and backward in the llm.c style.
//
//   x = tok[ids] + pos[t]                          token and learned position embeddings (add rule)
//   per block:  x = x + proj(attention(qkv(ln1(x))))     causal multi-head self-attention
//               x = x + fc2(gelu(fc1(ln2(x))))           MLP, 4C hidden
//   logits = head(ln_f(x))                         (B*T, V); tie_head: ln_f(x) tok^T / sqrt(C)
//
// B sequences of T tokens, rows b * T + t; C = dim, H = heads. Every Linear
// (qkv, proj, fc1, fc2, head) runs its three matmuls in gpt_config::linear's
// formats and the attention core in gpt_config::attention's (precision
// presets: linear_config_for, attention_config_for). Residual adds use
// scalify::add's rule (the result's scale from both branches' scales);
// LayerNorm outputs are on scale 1. The scales flowing backward come from the loss (softmax_cross_entropy
// rebases dlogits) and from the dynamic rescaling of each Linear's output
// gradient and of attention's dO and dS before their float8 casts (fp8
// presets: by their RMS), where the rules cannot predict them.
#ifndef SCALIFY_NN_GPT_HPP_
#define SCALIFY_NN_GPT_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cmath>       // std::sqrt
#include <cstdint>     // uint64_t
#include <memory>      // std::unique_ptr
#include <span>        // std::span
#include <stdexcept>   // std::invalid_argument
#include <string>      // std::string, std::to_string
#include <string_view> // std::string_view
#include <vector>      // std::vector

#include "scalify/errors.hpp"            // SCALIFY_CHECK, format_error
#include "scalify/nn/activations.hpp"    // gelu_forward, gelu_backward
#include "scalify/nn/attention.hpp"      // attention_*
#include "scalify/nn/embedding.hpp"      // embedding_*
#include "scalify/nn/layernorm.hpp"      // layernorm_*
#include "scalify/nn/linear.hpp"         // linear_*
#include "scalify/nn/mlp.hpp"            // module, param_ref
#include "scalify/nn/optim.hpp"          // state_config
#include "scalify/nn/tensor.hpp"         // Tensor
#include "scalify/ops/elementwise.hpp"   // add

namespace scalify::nn {

/// The precisions a model is trained in.
enum class precision {
  fp32,      ///< everything in float32
  fp16,      ///< scaled float16 matmul operands
  fp8,       ///< scaled e4m3fn forward operands, e5m2 gradients, dynamic rescaling of the gradients
  fp8_naive, ///< fp8's formats on scale 1: what casting to float8 without scaling does
};

/// "fp32", "fp16", "fp8", "fp8-naive"; throws std::invalid_argument outside the enum.
inline const char* precision_name(precision p) {
  switch (p) {
    case precision::fp32: return "fp32";
    case precision::fp16: return "fp16";
    case precision::fp8: return "fp8";
    case precision::fp8_naive: return "fp8-naive";
  }
  throw std::invalid_argument("scalify::nn::precision_name: unknown precision " +
                              std::to_string(static_cast<int>(p)));
}

/// The inverse of precision_name; throws format_error for anything else.
inline precision parse_precision(std::string_view s) {
  for (const precision p : {precision::fp32, precision::fp16, precision::fp8, precision::fp8_naive}) {
    if (s == precision_name(p)) return p;
  }
  throw format_error("scalify::nn::parse_precision: unknown precision '" + std::string(s) +
                     "' (expected fp32, fp16, fp8 or fp8-naive)");
}

/// The Linear and attention formats of a precision.
inline linear_config linear_config_for(precision p) {
  switch (p) {
    case precision::fp32: return linear_config::fp32();
    case precision::fp16: return linear_config::fp16();
    case precision::fp8: return linear_config::fp8();
    case precision::fp8_naive: {
      linear_config c = linear_config::fp8();
      c.grad_rescale = rescale_mode::none;
      c.scaled = false;
      return c;
    }
  }
  throw std::invalid_argument("scalify::nn::linear_config_for: unknown precision " +
                              std::to_string(static_cast<int>(p)));
}
inline attention_config attention_config_for(precision p) {
  switch (p) {
    case precision::fp32: return attention_config::fp32();
    case precision::fp16: return attention_config::fp16();
    case precision::fp8: return attention_config::fp8();
    case precision::fp8_naive: return attention_config::fp8_naive();
  }
  throw std::invalid_argument("scalify::nn::attention_config_for: unknown precision " +
                              std::to_string(static_cast<int>(p)));
}

/// The optimizer state of a precision: float32 for fp32, unscaled float16
/// for fp8-naive, else scaled float16 (state_config's defaults).
inline state_config state_config_for(precision p) {
  if (p == precision::fp32) return state_config::fp32();
  if (p == precision::fp8_naive) return state_config::fp16_naive();
  return state_config{};
}

/// The model's sizes and formats.
///
/// | field | meaning |
/// |---|---|
/// | `vocab` | V, token ids in [0, V) |
/// | `context` | the largest T (rows of the position table) |
/// | `layers`, `heads`, `dim` | blocks, attention heads, C (a multiple of heads) |
/// | `linear`, `attention` | formats of every Linear and of the attention core |
/// | `tie_head` | logits = ln_f(x) tok^T / sqrt(C): the head is the token table (no bias), as GPT-2's; the 1/sqrt(C) (unit scaling's fan-in factor, in the scale) keeps the logits unit-sized with a unit-variance table |
/// | `seed` | initialization |
struct gpt_config {
  Eigen::Index vocab = 0;
  Eigen::Index context = 64;
  Eigen::Index layers = 2;
  Eigen::Index heads = 4;
  Eigen::Index dim = 128;
  linear_config linear = linear_config::fp32();
  attention_config attention = attention_config::fp32();
  bool tie_head = false;
  uint64_t seed = 0;
};

/// GPT-2's block on (B*T, C) activations (see the file comment). `set_time(T)`
/// before forward: the attention needs T to split the rows into sequences.
class transformer_block : public module {
 public:
  transformer_block(Eigen::Index dim, Eigen::Index heads, const linear_config& lin, const attention_config& att,
                    uint64_t seed)
      : heads_(heads), lin_(lin), att_(att) {
    SCALIFY_CHECK(dim > 0 && heads > 0 && dim % heads == 0, std::invalid_argument,
                  "scalify::nn::transformer_block: dim " + std::to_string(dim) + " must be a positive multiple of heads " +
                      std::to_string(heads));
    layernorm_init(ln1_, dim);
    layernorm_init(ln2_, dim);
    linear_init(qkv_, dim, 3 * dim, seed * 8 + 1);
    linear_init(proj_, dim, dim, seed * 8 + 2);
    linear_init(fc1_, dim, 4 * dim, seed * 8 + 3);
    linear_init(fc2_, 4 * dim, dim, seed * 8 + 4);
    zero_grad();
  }
  std::string name() const override {
    return "block(" + std::to_string(qkv_.w.rows()) + ", " + std::to_string(heads_) + " heads)";
  }
  /// The sequence length of the next forward pass (rows = B * T).
  void set_time(Eigen::Index time) { time_ = time; }

  Tensor forward(const Tensor& x) override {
    SCALIFY_CHECK(time_ > 0 && x.rows() % time_ == 0, shape_error,
                  "scalify::nn::transformer_block: " + std::to_string(x.rows()) + " rows for T = " +
                      std::to_string(time_) + " (set_time first)");
    const Eigen::Index batch = x.rows() / time_;
    Tensor a, qkv, o, y;
    layernorm_forward(a, ln1c_, x, ln1_);
    linear_forward(qkv, qkvc_, a, qkv_, lin_);
    attention_forward(o, attc_, qkv, batch, heads_, att_);
    linear_forward(y, projc_, o, proj_, lin_);
    const Tensor x1 = add(x, y);
    Tensor b, g, z;
    layernorm_forward(b, ln2c_, x1, ln2_);
    linear_forward(h_, fc1c_, b, fc1_, lin_);
    gelu_forward(g, h_);
    linear_forward(z, fc2c_, g, fc2_, lin_);
    return add(x1, z);
  }

  Tensor backward(const Tensor& dy, bool need_dx) override {
    (void)need_dx;  // the residual stream's gradient is needed below anyway
    Tensor dg, dh, db, dx1_mlp, datt, dqkv, da, dx_att;
    linear_backward(&dg, fc2g_, dy, fc2c_, fc2_, lin_);
    gelu_backward(dh, dg, h_);
    linear_backward(&db, fc1g_, dh, fc1c_, fc1_, lin_);
    layernorm_backward(dx1_mlp, ln2g_, db, ln2c_, ln2_);
    const Tensor dx1 = add(dy, dx1_mlp);
    linear_backward(&datt, projg_, dx1, projc_, proj_, lin_);
    attention_backward(dqkv, datt, attc_, att_);
    linear_backward(&da, qkvg_, dqkv, qkvc_, qkv_, lin_);
    layernorm_backward(dx_att, ln1g_, da, ln1c_, ln1_);
    return add(dx1, dx_att);
  }

  std::vector<param_ref> parameters() override {
    return {{"ln1.gamma", &ln1_.gamma, &ln1g_.dgamma}, {"ln1.beta", &ln1_.beta, &ln1g_.dbeta},
            {"qkv.w", &qkv_.w, &qkvg_.dw},             {"qkv.b", &qkv_.b, &qkvg_.db},
            {"proj.w", &proj_.w, &projg_.dw},          {"proj.b", &proj_.b, &projg_.db},
            {"ln2.gamma", &ln2_.gamma, &ln2g_.dgamma}, {"ln2.beta", &ln2_.beta, &ln2g_.dbeta},
            {"fc1.w", &fc1_.w, &fc1g_.dw},             {"fc1.b", &fc1_.b, &fc1g_.db},
            {"fc2.w", &fc2_.w, &fc2g_.dw},             {"fc2.b", &fc2_.b, &fc2g_.db}};
  }
  void zero_grad() override {
    for (layernorm_grads* g : {&ln1g_, &ln2g_}) {
      set_zeros(g->dgamma, 1, ln1_.gamma.cols());
      set_zeros(g->dbeta, 1, ln1_.gamma.cols());
    }
    linear_zero_grad(qkvg_, qkv_);
    linear_zero_grad(projg_, proj_);
    linear_zero_grad(fc1g_, fc1_);
    linear_zero_grad(fc2g_, fc2_);
  }

 private:
  Eigen::Index heads_, time_ = 0;
  linear_config lin_;
  attention_config att_;
  layernorm_params ln1_, ln2_;
  layernorm_grads ln1g_, ln2g_;
  layernorm_cache ln1c_, ln2c_;
  linear_params qkv_, proj_, fc1_, fc2_;
  linear_grads qkvg_, projg_, fc1g_, fc2g_;
  linear_cache qkvc_, projc_, fc1c_, fc2c_;
  attention_cache attc_;
  Tensor h_;  ///< fc1's output, GELU's input
};

/// The GPT of gpt_config (see the file comment).
///
/// **Example**:
/// ```
/// scalify::nn::gpt model({.vocab = 96, .context = 64, .linear = linear_config_for(precision::fp8),
///                         .attention = attention_config_for(precision::fp8)});
/// Tensor logits = model.forward(tokens, batch);      // tokens: batch * T ids
/// Tensor dlogits;  float loss = softmax_cross_entropy(&dlogits, logits, targets);
/// model.zero_grad();  model.backward(dlogits);  opt.step();
/// ```
class gpt {
 public:
  /// Throws std::invalid_argument for sizes <= 0, dim not a multiple of heads,
  /// or a format or rescale mode outside its enum.
  explicit gpt(const gpt_config& cfg) : cfg_(cfg) {
    SCALIFY_CHECK(cfg.vocab > 0 && cfg.context > 0 && cfg.layers > 0 && cfg.heads > 0 && cfg.dim > 0 &&
                      cfg.dim % cfg.heads == 0,
                  std::invalid_argument,
                  "scalify::nn::gpt: need vocab, context, layers, heads, dim > 0 and dim a multiple of heads, got "
                  "vocab " + std::to_string(cfg.vocab) + ", context " + std::to_string(cfg.context) + ", layers " +
                      std::to_string(cfg.layers) + ", heads " + std::to_string(cfg.heads) + ", dim " +
                      std::to_string(cfg.dim));
    detail::check_linear_config("scalify::nn::gpt", cfg.linear);
    detail::check_attention_config("scalify::nn::gpt", cfg.attention);
    embedding_init(tok_, cfg.vocab, cfg.dim, cfg.seed * 1000 + 1);
    embedding_init(pos_, cfg.context, cfg.dim, cfg.seed * 1000 + 2);
    for (Eigen::Index l = 0; l < cfg.layers; ++l) {
      blocks_.push_back(std::make_unique<transformer_block>(cfg.dim, cfg.heads, cfg.linear, cfg.attention,
                                                            cfg.seed * 1000 + 10 + static_cast<uint64_t>(l)));
    }
    layernorm_init(lnf_, cfg.dim);
    if (!cfg.tie_head) linear_init(head_, cfg.dim, cfg.vocab, cfg.seed * 1000 + 3);
    zero_grad();
  }

  const gpt_config& config() const { return cfg_; }

  std::string name() const {
    return "gpt(vocab " + std::to_string(cfg_.vocab) + ", context " + std::to_string(cfg_.context) + ", " +
           std::to_string(cfg_.layers) + " layers, " + std::to_string(cfg_.heads) + " heads, dim " +
           std::to_string(cfg_.dim) + ")";
  }

  /// Logits (B*T, V) of `tokens`, `batch` sequences of T = tokens.size() /
  /// batch ids each (T <= context). Throws std::invalid_argument unless batch
  /// divides the tokens and 0 < T <= context, std::out_of_range for an id
  /// outside [0, vocab); both before the model changes (the last forward
  /// pass's caches stay, for backward).
  Tensor forward(std::span<const int> tokens, Eigen::Index batch) {
    const auto n = static_cast<Eigen::Index>(tokens.size());
    SCALIFY_CHECK(batch > 0 && n > 0 && n % batch == 0 && n / batch <= cfg_.context, std::invalid_argument,
                  "scalify::nn::gpt::forward: " + std::to_string(n) + " tokens in " + std::to_string(batch) +
                      " sequences (need equal sequences of 1 to " + std::to_string(cfg_.context) + " tokens)");
    detail::check_ids("scalify::nn::gpt::forward", tokens, cfg_.vocab);
    // The caches change from here: backward refuses them until this pass completes.
    forward_done_ = false;
    time_ = n / batch;
    tokens_.assign(tokens.begin(), tokens.end());
    positions_.resize(tokens.size());
    for (Eigen::Index i = 0; i < n; ++i) positions_[static_cast<size_t>(i)] = static_cast<int>(i % time_);
    Tensor te, pe;
    embedding_forward(te, tok_, tokens_);
    embedding_forward(pe, pos_, positions_);
    Tensor x = add(te, pe);
    for (auto& b : blocks_) {
      b->set_time(time_);
      x = b->forward(x);
    }
    Tensor xf, logits;
    layernorm_forward(xf, lnfc_, x, lnf_);
    if (cfg_.tie_head) {
      tied_head_forward(logits, xf);
    } else {
      linear_forward(logits, headc_, xf, head_, cfg_.linear);
    }
    forward_done_ = true;
    return logits;
  }

  /// Backward from dlogits (B*T, V) of the last forward: accumulates every
  /// parameter's gradient. Throws shape_error, before any gradient changes,
  /// unless a forward pass completed and dlogits is (B*T, V) of it.
  void backward(const Tensor& dlogits) {
    SCALIFY_CHECK(forward_done_, shape_error,
                  "scalify::nn::gpt::backward: no forward pass to go back through (none ran, or the last one "
                  "threw after it had begun to fill the caches)");
    check_shape("scalify::nn::gpt::backward: dlogits", dlogits, static_cast<Eigen::Index>(tokens_.size()),
                cfg_.vocab);
    Tensor dxf, dx;
    if (cfg_.tie_head) {
      tied_head_backward(dxf, dlogits);
    } else {
      linear_backward(&dxf, headg_, dlogits, headc_, head_, cfg_.linear);
    }
    layernorm_backward(dx, lnfg_, dxf, lnfc_, lnf_);
    for (size_t l = blocks_.size(); l-- > 0;) dx = blocks_[l]->backward(dx, true);
    // x = tok + pos: both get dx.
    embedding_backward(tokg_, dx, tokens_, tok_);
    embedding_backward(posg_, dx, positions_, pos_);
  }

  /// Every parameter with its gradient, for the optimizers.
  std::vector<param_ref> parameters() {
    std::vector<param_ref> all = {{"tok", &tok_.table, &tokg_.dtable}, {"pos", &pos_.table, &posg_.dtable}};
    for (size_t l = 0; l < blocks_.size(); ++l) {
      for (auto& p : blocks_[l]->parameters()) {
        p.name = "block" + std::to_string(l) + "." + p.name;
        all.push_back(p);
      }
    }
    all.push_back({"ln_f.gamma", &lnf_.gamma, &lnfg_.dgamma});
    all.push_back({"ln_f.beta", &lnf_.beta, &lnfg_.dbeta});
    if (!cfg_.tie_head) {
      all.push_back({"head.w", &head_.w, &headg_.dw});
      all.push_back({"head.b", &head_.b, &headg_.db});
    }
    return all;
  }

  void zero_grad() {
    embedding_zero_grad(tokg_, tok_);
    embedding_zero_grad(posg_, pos_);
    for (auto& b : blocks_) b->zero_grad();
    set_zeros(lnfg_.dgamma, 1, cfg_.dim);
    set_zeros(lnfg_.dbeta, 1, cfg_.dim);
    if (!cfg_.tie_head) linear_zero_grad(headg_, head_);
  }

 private:
  /// logits = xf tok^T / sqrt(C) with the Linear formats (forward: x and
  /// the table as the weight), the table read transposed in place, the
  /// 1/sqrt(C) in the scale.
  void tied_head_forward(Tensor& logits, const Tensor& xf) {
    const linear_config& c = cfg_.linear;
    const convert_options cast = c.scaled ? convert_options{.saturate = true} : convert_options{};
    headc_.x = c.scaled ? rescale(xf, c.input_rescale) : unscaled(xf);
    headc_.x_fwd = cast_to(headc_.x, c.forward.lhs, cast);
    headc_.w_fwd = cast_to(c.scaled ? tok_.table : unscaled(tok_.table), c.forward.rhs, cast);
    logits = matmul_any(headc_.x_fwd, headc_.w_fwd, trans::no, trans::yes);
    logits.set_scale(scalify::detail::unchecked_scale, logits.scale() * tied_factor());
    if (!c.scaled) logits = detail::naive_result(logits, c.forward);
  }
  float tied_factor() const { return 1.0f / std::sqrt(static_cast<float>(cfg_.dim)); }
  /// With dz = dlogits / sqrt(C): dxf = dz tok (grad_input's formats), tok's
  /// gradient += dz^T xf (grad_weight's: x in .lhs, the output gradient in .rhs).
  void tied_head_backward(Tensor& dxf, const Tensor& dlogits) {
    const linear_config& c = cfg_.linear;
    const convert_options cast = c.scaled ? convert_options{.saturate = true} : convert_options{};
    Tensor dys = c.scaled ? rescale(dlogits, c.grad_rescale) : unscaled(dlogits);
    dys.set_scale(scalify::detail::unchecked_scale, dys.scale() * tied_factor());  // d/dz of z / sqrt(C)
    if (!c.scaled) dys = unscaled(dys);
    // The forward pass's operands by reference when the formats agree (no copy), else cast into these.
    AnyTensor w_cast, x_cast;
    const AnyTensor& w_q =
        c.grad_input.rhs == c.forward.rhs
            ? headc_.w_fwd
            : (w_cast = cast_to(c.scaled ? tok_.table : unscaled(tok_.table), c.grad_input.rhs, cast));
    dxf = matmul_any(cast_to(dys, c.grad_input.lhs, cast), w_q, trans::no, trans::no);
    if (!c.scaled) dxf = detail::naive_result(dxf, c.grad_input);
    const AnyTensor& x_q =
        c.grad_weight.lhs == c.forward.lhs ? headc_.x_fwd : (x_cast = cast_to(headc_.x, c.grad_weight.lhs, cast));
    const AnyTensor dy_w = cast_to(dys, c.grad_weight.rhs, cast);
    if (c.scaled) {
      accumulate_matmul(tokg_.dtable, dy_w, x_q, trans::yes, trans::no);
    } else {
      accumulate(tokg_.dtable, detail::naive_result(matmul_any(dy_w, x_q, trans::yes, trans::no), c.grad_weight));
    }
  }

  gpt_config cfg_;
  embedding_params tok_, pos_;
  embedding_grads tokg_, posg_;
  std::vector<std::unique_ptr<transformer_block>> blocks_;
  layernorm_params lnf_;
  layernorm_grads lnfg_;
  layernorm_cache lnfc_;
  linear_params head_;
  linear_grads headg_;
  linear_cache headc_;
  Eigen::Index time_ = 0;
  std::vector<int> tokens_, positions_;
  bool forward_done_ = false;  ///< the caches hold one whole forward pass (of tokens_)
};

}  // namespace scalify::nn

#endif  // SCALIFY_NN_GPT_HPP_
