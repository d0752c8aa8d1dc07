// scalify nn: embedding tables (token and learned position embeddings).
//
// V = table rows (vocabulary or positions), C = channels, N = looked-up rows.
//
//   embedding_init(p, V, C, seed)              table data ~ N(0, 1), scale 1 (unit-scaled: the rows
//                                              are unit-variance activations as they are)
//   embedding_forward(y, p, ids)               y (N, C): row i = table row ids[i]; y on the table's scale
//   embedding_backward(g, dy, ids)             g.dtable (V, C) += scatter-add of dy's rows at ids
//   embedding_backward_ref                     the same in plain T
//
// A lookup copies data: no rounding, the scale carries over. The backward
// pass adds dy's data rows into a zero table on dy's scale (rows looked up
// several times sum their gradients), then accumulates it into g.dtable with
// nn::accumulate's rule.
#ifndef SCALIFY_NN_EMBEDDING_HPP_
#define SCALIFY_NN_EMBEDDING_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cstdint>     // uint64_t
#include <random>      // std::mt19937_64, std::normal_distribution
#include <span>        // std::span
#include <stdexcept>   // std::out_of_range
#include <string>      // std::string, std::to_string

#include "scalify/errors.hpp"     // shape_error, SCALIFY_CHECK, valid_shape
#include "scalify/nn/tensor.hpp"  // Tensor, Matrix, accumulate, zeros

namespace scalify::nn {

/// The table (V, C).
struct embedding_params {
  Tensor table;
};

/// Its gradient, accumulated by embedding_backward (clear with embedding_zero_grad).
struct embedding_grads {
  Tensor dtable;
};

/// Unit-scaled init: table data ~ N(0, 1) from std::mt19937_64(seed), scale
/// `scale` (1: unit-variance rows). Throws std::invalid_argument unless V, C > 0 and V * C fits.
///
/// **Example**: `embedding_params tok; scalify::nn::embedding_init(tok, 96, 128, 1);`
inline void embedding_init(embedding_params& p, Eigen::Index rows, Eigen::Index channels, uint64_t seed,
                           float scale = 1.0f) {
  SCALIFY_CHECK(rows > 0 && channels > 0 && scalify::detail::valid_shape(rows, channels), std::invalid_argument,
                "scalify::nn::embedding_init: need V, C > 0 and V * C within Eigen::Index, got " +
                    scalify::detail::shape_string(rows, channels));
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix t(rows, channels);
  for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = normal(gen);
  p.table = Tensor(std::move(t), scale);
}

/// g.dtable = zeros of the table's shape (scale 0).
inline void embedding_zero_grad(embedding_grads& g, const embedding_params& p) {
  set_zeros(g.dtable, p.table.rows(), p.table.cols());
}

namespace detail {
/// Throws std::out_of_range naming `where` and the first id outside [0, rows).
inline void check_ids(const char* where, std::span<const int> ids, Eigen::Index rows) {
  for (size_t i = 0; i < ids.size(); ++i) {
    SCALIFY_CHECK(ids[i] >= 0 && ids[i] < rows, std::out_of_range,
                  std::string(where) + ": id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                      " is outside the table's " + std::to_string(rows) + " rows");
  }
}
}  // namespace detail

/// y (N, C) = the table's rows ids[0..N), on the table's scale. Throws
/// std::out_of_range for an id outside the table.
///
/// **Example**: `scalify::nn::embedding_forward(x, tok, tokens);`
inline void embedding_forward(Tensor& y, const embedding_params& p, std::span<const int> ids) {
  detail::check_ids("scalify::nn::embedding_forward", ids, p.table.rows());
  Matrix out(static_cast<Eigen::Index>(ids.size()), p.table.cols());
  for (size_t i = 0; i < ids.size(); ++i) out.row(static_cast<Eigen::Index>(i)) = p.table.data().row(ids[i]);
  y = detail::propagated(std::move(out), p.table.scale());
}

/// g.dtable += the scatter-add of dy's rows (N, C) at ids (see the file
/// comment). Throws shape_error unless dy has ids.size() rows and the
/// table's columns, std::out_of_range for an id outside the table.
///
/// **Example**: `scalify::nn::embedding_backward(tok_grads, dx, tokens);`
inline void embedding_backward(embedding_grads& g, const Tensor& dy, std::span<const int> ids,
                               const embedding_params& p) {
  check_shape("scalify::nn::embedding_backward: dy", dy, static_cast<Eigen::Index>(ids.size()), p.table.cols());
  detail::check_ids("scalify::nn::embedding_backward", ids, p.table.rows());
  Matrix d = Matrix::Zero(p.table.rows(), p.table.cols());
  for (size_t i = 0; i < ids.size(); ++i) d.row(ids[i]) += dy.data().row(static_cast<Eigen::Index>(i));
  if (g.dtable.size() == 0) embedding_zero_grad(g, p);
  accumulate(g.dtable, detail::propagated(std::move(d), dy.scale()));
}

/// Reference backward in plain T: dtable += scatter-add of dy at ids.
template <class T>
void embedding_backward_ref(RefMatrix<T>& dtable, const RefMatrix<T>& dy, std::span<const int> ids) {
  SCALIFY_CHECK(dy.rows() == static_cast<Eigen::Index>(ids.size()) && dy.cols() == dtable.cols(), shape_error,
                "scalify::nn::embedding_backward_ref: dy " + scalify::detail::shape_string(dy.rows(), dy.cols()) +
                    " for " + std::to_string(ids.size()) + " ids and a table of " + std::to_string(dtable.cols()) +
                    " columns");
  detail::check_ids("scalify::nn::embedding_backward_ref", ids, dtable.rows());
  for (size_t i = 0; i < ids.size(); ++i) dtable.row(ids[i]) += dy.row(static_cast<Eigen::Index>(i));
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_EMBEDDING_HPP_
