// scalify nn: multi-head causal self-attention on scaled tensors (the core:
// the projections around it are Linear layers).
//
// B = batch, T = time, H = heads, d = head size, C = H d. Rows are (batch,
// time) pairs, b * T + t; the per-head views are block_grids over the same
// data (ops/batched.hpp), nothing is copied per head.
//
//   attention_forward(o, cache, qkv, B, H, cfg)   qkv (B*T, 3C) = [Q | K | V] -> o (B*T, C)
//       S = Q K^T / sqrt(d)     per (b, h), stacked into (B*H*T, T): the 1/sqrt(d) goes into S's scale
//       P = softmax(S)          row-wise over the columns j <= t (causal), 0 above; scale 1
//       O = P V                 written into head h's columns of o
//   attention_backward(dqkv, dout, cache, cfg)     dout (B*T, C) -> dqkv (B*T, 3C)
//       dP = dO V^T,  dV = P^T dO,  dS = P (dP - rowsum(dP P)),  dQ = dS K / sqrt(d),  dK = dS^T Q / sqrt(d)
//   attention_forward_ref / attention_backward_ref   the same in plain T, by loops
//
// Formats (attention_config): Q and K in `qk`, P and V in `pv`, dO and dS in
// `grad`; e.g. fp8(): e4m3fn forward operands, e5m2 gradients. S, P, dP and dS
// are float32 data with a scale; each product's operands are cast (saturating)
// just before it. Scales follow the rules: S gets sq * sk * R(sqrt d) / sqrt(d),
// P scale 1 (then rebased by `probs_rescale` before its cast, so that its data,
// ~1/T on average, sits in the middle of float8's range), dP the product's,
// dS dP's (rebased by `grad_rescale` before its cast, as dO is).
#ifndef SCALIFY_NN_ATTENTION_HPP_
#define SCALIFY_NN_ATTENTION_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <algorithm>   // std::max
#include <cmath>       // std::exp, std::sqrt
#include <limits>      // std::numeric_limits
#include <string>      // std::string, std::to_string
#include <variant>     // std::visit

#include "scalify/errors.hpp"      // shape_error, SCALIFY_CHECK
#include "scalify/nn/tensor.hpp"   // Tensor, AnyTensor, cast_to, rescale, unscaled
#include "scalify/ops/batched.hpp" // batched_matmul, block_grid
#include "scalify/ops/shape.hpp"   // concatenate_cols

namespace scalify::nn {

/// Number formats and scaling of the attention core.
///
/// | field | operands |
/// |---|---|
/// | `qk` | Q and K (S = Q K^T; dQ = dS K and dK = dS^T Q read them too) |
/// | `pv` | P and V (O = P V; dP = dO V^T and dV = P^T dO read them too) |
/// | `grad` | dO and dS in the backward products |
/// | `probs_rescale` | rebasing of P before its cast |
/// | `grad_rescale` | rebasing of dO and dS before their casts |
/// | `scaled` | false: "naive" low precision, every operand and result on scale 1 |
///
/// **Example**: `auto cfg = scalify::nn::attention_config::fp8();`
struct attention_config {
  dtype qk = dtype::float32;
  dtype pv = dtype::float32;
  dtype grad = dtype::float32;
  rescale_mode probs_rescale = rescale_mode::none;
  rescale_mode grad_rescale = rescale_mode::none;
  bool scaled = true;

