// Gradient checks of the nn layers (nn/linear.hpp, nn/activations.hpp,
// nn/loss.hpp, nn/layernorm.hpp).
//
// Two steps per layer:
//   1. the float64 reference backward (*_backward_ref<double>) agrees with
//      central finite differences of the float64 reference forward, for the
//      scalar L = sum(R .* f(x)) with a random R (so dy = R);
//   2. the scaled layer agrees with the float64 reference backward: to float32
//      roundoff in fp32, and within a bound derived from the unit roundoff of
//      the operand formats for the float8 matmuls.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "scalify/nn/activations.hpp"
#include "scalify/nn/layernorm.hpp"
#include "scalify/nn/linear.hpp"
#include "scalify/nn/loss.hpp"
#include "support/nn_check.hpp"

namespace nn = scalify::nn;
using scalify_test::MatD;
using scalify_test::random_matrix;
using scalify_test::rel_error;
using scalify_test::to_tensor;
using scalify_test::values;

namespace {

/// max over entries of |analytic - numeric| / (|numeric| + 1e-3), for the
/// gradient of L(x) = sum(R .* f(x)) w.r.t. x, by central differences.
double fd_error(const std::function<double(const MatD&)>& loss, const MatD& x, const MatD& grad, double h = 1e-5) {
  MatD xp = x;
  return scalify_test::fd_worst(xp.data(), xp.size(), 1, h, 1.0, [&] { return loss(xp); }, grad.data(), 1e-3);
}

/// Expected normwise relative error of a product of operands rounded with unit
/// roundoffs ua and ub: rounding errors are ~uniform in [-u, u] (RMS u / sqrt(3))
/// and independent, so the product's relative error is about
/// sqrt(ua^2 + ub^2) / sqrt(3). The tests allow twice that.
double product_tolerance(double ua, double ub) { return 2.0 * std::sqrt(ua * ua + ub * ub) / std::sqrt(3.0); }

constexpr double kE4M3 = 0x1p-4, kE5M2 = 0x1p-3, kF16 = 0x1p-11;

}  // namespace

TEST_CASE("linear: float64 reference backward matches finite differences", "[nn][linear]") {
  const MatD x = random_matrix(5, 7, 1), w = random_matrix(7, 4, 2), b = random_matrix(1, 4, 3), r = random_matrix(5, 4, 4);
  MatD dx, dw = MatD::Zero(7, 4), db = MatD::Zero(1, 4);
  nn::linear_backward_ref<double>(&dx, dw, db, r, x, w);
  auto loss_x = [&](const MatD& xx) { MatD y; nn::linear_forward_ref<double>(y, xx, w, b); return y.cwiseProduct(r).sum(); };
  auto loss_w = [&](const MatD& ww) { MatD y; nn::linear_forward_ref<double>(y, x, ww, b); return y.cwiseProduct(r).sum(); };
  auto loss_b = [&](const MatD& bb) { MatD y; nn::linear_forward_ref<double>(y, x, w, bb); return y.cwiseProduct(r).sum(); };
  CHECK(fd_error(loss_x, x, dx) < 1e-7);
  CHECK(fd_error(loss_w, w, dw) < 1e-7);
  CHECK(fd_error(loss_b, b, db) < 1e-7);
  // Accumulation: a second backward adds the same gradients again.
  MatD dw2 = dw, db2 = db;
  nn::linear_backward_ref<double>(nullptr, dw2, db2, r, x, w);
  CHECK(rel_error(dw2, 2 * dw) < 1e-15);
}

TEST_CASE("linear: scaled forward and backward match the float64 reference", "[nn][linear]") {
  const Eigen::Index B = 32, I = 64, O = 48;
  nn::linear_params p;
  nn::linear_init(p, I, O, 7);
  p.b = to_tensor(random_matrix(1, O, 8, 0.1), 0.125f);
  const MatD x = random_matrix(B, I, 9, 3.0), dy = random_matrix(B, O, 10, 1e-3);
  const MatD w = values(p.w), b = values(p.b);
  MatD y_ref, dx_ref, dw_ref = MatD::Zero(I, O), db_ref = MatD::Zero(1, O);
  nn::linear_forward_ref<double>(y_ref, x, w, b);
  nn::linear_backward_ref<double>(&dx_ref, dw_ref, db_ref, dy, x, w);

  struct Case {
    const char* name;
    nn::linear_config cfg;
    double fwd, grad_in, grad_w;
  };
  nn::linear_config fp8_none = nn::linear_config::fp8();
  fp8_none.grad_rescale = nn::rescale_mode::none;
  const std::vector<Case> cases = {
      {"fp32", nn::linear_config::fp32(), 1e-5, 1e-5, 1e-5},
      {"fp16", nn::linear_config::fp16(), product_tolerance(kF16, kF16), product_tolerance(kF16, kF16),
       product_tolerance(kF16, kF16)},
      {"fp8", nn::linear_config::fp8(), product_tolerance(kE4M3, kE4M3), product_tolerance(kE5M2, kE4M3),
       product_tolerance(kE4M3, kE5M2)},
      {"fp8 no rescale", fp8_none, product_tolerance(kE4M3, kE4M3), product_tolerance(kE5M2, kE4M3),
       product_tolerance(kE4M3, kE5M2)},
  };
  for (const auto& c : cases) {
    SECTION(c.name) {
      nn::Tensor y, dx;
      nn::linear_cache cache;
      nn::linear_grads g;
      nn::linear_zero_grad(g, p);
      nn::linear_forward(y, cache, to_tensor(x, 4.0f), p, c.cfg);
      nn::linear_backward(&dx, g, to_tensor(dy, 1.0f / 1024), cache, p, c.cfg);
      INFO(c.name);
      CHECK(rel_error(values(y), y_ref) < c.fwd);
      CHECK(rel_error(values(dx), dx_ref) < c.grad_in);
      CHECK(rel_error(values(g.dw), dw_ref) < c.grad_w);
      CHECK(rel_error(values(g.db), db_ref) < 1e-5);
      // Unit scaling: the output data stays O(1) while the scales carry the magnitude.
      const double rms = std::sqrt(y.data().squaredNorm() / static_cast<double>(y.size()));
      CHECK(rms > 0.25);
      CHECK(rms < 8.0);
    }
  }
}

