// scalify nn: softmax cross-entropy.
//
// B = batch size, C = classes. logits (B, C), labels B integers in [0, C).
//
//   loss = softmax_cross_entropy(dlogits, logits, labels)
//       loss    = mean_b (logsumexp(logits_b) - logits_b[label_b]), in float32, as
//                 (m - logits_b[label_b]) + log(sum_c exp(logits_b[c] - m)), m the row max
//                 (the log-sum, in [0, log C], is added last: a large m would absorb it)
//       dlogits = (softmax(logits) - onehot(labels)) / B, the label's entry as
//                 -sum_{c != label} softmax_c (1 - softmax_label would cancel)
//
// The differences logits - m are computed from the data as (data - max data)
// * scale: logits whose values overflow float (a scale of 2^127 on data 4)
// give a finite softmax, and a loss that is inf only if it exceeds float.
//
// dlogits' scale is set here, not by a scale rule: its data is rebased with
// `rescale` (default dynamic_rescale_l1, as jax-scalify's MNIST float8 example
// does for the logits gradient), so the gradients that flow back start with
// unit-sized data whatever B and the loss are.
#ifndef SCALIFY_NN_LOSS_HPP_
#define SCALIFY_NN_LOSS_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cmath>       // std::exp, std::log
#include <span>        // std::span
#include <string>      // std::to_string

#include "scalify/errors.hpp"     // shape_error, SCALIFY_CHECK
#include "scalify/nn/tensor.hpp"  // Tensor, RefMatrix, rescale

namespace scalify::nn {

namespace detail {

inline void check_labels(const char* where, Eigen::Index rows, Eigen::Index classes, std::span<const int> labels) {
  SCALIFY_CHECK(static_cast<Eigen::Index>(labels.size()) == rows && rows > 0, shape_error,
                std::string(where) + ": " + std::to_string(labels.size()) + " labels for " + std::to_string(rows) +
                    " rows of logits");
  for (size_t i = 0; i < labels.size(); ++i) {
    SCALIFY_CHECK(labels[i] >= 0 && labels[i] < classes, std::invalid_argument,
                  std::string(where) + ": label " + std::to_string(labels[i]) + " at " + std::to_string(i) +
                      " is not in [0, " + std::to_string(classes) + ")");
  }
}

}  // namespace detail

/// Mean softmax cross-entropy of `logits` (B, C) against `labels` (B values in
/// [0, C)), in float32. If `dlogits` is not null, sets it to the gradient
/// (B, C) of the mean loss, rebased with `rescale` (see the file comment).
/// Throws shape_error / std::invalid_argument on a bad label count or value.
///
/// **Example**: `Tensor dlogits; float loss = scalify::nn::softmax_cross_entropy(&dlogits, logits, labels);`
inline float softmax_cross_entropy(Tensor* dlogits, const Tensor& logits, std::span<const int> labels,
                                   rescale_mode mode = rescale_mode::l1) {
  const Eigen::Index B = logits.rows(), C = logits.cols();
  detail::check_labels("scalify::nn::softmax_cross_entropy", B, C, labels);
  // From the data, the scale folded in: l_c - m = (d_c - max d) * s, finite even where d * s overflows float.
  const float s = logits.scale();
  const auto& d = logits.data();
  Matrix p(B, C);
  double total = 0.0;
  for (Eigen::Index b = 0; b < B; ++b) {
    const auto label = static_cast<Eigen::Index>(labels[static_cast<size_t>(b)]);
    const float m = d.row(b).maxCoeff();
    float others = 0.0f;  // the sum without the label's term: the label's gradient is -others / sum
    for (Eigen::Index c = 0; c < C; ++c) {
      p(b, c) = std::exp((d(b, c) - m) * s);
      if (c != label) others += p(b, c);
    }
    const float sum = others + p(b, label);
    // (m - l[label]) + log(sum): log(sum) is in [0, log C], added last so that a large m does not absorb it.
    total += static_cast<double>((m - d(b, label)) * s) + static_cast<double>(std::log(sum));
    p.row(b) /= sum;
    p(b, label) = -others / sum;  // softmax - 1 without the cancellation (1 - p is lost when p rounds to 1)
  }
  if (dlogits != nullptr) *dlogits = rescale(Tensor(std::move(p), 1.0f / static_cast<float>(B)), mode);
  return static_cast<float>(total / static_cast<double>(B));
}

/// Reference loss and gradient in plain T (float or double); dlogits may be null.
template <class T>
T softmax_cross_entropy_ref(RefMatrix<T>* dlogits, const RefMatrix<T>& logits, std::span<const int> labels) {
  const Eigen::Index B = logits.rows(), C = logits.cols();
  detail::check_labels("scalify::nn::softmax_cross_entropy_ref", B, C, labels);
  T total = 0;
  RefMatrix<T> p(B, C);
  for (Eigen::Index b = 0; b < B; ++b) {
    const T m = logits.row(b).maxCoeff();
    p.row(b) = (logits.row(b).array() - m).exp().matrix();
    const T sum = p.row(b).sum();
    total += (m - logits(b, labels[static_cast<size_t>(b)])) + std::log(sum);
    p.row(b) /= sum;
  }
  if (dlogits != nullptr) {
    for (Eigen::Index b = 0; b < B; ++b) p(b, labels[static_cast<size_t>(b)]) -= T(1);
    *dlogits = p / static_cast<T>(B);
  }
  return total / static_cast<T>(B);
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_LOSS_HPP_