  /// Every product in float32.
  static attention_config fp32() { return {}; }
  /// Scaled float16 operands.
  static attention_config fp16() { return {dtype::float16, dtype::float16, dtype::float16}; }
  /// e4m3fn forward operands, e5m2 gradients; P, dO and dS rebased by their RMS.
  static attention_config fp8() {
    return {dtype::e4m3fn, dtype::e4m3fn, dtype::e5m2, rescale_mode::l2, rescale_mode::l2, true};
  }
  /// fp8's formats without scaling: every operand on scale 1.
  static attention_config fp8_naive() {
    attention_config c = fp8();
    c.probs_rescale = c.grad_rescale = rescale_mode::none;
    c.scaled = false;
    return c;
  }
};

/// What attention_forward keeps for attention_backward.
struct attention_cache {
  Eigen::Index batch = 0, heads = 0;
  AnyTensor qkv_qk;  ///< qkv in cfg.qk (Q and K)
  AnyTensor qkv_pv;  ///< qkv in cfg.pv (V)
  Tensor p;          ///< the probabilities, float data on scale 1 (B*H*T, T)
  AnyTensor p_pv;    ///< P as cast for O = P V (rebased by cfg.probs_rescale)
};

namespace detail {

/// (T, C, d) of qkv (B*T, 3C) with B and H; throws shape_error naming `where` unless they divide.
struct attention_dims {
  Eigen::Index time, channels, head_dim;
};
inline attention_dims attention_dims_of(const char* where, Eigen::Index rows, Eigen::Index cols,
                                        Eigen::Index batch, Eigen::Index heads) {
  SCALIFY_CHECK(batch > 0 && heads > 0 && rows > 0 && rows % batch == 0 && cols % (3 * heads) == 0 && cols > 0,
                shape_error,
                std::string(where) + ": qkv " + scalify::detail::shape_string(rows, cols) + " with batch " +
                    std::to_string(batch) + " and heads " + std::to_string(heads) +
                    " (expected (batch * T) x (3 * heads * d), batch, heads and T > 0)");
  return {rows / batch, cols / 3, cols / 3 / heads};
}

inline void check_attention_config(const char* where, const attention_config& cfg) {
  SCALIFY_CHECK(valid_dtype(cfg.qk) && valid_dtype(cfg.pv) && valid_dtype(cfg.grad), std::invalid_argument,
                std::string(where) + ": attention_config has a dtype outside the enum");
  SCALIFY_CHECK(valid_rescale_mode(cfg.probs_rescale) && valid_rescale_mode(cfg.grad_rescale),
                std::invalid_argument, std::string(where) + ": attention_config has a rescale_mode outside the enum");
}

/// out = the batched product of a and b (one visit of the 25 operand pairs), on
/// its scale, or in naive mode its values on scale 1 rounded into `naive`.
inline void batched_any(Tensor& out, const block_grid& gc, const AnyTensor& a, const block_grid& ga, trans op_a,
                        const AnyTensor& b, const block_grid& gb, trans op_b, double scale_factor, bool scaled,
                        dtype naive) {
  std::visit([&](const auto& x, const auto& y) {
    batched_matmul(out, gc, x, ga, op_a, y, gb, op_b, {.scale_factor = scale_factor});
  }, a, b);
  if (!scaled) out = round_to(unscaled(out), naive, {});
}

/// `x` cast into `t` for a product: saturating and rebased by `mode` if
/// scaled, else its values on scale 1, not saturating.
inline AnyTensor operand(const Tensor& x, dtype t, rescale_mode mode, bool scaled) {
  if (!scaled) return cast_to(unscaled(x), t, {});
  return cast_to(rescale(x, mode), t, {.saturate = true});
}

}  // namespace detail

/// The causal softmax of stacked (B*H*T, T) scores, row r being time t = r mod
/// T: P(r, j) = exp(S(r, j) - m) / sum over j' <= t, m the max over j <= t,
/// and 0 for j > t. S - m is computed from the data as (data - max data) *
/// scale, finite even where data * scale overflows float; P is float data on
/// scale 1. Throws shape_error unless s has T columns and a multiple of T rows.
///
/// **Example**: `Tensor p = scalify::nn::causal_softmax(scores, T);`
inline Tensor causal_softmax(const Tensor& s, Eigen::Index time) {
  SCALIFY_CHECK(time > 0 && s.cols() == time && s.rows() % time == 0, shape_error,
                "scalify::nn::causal_softmax: scores " + scalify::detail::shape_string(s) + " for T = " +
                    std::to_string(time) + " (expected (n * T) x T)");
  Matrix p = Matrix::Zero(s.rows(), time);
  const float scale = s.scale();
  for (Eigen::Index r = 0; r < s.rows(); ++r) {
    const Eigen::Index t = r % time;
    float m = -std::numeric_limits<float>::infinity();  // the max of the data: scales are >= 0
    for (Eigen::Index j = 0; j <= t; ++j) m = std::max(m, s.data()(r, j));
    float sum = 0.0f;
    for (Eigen::Index j = 0; j <= t; ++j) {
      const float e = std::exp((s.data()(r, j) - m) * scale);
      p(r, j) = e;
      sum += e;
    }
    p.row(r).head(t + 1) /= sum;
  }
  return Tensor(scalify::detail::unchecked_scale, std::move(p), 1.0f);
}

/// The backward of causal_softmax: dS = P (dP - rowsum(dP P)), on dP's scale
/// (masked entries: P = 0, so 0). Throws shape_error unless the shapes agree.
inline Tensor causal_softmax_backward(const Tensor& dp, const Tensor& p) {
  SCALIFY_CHECK(dp.rows() == p.rows() && dp.cols() == p.cols(), shape_error,
                "scalify::nn::causal_softmax_backward: dP " + scalify::detail::shape_string(dp) + " and P " +
                    scalify::detail::shape_string(p));
  const Matrix pv = p.data() * p.scale();
  Matrix ds(dp.rows(), dp.cols());
  for (Eigen::Index r = 0; r < dp.rows(); ++r) {
    const float dot = dp.data().row(r).dot(pv.row(r));
    ds.row(r) = pv.row(r).array() * (dp.data().row(r).array() - dot);
  }
  return detail::propagated(std::move(ds), dp.scale());
}

/// Multi-head causal self-attention (see the file comment): o (B*T, C) from
/// qkv (B*T, 3C) = [Q | K | V], heads of d = C / heads columns. Fills `cache`
/// for attention_backward. Throws shape_error, before `cache` changes, unless
/// qkv's rows (at least one) divide by `batch` and its columns by 3 * heads, std::invalid_argument for a config
/// value outside its enum.
///
/// **Example**: `scalify::nn::attention_forward(o, cache, qkv, 8, 4, attention_config::fp8());`
inline void attention_forward(Tensor& o, attention_cache& cache, const Tensor& qkv, Eigen::Index batch,
                              Eigen::Index heads, const attention_config& cfg) {
  const char* where = "scalify::nn::attention_forward";
  detail::check_attention_config(where, cfg);
  const auto [T, C, d] = detail::attention_dims_of(where, qkv.rows(), qkv.cols(), batch, heads);
  cache.batch = batch;
  cache.heads = heads;
  cache.qkv_qk = detail::operand(qkv, cfg.qk, rescale_mode::none, cfg.scaled);
  cache.qkv_pv = cfg.pv == cfg.qk ? cache.qkv_qk : detail::operand(qkv, cfg.pv, rescale_mode::none, cfg.scaled);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  const block_grid scores = block_grid::stacked(batch, heads, T, T);
  Tensor s;
  detail::batched_any(s, scores, cache.qkv_qk, block_grid::heads(batch, T, heads, d, 0), trans::no, cache.qkv_qk,
                      block_grid::heads(batch, T, heads, d, C), trans::yes, inv_sqrt_d, true, cfg.qk);
  if (!cfg.scaled) s = round_to(unscaled(s), dtype::float32, {});
  cache.p = causal_softmax(s, T);
  cache.p_pv = detail::operand(cache.p, cfg.pv, cfg.probs_rescale, cfg.scaled);
  detail::batched_any(o, block_grid::heads(batch, T, heads, d), cache.p_pv, scores, trans::no, cache.qkv_pv,
                      block_grid::heads(batch, T, heads, d, 2 * C), trans::no, 1.0, cfg.scaled, cfg.pv);
}

/// The backward pass of attention_forward: dqkv (B*T, 3C) = [dQ | dK | dV]
/// from dout (B*T, C), on the largest of the three scales. Throws shape_error
/// unless dout is (B*T, C) of the forward pass.
///
/// **Example**: `scalify::nn::attention_backward(dqkv, dout, cache, cfg);`
inline void attention_backward(Tensor& dqkv, const Tensor& dout, const attention_cache& cache,
                               const attention_config& cfg) {
  const char* where = "scalify::nn::attention_backward";
  detail::check_attention_config(where, cfg);
  const Eigen::Index batch = cache.batch, heads = cache.heads;
  const auto [T, C, d] =
      detail::attention_dims_of(where, rows_of(cache.qkv_qk), cols_of(cache.qkv_qk), batch, heads);
  check_shape("scalify::nn::attention_backward: dout", dout, batch * T, C);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  const block_grid scores = block_grid::stacked(batch, heads, T, T);
  const block_grid head = block_grid::heads(batch, T, heads, d);
  const AnyTensor do_g = detail::operand(dout, cfg.grad, cfg.grad_rescale, cfg.scaled);

  Tensor dp, dq, dk, dv;
  // dP = dO V^T (per head: (T x d) (d x T)); dV = P^T dO.
  detail::batched_any(dp, scores, do_g, head, trans::no, cache.qkv_pv, block_grid::heads(batch, T, heads, d, 2 * C),
                      trans::yes, 1.0, true, cfg.grad);
  if (!cfg.scaled) dp = round_to(unscaled(dp), dtype::float32, {});
  detail::batched_any(dv, head, cache.p_pv, scores, trans::yes, do_g, head, trans::no, 1.0, cfg.scaled, cfg.grad);
  // dS = P (dP - rowsum(dP P)); dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d).
  const AnyTensor ds_g = detail::operand(causal_softmax_backward(dp, cache.p), cfg.grad, cfg.grad_rescale, cfg.scaled);
  detail::batched_any(dq, head, ds_g, scores, trans::no, cache.qkv_qk, block_grid::heads(batch, T, heads, d, C),
                      trans::no, inv_sqrt_d, cfg.scaled, cfg.grad);
  detail::batched_any(dk, head, ds_g, scores, trans::yes, cache.qkv_qk, block_grid::heads(batch, T, heads, d, 0),
                      trans::no, inv_sqrt_d, cfg.scaled, cfg.grad);
  dqkv = concatenate_cols(concatenate_cols(dq, dk), dv);
}

/// Reference forward in plain T, by loops: o (B*T, C) and the probabilities p
/// (B*H*T, T) from qkv (B*T, 3C).
template <class T>
void attention_forward_ref(RefMatrix<T>& o, RefMatrix<T>& p, const RefMatrix<T>& qkv, Eigen::Index batch,
                           Eigen::Index heads) {
  const auto [Tm, C, d] = detail::attention_dims_of("scalify::nn::attention_forward_ref", qkv.rows(), qkv.cols(),
                                                    batch, heads);
  o = RefMatrix<T>::Zero(batch * Tm, C);
  p = RefMatrix<T>::Zero(batch * heads * Tm, Tm);
  const T inv_sqrt_d = T(1) / std::sqrt(T(d));
  for (Eigen::Index b = 0; b < batch; ++b) {
    for (Eigen::Index h = 0; h < heads; ++h) {
      for (Eigen::Index t = 0; t < Tm; ++t) {
        const Eigen::Index r = (b * heads + h) * Tm + t;
        T m = -std::numeric_limits<T>::infinity();
        for (Eigen::Index j = 0; j <= t; ++j) {
          T s = 0;
          for (Eigen::Index c = 0; c < d; ++c) s += qkv(b * Tm + t, h * d + c) * qkv(b * Tm + j, C + h * d + c);
          p(r, j) = s * inv_sqrt_d;
          m = std::max(m, p(r, j));
        }
        T sum = 0;
        for (Eigen::Index j = 0; j <= t; ++j) sum += (p(r, j) = std::exp(p(r, j) - m));
        for (Eigen::Index j = 0; j <= t; ++j) p(r, j) /= sum;
        for (Eigen::Index c = 0; c < d; ++c) {
          T acc = 0;
          for (Eigen::Index j = 0; j <= t; ++j) acc += p(r, j) * qkv(b * Tm + j, 2 * C + h * d + c);
          o(b * Tm + t, h * d + c) = acc;
        }
      }
    }
  }
}

/// Reference backward in plain T: dqkv (B*T, 3C) from dout (B*T, C), qkv and
/// the forward's p.
template <class T>
void attention_backward_ref(RefMatrix<T>& dqkv, const RefMatrix<T>& dout, const RefMatrix<T>& qkv,
                            const RefMatrix<T>& p, Eigen::Index batch, Eigen::Index heads) {
  const auto [Tm, C, d] = detail::attention_dims_of("scalify::nn::attention_backward_ref", qkv.rows(), qkv.cols(),
                                                    batch, heads);
  dqkv = RefMatrix<T>::Zero(qkv.rows(), qkv.cols());
  const T inv_sqrt_d = T(1) / std::sqrt(T(d));
  for (Eigen::Index b = 0; b < batch; ++b) {
    for (Eigen::Index h = 0; h < heads; ++h) {
      for (Eigen::Index t = 0; t < Tm; ++t) {
        const Eigen::Index r = (b * heads + h) * Tm + t, row = b * Tm + t;
        // dP(t, j) = dO(t) . V(j); dV(j) += P(t, j) dO(t)
        Eigen::Matrix<T, Eigen::Dynamic, 1> dp = Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(t + 1);
        for (Eigen::Index j = 0; j <= t; ++j) {
          for (Eigen::Index c = 0; c < d; ++c) {
            dp(j) += dout(row, h * d + c) * qkv(b * Tm + j, 2 * C + h * d + c);
            dqkv(b * Tm + j, 2 * C + h * d + c) += p(r, j) * dout(row, h * d + c);
          }
        }
        T dot = 0;
        for (Eigen::Index j = 0; j <= t; ++j) dot += dp(j) * p(r, j);
        for (Eigen::Index j = 0; j <= t; ++j) {
          const T ds = p(r, j) * (dp(j) - dot) * inv_sqrt_d;  // dS of the scaled scores
          for (Eigen::Index c = 0; c < d; ++c) {
            dqkv(row, h * d + c) += ds * qkv(b * Tm + j, C + h * d + c);
            dqkv(b * Tm + j, C + h * d + c) += ds * qkv(row, h * d + c);
          }
        }
      }
    }
  }
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_ATTENTION_HPP_