TEST_CASE("linear: gradients accumulate and zero_grad clears them", "[nn][linear]") {
  nn::linear_params p;
  nn::linear_init(p, 8, 3, 1);
  nn::linear_grads g;
  nn::linear_zero_grad(g, p);
  nn::linear_cache cache;
  nn::Tensor y, dx;
  const nn::Tensor x = to_tensor(random_matrix(4, 8, 2), 1.0f), dy = to_tensor(random_matrix(4, 3, 3), 0.5f);
  nn::linear_forward(y, cache, x, p, {});
  nn::linear_backward(&dx, g, dy, cache, p, {});
  const MatD once = values(g.dw);
  nn::linear_backward(nullptr, g, dy, cache, p, {});
  CHECK(rel_error(values(g.dw), 2 * once) < 1e-6);
  nn::linear_zero_grad(g, p);
  CHECK(values(g.dw).norm() == 0.0);
}

TEST_CASE("linear: zero_grad clears gradients in their own memory, whatever they held", "[nn][linear]") {
  nn::linear_params p;
  nn::linear_init(p, 8, 3, 1);
  nn::linear_cache cache;
  nn::Tensor y;
  const nn::Tensor x = to_tensor(random_matrix(4, 8, 2), 1.0f), dy = to_tensor(random_matrix(4, 3, 3), 0.5f);
  nn::linear_forward(y, cache, x, p, {});

  nn::linear_grads fresh;  // what a new gradient gets
  nn::linear_backward(nullptr, fresh, dy, cache, p, {});

  nn::linear_grads g;
  nn::linear_zero_grad(g, p);
  nn::linear_backward(nullptr, g, dy, cache, p, {});
  // A bad step's leftovers: NaN and inf data on a large scale.
  g.dw.data()(0, 0) = std::numeric_limits<float>::quiet_NaN();
  g.db.data()(0, 1) = -std::numeric_limits<float>::infinity();
  g.dw.set_scale(8.0f);
  const float* dw_memory = g.dw.data().data();
  nn::linear_zero_grad(g, p);
  CHECK(g.dw.data().data() == dw_memory);
  CHECK(g.dw.scale() == 0.0f);
  CHECK(g.db.scale() == 0.0f);
  CHECK((g.dw.data().array() == 0.0f).all());
  CHECK((g.db.data().array() == 0.0f).all());
  nn::linear_backward(nullptr, g, dy, cache, p, {});
  CHECK(g.dw.scale() == fresh.dw.scale());
  CHECK(g.dw.data() == fresh.dw.data());
  CHECK(g.db.data() == fresh.db.data());

  // Another shape (the parameter was replaced): the gradient takes it.
  nn::linear_params q;
  nn::linear_init(q, 5, 2, 1);
  nn::linear_zero_grad(g, q);
  CHECK((g.dw.rows() == 5 && g.dw.cols() == 2 && g.db.rows() == 1 && g.db.cols() == 2));
  CHECK(values(g.dw).norm() == 0.0);
}

TEST_CASE("linear: shapes are checked", "[nn][linear]") {
  nn::linear_params p;
  nn::linear_init(p, 8, 3, 1);
  nn::linear_cache cache;
  nn::Tensor y;
  CHECK_THROWS_AS(nn::linear_forward(y, cache, to_tensor(random_matrix(4, 7, 1), 1.0f), p, {}), scalify::shape_error);
  nn::linear_forward(y, cache, to_tensor(random_matrix(4, 8, 1), 1.0f), p, {});
  nn::linear_grads g;
  CHECK_THROWS_AS(nn::linear_backward(nullptr, g, to_tensor(random_matrix(4, 2, 1), 1.0f), cache, p, {}),
                  scalify::shape_error);
  CHECK_THROWS_AS(nn::linear_init(p, 0, 3, 1), std::invalid_argument);
  CHECK_THROWS_AS(nn::parse_dtype("fp7"), scalify::format_error);
}

TEST_CASE("linear: unit-scaled init", "[nn][linear]") {
  nn::linear_params p;
  nn::linear_init(p, 784, 512, 3);
  CHECK(p.w.scale() == Approx(1.0 / 28.0));
  const double var = static_cast<double>(p.w.data().squaredNorm()) / static_cast<double>(p.w.size());
  CHECK(var == Approx(1.0).epsilon(0.02));
  CHECK(p.b.data().norm() == 0.0f);
}

TEST_CASE("activations: reference backward matches finite differences", "[nn][activations]") {
  MatD x = random_matrix(6, 5, 11);
  for (Eigen::Index i = 0; i < x.size(); ++i) {  // keep ReLU away from its kink
    if (std::abs(x.data()[i]) < 1e-3) x.data()[i] = 0.5;
  }
  const MatD r = random_matrix(6, 5, 12);
  MatD dx;
  nn::relu_backward_ref<double>(dx, r, x);
  CHECK(fd_error([&](const MatD& xx) { MatD y; nn::relu_forward_ref<double>(y, xx); return y.cwiseProduct(r).sum(); }, x,
                 dx) < 1e-7);
  nn::gelu_backward_ref<double>(dx, r, x);
  CHECK(fd_error([&](const MatD& xx) { MatD y; nn::gelu_forward_ref<double>(y, xx); return y.cwiseProduct(r).sum(); }, x,
                 dx) < 1e-7);
}

TEST_CASE("activations: gelu forward and backward, split across threads, are the formula element by element",
          "[nn][activations][threads]") {
  // gelu_forward and gelu_backward evaluate their results on the scope's
  // threads (nn::detail::kGeluGrain: >= 32 Ki elements per thread), with the
  // path's vector routines. Definition, element by element:
  // y = gelu_tanh_on_scale(x, sx) on x's scale, dx = dy * gelu_tanh_grad(x sx)
  // on dy's scale. 501 x 300 elements: two ranges on 2 threads, the second
  // starting mid-row.
  nn::Matrix x(501, 300), dy(501, 300);
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    x.data()[i] = normal(rng);
    dy.data()[i] = normal(rng);
  }
  x.data()[5000] = std::numeric_limits<float>::infinity();
  x.data()[9000] = -std::numeric_limits<float>::infinity();
  x.data()[13000] = 3e38f;  // x * sx overflows: gelu in double
  x.data()[100000] = -std::numeric_limits<float>::infinity();  // in the second thread's range
  const nn::Tensor xt(x, 2.0f), dyt(dy, 0.125f);
  for (int threads : {1, 2}) {
    const scalify::config_scope scope({.threads = threads});
    nn::Tensor y, dx;
    nn::gelu_forward(y, xt);
    nn::gelu_backward(dx, dyt, xt);
    CHECK(y.scale() == 2.0f);
    CHECK(dx.scale() == 0.125f);
    int y_mismatches = 0, dx_mismatches = 0;
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      const float want_y = scalify::gelu_tanh_on_scale(x.data()[i], 2.0f);
      const float want_dx = dy.data()[i] * scalify::gelu_tanh_grad(x.data()[i] * 2.0f);
      y_mismatches += std::bit_cast<std::uint32_t>(want_y) != std::bit_cast<std::uint32_t>(y.data().data()[i]);
      dx_mismatches += std::bit_cast<std::uint32_t>(want_dx) != std::bit_cast<std::uint32_t>(dx.data().data()[i]);
    }
    INFO(threads << " threads");
    CHECK(y_mismatches == 0);
    CHECK(dx_mismatches == 0);
  }
}

TEST_CASE("activations: relu_backward passes dy's bits where x > 0 and +0 elsewhere, NaN and -0 included",
          "[nn][activations]") {
  // relu_backward is a vectorized Eigen expression (packets of 4, 8 or 16 and
  // a scalar tail). Its definition, element by element: dx = dy if x > 0 (a
  // NaN x is not), else +0, on dy's scale. Odd shapes put special values in
  // packets and in tails.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float denorm = std::numeric_limits<float>::denorm_min();
  const float xs_special[] = {nan, -nan, 0.0f, -0.0f, denorm, -denorm, inf, -inf, 1.0f, -1.0f, 3e38f, -3e-38f};
  const float dys_special[] = {nan, -nan, inf, -inf, 0.0f, -0.0f, denorm, -2.5f, 7.0f, -denorm, 1e-30f};
  std::mt19937 rng(17);
  for (const auto& [rows, cols] : {std::pair<Eigen::Index, Eigen::Index>{37, 23}, {1, 5}, {64, 16}}) {
    nn::Matrix x(rows, cols), dy(rows, cols);
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      x.data()[i] = xs_special[rng() % std::size(xs_special)];
      dy.data()[i] = dys_special[rng() % std::size(dys_special)];
    }
    const nn::Tensor xt(x, 0.5f), dyt(dy, 0.25f);
    nn::Tensor dx;
    nn::relu_backward(dx, dyt, xt);
    REQUIRE(dx.rows() == rows);
    REQUIRE(dx.cols() == cols);
    CHECK(dx.scale() == 0.25f);
    int failures = 0;
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      const float expected = x.data()[i] > 0.0f ? dy.data()[i] : 0.0f;
      const float actual = dx.data().data()[i];
      if (std::bit_cast<std::uint32_t>(expected) != std::bit_cast<std::uint32_t>(actual) && ++failures <= 8) {
        FAIL_CHECK(rows << "x" << cols << " element " << i << ": x " << x.data()[i] << ", dy " << dy.data()[i]
                        << ", expected " << expected << ", got " << actual);
      }
    }
    CHECK(failures == 0);
  }
}

TEST_CASE("activations: scaled layers match the reference", "[nn][activations]") {
  const MatD x = random_matrix(16, 9, 13, 2.0), dy = random_matrix(16, 9, 14, 1e-2);
  const nn::Tensor xs = to_tensor(x, 0.5f), dys = to_tensor(dy, 1.0f / 64);
  MatD y_ref, dx_ref;
  nn::Tensor y, dx;
  nn::relu_forward(y, xs);
  nn::relu_backward(dx, dys, xs);
  nn::relu_forward_ref<double>(y_ref, values(xs));
  nn::relu_backward_ref<double>(dx_ref, values(dys), values(xs));
  CHECK(rel_error(values(y), y_ref) < 1e-6);
  CHECK(rel_error(values(dx), dx_ref) < 1e-6);
  CHECK(y.scale() == xs.scale());
  nn::gelu_forward(y, xs);
  nn::gelu_backward(dx, dys, xs);
  nn::gelu_forward_ref<double>(y_ref, values(xs));
  nn::gelu_backward_ref<double>(dx_ref, values(dys), values(xs));
  CHECK(rel_error(values(y), y_ref) < 1e-6);
  CHECK(rel_error(values(dx), dx_ref) < 1e-6);
  CHECK_THROWS_AS(nn::relu_backward(dx, to_tensor(random_matrix(2, 2, 1), 1.0f), xs), scalify::shape_error);
  CHECK_THROWS_AS(nn::gelu_backward(dx, to_tensor(random_matrix(2, 2, 1), 1.0f), xs), scalify::shape_error);
  CHECK_THROWS_AS(nn::gelu_backward_ref<double>(dx_ref, random_matrix(2, 2, 1), x), scalify::shape_error);
}

TEST_CASE("softmax cross-entropy: gradient, stability and label checks", "[nn][loss]") {
  const MatD logits = random_matrix(8, 10, 21, 3.0);
  const std::vector<int> labels = {0, 3, 9, 2, 2, 5, 7, 1};
  MatD grad;
  const double loss = nn::softmax_cross_entropy_ref<double>(&grad, logits, labels);
  CHECK(fd_error([&](const MatD& l) { return nn::softmax_cross_entropy_ref<double>(nullptr, l, labels); }, logits,
                 grad) < 1e-6);
  nn::Tensor dlogits;
  const float loss32 = nn::softmax_cross_entropy(&dlogits, to_tensor(logits, 2.0f), labels);
  CHECK(loss32 == Approx(loss).epsilon(1e-5));
  CHECK(rel_error(values(dlogits), grad) < 1e-5);
  // dynamic_rescale_l1: mean |data| in [1, 2).
  const double l1 = dlogits.data().cwiseAbs().mean();
  CHECK(l1 >= 1.0);
  CHECK(l1 < 2.0);
  // Huge logits: max subtraction keeps it finite (exp(1000) overflows float).
  const MatD big = logits.array() + 1000.0;
  const float loss_big = nn::softmax_cross_entropy(nullptr, to_tensor(big, 1.0f), labels);
  CHECK(std::isfinite(loss_big));
  CHECK(loss_big == Approx(loss).epsilon(1e-3));
  CHECK_THROWS_AS(nn::softmax_cross_entropy(nullptr, to_tensor(logits, 1.0f), std::vector<int>{1, 2}),
                  scalify::shape_error);
  std::vector<int> bad = labels;
  bad[3] = 10;
  CHECK_THROWS_AS(nn::softmax_cross_entropy(nullptr, to_tensor(logits, 1.0f), bad), std::invalid_argument);
}

TEST_CASE("layernorm: reference backward matches finite differences, scaled layer matches it", "[nn][layernorm]") {
  const Eigen::Index B = 6, C = 12;
  const MatD x = random_matrix(B, C, 31, 2.0), gamma = random_matrix(1, C, 32), beta = random_matrix(1, C, 33),
             r = random_matrix(B, C, 34);
  MatD y, xhat, dx, dgamma = MatD::Zero(1, C), dbeta = MatD::Zero(1, C);
  Eigen::VectorXd rstd;
  nn::layernorm_forward_ref<double>(y, xhat, rstd, x, gamma, beta);
  nn::layernorm_backward_ref<double>(dx, dgamma, dbeta, r, xhat, rstd, gamma);
  auto fwd = [&](const MatD& xx, const MatD& gg, const MatD& bb) {
    MatD yy, xh;
    Eigen::VectorXd rs;
    nn::layernorm_forward_ref<double>(yy, xh, rs, xx, gg, bb);
    return yy.cwiseProduct(r).sum();
  };
  CHECK(fd_error([&](const MatD& v) { return fwd(v, gamma, beta); }, x, dx) < 1e-6);
  CHECK(fd_error([&](const MatD& v) { return fwd(x, v, beta); }, gamma, dgamma) < 1e-6);
  CHECK(fd_error([&](const MatD& v) { return fwd(x, gamma, v); }, beta, dbeta) < 1e-6);

  nn::layernorm_params p{to_tensor(gamma, 1.0f), to_tensor(beta, 0.5f)};
  nn::layernorm_cache cache;
  nn::layernorm_grads g;
  nn::Tensor ys, dxs;
  nn::layernorm_forward(ys, cache, to_tensor(x, 8.0f), p);
  nn::layernorm_backward(dxs, g, to_tensor(r, 1.0f / 16), cache, p);
  CHECK(rel_error(values(ys), y) < 1e-5);
  CHECK(rel_error(values(dxs), dx) < 1e-4);
  CHECK(rel_error(values(g.dgamma), dgamma) < 1e-5);
  CHECK(rel_error(values(g.dbeta), dbeta) < 1e-5);
  CHECK_THROWS_AS(nn::layernorm_forward(ys, cache, to_tensor(random_matrix(2, 5, 1), 1.0f), p), scalify::shape_error);
  CHECK_THROWS_AS(nn::layernorm_backward(dxs, g, to_tensor(random_matrix(B, C + 1, 1), 1.0f), cache, p),
                  scalify::shape_error);
  CHECK_THROWS_AS(nn::layernorm_forward_ref<double>(y, xhat, rstd, x, random_matrix(1, C + 1, 1), beta),
                  scalify::shape_error);
}

// ---------------------------------------------------------------------------
// Bad input (issue 16): enum values outside their enum, and sizes.

namespace {

/// Runs f and requires std::invalid_argument (or a subclass) whose message contains every part.
void require_invalid(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    for (const std::string& part : parts) CHECK_THAT(message, Catch::Matchers::Contains(part));
    return;
  }
  FAIL("no std::invalid_argument thrown");
}

}  // namespace

TEST_CASE("nn: dtype and rescale_mode values outside their enums throw", "[nn][tensor][errors]") {
  const nn::Tensor x = to_tensor(random_matrix(2, 3, 5), 0.5f);
  const auto bad = static_cast<nn::dtype>(99);
  // The reproducer returned x unchanged without an error.
  require_invalid([&] { (void)nn::cast_to(x, bad); }, {"scalify::nn::cast_to", "dtype 99"});
  require_invalid([&] { (void)nn::cast_to(x, static_cast<nn::dtype>(-1)); }, {"dtype -1"});
  require_invalid([&] { (void)nn::round_to(x, bad); }, {"dtype 99"});
  require_invalid([&] { (void)nn::dtype_name(bad); }, {"scalify::nn::dtype_name", "99"});
  require_invalid([&] { (void)nn::rescale(x, static_cast<nn::rescale_mode>(4)); },
                  {"scalify::nn::rescale", "rescale_mode 4"});
  require_invalid([&] { (void)nn::cast_to(x, nn::dtype::e4m3fn, {.round = static_cast<scalify::rounding>(7)}); },
                  {"scalify::nn::cast_to", "rounding 7"});
  // The valid values still work (e5m2 keeps the scale, rounds the data).
  const auto y = std::get<scalify::ScaledMatrix<scalify::float8_e5m2>>(nn::cast_to(x, nn::dtype::e5m2));
  CHECK(y.scale() == 0.5f);
  CHECK(std::string(nn::dtype_name(nn::dtype::bfloat16)) == "bf16");
}

TEST_CASE("linear: configurations with values outside the enums throw, naming the field", "[nn][linear][errors]") {
  nn::linear_params p;
  nn::linear_init(p, 4, 3, 1);
  const nn::Tensor x = to_tensor(random_matrix(2, 4, 6), 1.0f);
  nn::linear_cache cache;
  nn::Tensor y;
  nn::linear_config cfg = nn::linear_config::fp8();
  cfg.grad_weight.rhs = static_cast<nn::dtype>(12);
  require_invalid([&] { nn::linear_forward(y, cache, x, p, cfg); },
                  {"scalify::nn::linear_forward", "grad_weight.rhs", "dtype 12"});
  cfg = nn::linear_config::fp8();
  cfg.grad_rescale = static_cast<nn::rescale_mode>(9);
  nn::linear_forward(y, cache, x, p, nn::linear_config::fp8());
  nn::linear_grads g;
  require_invalid([&] { nn::linear_backward(nullptr, g, y, cache, p, cfg); },
                  {"scalify::nn::linear_backward", "grad_rescale", "rescale_mode 9"});
}

TEST_CASE("linear: the cache keeps x only for a backward pass that casts it again", "[nn][linear][errors]") {
  nn::linear_params p;
  nn::linear_init(p, 4, 3, 1);
  const nn::Tensor x = to_tensor(random_matrix(5, 4, 6), 1.0f), dy = to_tensor(random_matrix(5, 3, 7), 1.0f);
  nn::linear_cache cache;
  nn::Tensor y, dx;
  nn::linear_grads g;
  // fp8: dW = x^T dy reads the forward pass's e4m3fn x: no float copy kept.
  nn::linear_forward(y, cache, x, p, nn::linear_config::fp8());
  CHECK(cache.x.size() == 0);
  nn::linear_config other = nn::linear_config::fp8();
  other.grad_weight.lhs = nn::dtype::float16;
  CHECK_THROWS_WITH(nn::linear_backward(&dx, g, dy, cache, p, other),
                    Catch::Contains("scalify::nn::linear_backward") && Catch::Contains("grad_weight.lhs"));
  CHECK(g.dw.size() == 0);  // nothing accumulated
  // With that config from the start, x is kept (as rebased) and the backward pass runs.
  nn::linear_forward(y, cache, x, p, other);
  CHECK(cache.x.data() == x.data());
  CHECK(cache.x.scale() == x.scale());
  nn::linear_backward(&dx, g, dy, cache, p, other);
  CHECK(g.dw.rows() == 4);
}

TEST_CASE("linear: a backward pass whose dx is its dy gives what a separate dx gets", "[nn][linear]") {
  // dy is read in place when it is not rebased (fp32, fp16): dx's store must not overwrite it first.
  nn::linear_params p;
  nn::linear_init(p, 4, 4, 2);
  const nn::Tensor x = to_tensor(random_matrix(6, 4, 8), 1.0f), dy = to_tensor(random_matrix(6, 4, 9), 0.5f);
  for (const nn::linear_config& cfg : {nn::linear_config::fp32(), nn::linear_config::fp16(), nn::linear_config::fp8()}) {
    nn::linear_cache cache;
    nn::Tensor y, dx;
    nn::linear_forward(y, cache, x, p, cfg);
    nn::linear_grads separate, same;
    nn::linear_backward(&dx, separate, dy, cache, p, cfg);
    nn::Tensor d = dy;
    nn::linear_backward(&d, same, d, cache, p, cfg);
    CHECK(d.data() == dx.data());
    CHECK(d.scale() == dx.scale());
    CHECK(same.dw.data() == separate.dw.data());
    CHECK(same.dw.scale() == separate.dw.scale());
    CHECK(same.db.data() == separate.db.data());
  }
}

TEST_CASE("nn: sizes that are negative or overflow throw", "[nn][linear][layernorm][errors]") {
  const Eigen::Index max = std::numeric_limits<Eigen::Index>::max();
  nn::linear_params p;
  require_invalid([&] { nn::linear_init(p, -3, 4, 1); }, {"scalify::nn::linear_init", "-3 x 4"});
  require_invalid([&] { nn::linear_init(p, 4, -1, 1); }, {"4 x -1"});
  // I * O or its bytes overflow Eigen::Index: an error before any allocation.
  require_invalid([&] { nn::linear_init(p, Eigen::Index{1} << 32, Eigen::Index{1} << 32, 1); },
                  {"scalify::nn::linear_init", "4294967296 x 4294967296"});
  require_invalid([&] { nn::linear_init(p, max, 1, 1); }, {"9223372036854775807 x 1"});
  nn::layernorm_params lp;
  require_invalid([&] { nn::layernorm_init(lp, 0); }, {"scalify::nn::layernorm_init", "got 0"});
  require_invalid([&] { nn::layernorm_init(lp, -5); }, {"got -5"});
  require_invalid([&] { nn::layernorm_init(lp, max); }, {"9223372036854775807"});
  require_invalid([&] { (void)nn::zeros(-1, 3); }, {"scalify::nn::zeros", "(-1 x 3)"});
  require_invalid([&] { (void)nn::zeros(max, 2); }, {"scalify::nn::zeros", "(9223372036854775807 x 2)"});
  CHECK_THROWS_AS(nn::zeros(3, -2), scalify::shape_error);
  const nn::Tensor z = nn::zeros(0, 5);  // empty is fine
  CHECK(z.cols() == 5);
  CHECK(z.scale() == 0.0f);
}

TEST_CASE("activations: gelu of values far out and beyond float's range has no NaN", "[nn][activations]") {
  // Plain float values far in the tails: x^3 and x^2 overflow float, tanh is exactly +-1.
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(scalify::gelu_tanh_grad(1e20f) == 1.0f);  // was 0 * inf = NaN
  CHECK(scalify::gelu_tanh_grad(-1e20f) == 0.0f);
  CHECK(scalify::gelu_tanh_grad(inf) == 1.0f);
  CHECK(scalify::gelu_tanh(-inf) == 0.0f);  // was -inf * 0 = NaN
  CHECK(scalify::gelu_tanh(inf) == inf);
  CHECK(std::isnan(scalify::gelu_tanh(std::nanf(""))));
  // Near the switch the guard agrees with the formula in double.
  for (float x : {4.0f, 5.0f, 6.0f, -4.0f, -6.0f, 1e10f, -1e10f}) {
    INFO("x = " << x);
    CHECK(scalify::gelu_tanh_grad(x) == Approx(scalify::gelu_tanh_grad(static_cast<double>(x))).margin(1e-6));
    CHECK(scalify::gelu_tanh(x) == Approx(scalify::gelu_tanh(static_cast<double>(x))).margin(1e-6));
  }
  // Scaled: data 3, -3, 1e-3 on scale 2^127 are values beyond float's range.
  MatD d(1, 3);
  d << 3.0, -3.0, 1e-3;
  const nn::Tensor x(nn::Matrix(d.cast<float>()), 0x1p127f);
  const nn::Tensor dy(nn::Matrix::Ones(1, 3), 1.0f);
  nn::Tensor y, dx;
  nn::gelu_forward(y, x);
  nn::gelu_backward(dx, dy, x);
  MatD y_ref, dx_ref;
  nn::gelu_forward_ref<double>(y_ref, values(x));
  nn::gelu_backward_ref<double>(dx_ref, values(dy), values(x));
  for (int j = 0; j < 3; ++j) {
    INFO("j = " << j);
    CHECK(std::isfinite(y.data()(0, j)));
    CHECK(values(y)(0, j) == Approx(y_ref(0, j)).epsilon(1e-6));
    CHECK(values(dx)(0, j) == dx_ref(0, j));
  }
}

// ---------------------------------------------------------------------------
// Review of 852b279: numerics of the loss and LayerNorm far from 0, aliasing, naive casts, empty batches.

TEST_CASE("softmax cross-entropy: a large max absorbs neither the log-sum nor 1 - p", "[nn][loss]") {
  // loss = (m - l[label]) + log(sum): computed as (log(sum) + m) - l[label], the log-sum (0.0067) was
  // rounded into m = 1e5 (to 0.0078) or lost at 1e6.
  for (const float big : {1e3f, 1e5f, 1e6f, 1e7f}) {
    nn::Matrix l(1, 2);
    l << big, big - 5.0f;
    const std::vector<int> label = {0};
    const MatD ld = l.cast<double>();
    const double want = nn::softmax_cross_entropy_ref<double>(nullptr, ld, label);
    INFO("logits [" << big << ", " << big - 5.0f << "]");
    CHECK(nn::softmax_cross_entropy(nullptr, nn::Tensor(l, 1.0f), label) == Approx(want).epsilon(1e-6));
  }
  // The label's gradient p - 1 with p = 1 - 2.06e-9: float's p is 1, so p - 1 gave 0; the row's other entry
  // keeps 2.06e-9 (and the row summed to 2.06e-9, not 0).
  const MatD l = (MatD(2, 3) << 20.0, 0.0, -1.0, 1.0, 25.0, 3.0).finished();
  const std::vector<int> labels = {0, 1};
  MatD want;
  nn::softmax_cross_entropy_ref<double>(&want, l, labels);
  nn::Tensor d;
  nn::softmax_cross_entropy(&d, to_tensor(l, 1.0f), labels, nn::rescale_mode::none);
  for (Eigen::Index i = 0; i < l.size(); ++i) {
    INFO("entry " << i);
    CHECK(values(d).data()[i] == Approx(want.data()[i]).epsilon(1e-5));
  }
}

TEST_CASE("softmax cross-entropy: logits whose values overflow float, from their data", "[nn][loss]") {
  // Values data * scale: 2^128 and 2^126 overflow float (the loss was NaN); l - m = (d - max d) * s does not.
  nn::Matrix data(2, 3);
  data << 4.0f, 1.0f, 2.0f, 2.0f, 2.0f, 0.5f;
  const float s = 0x1p126f;
  nn::Tensor d;
  // Row 0, label 0: the max, loss log(1 + 2 exp(-2^126..)) = 0; row 1, label 2: (2 - 0.5) 2^126 + log 2.
  const float loss = nn::softmax_cross_entropy(&d, nn::Tensor(data, s), std::vector<int>{0, 2});
  CHECK(loss == Approx((1.5 * 0x1p126 + std::log(2.0)) / 2).epsilon(1e-6));
  const MatD g = values(d);
  CHECK(g.allFinite());
  CHECK(g(0, 0) == 0.0);  // -(exp(-3 * 2^126) + exp(-2 * 2^126)) / 1
  CHECK(g(1, 0) == Approx(0.25));
  CHECK(g(1, 1) == Approx(0.25));
  CHECK(g(1, 2) == Approx(-0.5));
  // The reviewer's case: values [4e38, 2e38].
  nn::Matrix two(1, 2);
  two << 2.0f, 1.0f;
  CHECK(nn::softmax_cross_entropy(nullptr, nn::Tensor(two, 2e38f), std::vector<int>{0}) == 0.0f);
}

namespace {

/// max over entries of |y - y_ref| / (6u (|xhat_ref gamma| + |beta|)), u = 2^-24: LayerNorm's documented bound
/// is 1; y_ref in double from the same float data, scale, gamma and beta.
double layernorm_bound_ratio(const nn::Matrix& data, float scale, const nn::layernorm_params& p) {
  nn::layernorm_cache cache;
  nn::Tensor y;
  nn::layernorm_forward(y, cache, nn::Tensor(data, scale), p);
  const MatD x = data.cast<double>() * static_cast<double>(scale), gamma = values(p.gamma), beta = values(p.beta);
  MatD y_ref, xhat;
  Eigen::VectorXd rstd;
  nn::layernorm_forward_ref<double>(y_ref, xhat, rstd, x, gamma, beta);
  const MatD bound = 6 * 0x1p-24 * ((xhat.array().rowwise() * gamma.row(0).array()).abs().rowwise() +
                                    beta.row(0).array().abs());
  return ((values(y) - y_ref).array().abs() / bound.array()).maxCoeff();
}

}  // namespace

TEST_CASE("layernorm: from the data, within 6u of float64 for constant rows, large means and any scale",
          "[nn][layernorm]") {
  const Eigen::Index C = 768;
  nn::layernorm_params p{to_tensor(random_matrix(1, C, 41), 1.0f), to_tensor(random_matrix(1, C, 42), 0.5f)};
  // A constant row: xhat = 0 and y = beta exactly (the float mean of 1000.1 was off by 6e-5, times
  // 1 / sqrt(eps): y off by 0.28).
  for (const float c : {0.1f, 3.3f, 1000.1f, -7e5f}) {
    nn::layernorm_cache cache;
    nn::Tensor y;
    nn::layernorm_forward(y, cache, nn::Tensor(nn::Matrix::Constant(2, C, c), 1.0f), p);
    INFO("constant " << c);
    CHECK((values(y).rowwise() - values(p.beta).row(0)).cwiseAbs().maxCoeff() == 0.0);
  }
  // Rows with means of 0 to 1e4 sigma, on scales from 2^-60 to 2^100 (var(data * 2^64) overflowed float:
  // rstd 0, y = beta).
  nn::Matrix data = random_matrix(4, C, 43).cast<float>();
  for (Eigen::Index b = 1; b < 4; ++b) data.row(b).array() += std::pow(10.0f, static_cast<float>(b + 1));
  for (const int e : {-60, -10, 0, 3, 64, 100}) {
    INFO("scale 2^" << e);
    CHECK(layernorm_bound_ratio(data, std::ldexp(1.0f, e), p) <= 1.0);
  }
  // A zero scale: every value is 0, y = beta; an infinite one: y NaN.
  CHECK(layernorm_bound_ratio(data, 0.0f, p) <= 1.0);
  nn::layernorm_cache cache;
  nn::Tensor y;
  nn::layernorm_forward(y, cache, nn::Tensor(scalify::detail::unchecked_scale, data, INFINITY), p);
  CHECK(y.data().array().isNaN().all());
}

TEST_CASE("layernorm: a backward pass whose dx is its dy gives what a separate dx gets", "[nn][layernorm]") {
  // dgamma and dbeta read dy: dx's store must come after them.
  nn::layernorm_params p{to_tensor(random_matrix(1, 6, 51), 1.0f), to_tensor(random_matrix(1, 6, 52), 1.0f)};
  nn::layernorm_cache cache;
  nn::Tensor y;
  nn::layernorm_forward(y, cache, to_tensor(random_matrix(5, 6, 53), 2.0f), p);
  const nn::Tensor dy = to_tensor(random_matrix(5, 6, 54), 0.25f);
  nn::layernorm_grads separate, same;
  nn::Tensor dx;
  nn::layernorm_backward(dx, separate, dy, cache, p);
  nn::Tensor d = dy;
  nn::layernorm_backward(d, same, d, cache, p);
  CHECK(d.data() == dx.data());
  CHECK(d.scale() == dx.scale());
  CHECK(same.dgamma.data() == separate.dgamma.data());
  CHECK(same.dgamma.scale() == separate.dgamma.scale());
  CHECK(same.dbeta.data() == separate.dbeta.data());
  CHECK(same.dbeta.scale() == separate.dbeta.scale());
}

TEST_CASE("linear: naive mode casts W's values for dx whichever format the forward pass used", "[nn][linear]") {
  // grad_input.rhs == forward.rhs reads the forward's cast of unscaled(W); another forward.rhs casts W
  // again, and must cast the same values on scale 1 (it cast W's data, on W's scale).
  const Eigen::Index B = 8, I = 256, O = 16;
  nn::linear_params p;
  nn::linear_init(p, I, O, 61);  // values ~N(0, 1/256): many below e4m3fn's smallest normal, 2^-6
  nn::linear_config shared = nn::linear_config::fp8();
  shared.scaled = false;
  shared.grad_rescale = nn::rescale_mode::none;
  nn::linear_config recast = shared;
  recast.forward.rhs = nn::dtype::float16;
  const nn::Tensor x = to_tensor(random_matrix(B, I, 62), 1.0f), dy = to_tensor(random_matrix(B, O, 63), 1.0f);
  nn::Tensor dx_shared, dx_recast, y;
  nn::linear_cache c1, c2;
  nn::linear_grads g1, g2;
  nn::linear_forward(y, c1, x, p, shared);
  nn::linear_backward(&dx_shared, g1, dy, c1, p, shared);
  nn::linear_forward(y, c2, x, p, recast);
  nn::linear_backward(&dx_recast, g2, dy, c2, p, recast);
  CHECK(dx_recast.scale() == dx_shared.scale());
  CHECK(dx_recast.data() == dx_shared.data());
  // W's values 2^-12 round to 0 in e4m3fn (smallest subnormal 2^-9): naive dx is 0.
  p.w = nn::Tensor(nn::Matrix::Ones(I, O), 0x1p-12f);
  nn::linear_forward(y, c2, x, p, recast);
  nn::linear_backward(&dx_recast, g2, dy, c2, p, recast);
  CHECK(values(dx_recast).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("nn: an empty batch throws in linear, layernorm and the loss, naming the function",
          "[nn][linear][layernorm][loss][errors]") {
  const auto require_shape_error = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
    } catch (const scalify::shape_error& e) {
      CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(part));
      return;
    }
    FAIL("no shape_error from " << part);
  };
  nn::linear_params lp;
  nn::linear_init(lp, 4, 3, 1);
  nn::linear_cache lc;
  nn::linear_grads lg;
  nn::linear_zero_grad(lg, lp);
  nn::Tensor y, dx;
  require_shape_error([&] { nn::linear_forward(y, lc, nn::Tensor(nn::Matrix(0, 4), 1.0f), lp,
                                               nn::linear_config::fp8()); },
                      "scalify::nn::linear_forward: x: got (0 x 4), an empty batch");
  // Before any forward pass, the cache has 0 rows: dy (0 x 3) "fits" it, and changed dw's scale.
  require_shape_error([&] { nn::linear_backward(&dx, lg, nn::Tensor(nn::Matrix(0, 3), 1.0f), lc, lp,
                                                nn::linear_config::fp8()); },
                      "scalify::nn::linear_backward: dy: got (0 x 3), an empty batch");
  CHECK(lg.dw.scale() == 0.0f);
  CHECK(lg.db.scale() == 0.0f);
  nn::layernorm_params p;
  nn::layernorm_init(p, 4);
  nn::layernorm_cache c;
  nn::layernorm_grads g;
  require_shape_error([&] { nn::layernorm_forward(y, c, nn::Tensor(nn::Matrix(0, 4), 1.0f), p); },
                      "scalify::nn::layernorm_forward: got (0 x 4), an empty batch");
  c.xhat.resize(0, 4);
  require_shape_error([&] { nn::layernorm_backward(dx, g, nn::Tensor(nn::Matrix(0, 4), 1.0f), c, p); },
                      "scalify::nn::layernorm_backward: got (0 x 4), an empty batch");
  CHECK(g.dgamma.size() == 0);
  require_shape_error([&] { nn::softmax_cross_entropy(nullptr, nn::Tensor(nn::Matrix(0, 4), 1.0f), {}); },
                      "scalify::nn::softmax_cross_entropy: 0 labels for 0 rows");
}
