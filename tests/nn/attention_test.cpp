// Multi-head causal self-attention (nn/attention.hpp):
//   1. the float64 reference backward agrees with central finite differences
//      of the float64 reference forward (L = sum(R .* o));
//   2. the scaled layer agrees with the reference in fp32, fp16 and fp8;
//   3. causality: a future token changes no earlier output, and a loss on
//      early outputs has no gradient on later tokens;
//   4. the causal softmax and its backward; errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>

#include "scalify/nn/attention.hpp"
#include "support/nn_check.hpp"

namespace nn = scalify::nn;

using scalify_test::MatD;
using scalify_test::random_matrix;
using scalify_test::rel_error;
using scalify_test::to_tensor;
using scalify_test::values;

TEST_CASE("attention: float64 reference backward matches finite differences", "[nn][attention]") {
  const Eigen::Index B = 2, T = 4, H = 2, d = 3, C = H * d;
  const MatD qkv = random_matrix(B * T, 3 * C, 1), r = random_matrix(B * T, C, 2);
  MatD o, p, dqkv;
  nn::attention_forward_ref<double>(o, p, qkv, B, H);
  nn::attention_backward_ref<double>(dqkv, r, qkv, p, B, H);
  MatD xp = qkv;
  const auto loss = [&] {
    MatD oo, pp;
    nn::attention_forward_ref<double>(oo, pp, xp, B, H);
    return oo.cwiseProduct(r).sum();
  };
  CHECK(scalify_test::fd_worst(xp.data(), xp.size(), 1, 1e-6, 1.0, loss, dqkv.data(), 1e-3) < 1e-6);
  // Each row of p is a causal distribution.
  for (Eigen::Index row = 0; row < p.rows(); ++row) {
    const Eigen::Index t = row % T;
    CHECK(std::abs(p.row(row).head(t + 1).sum() - 1.0) < 1e-12);
    CHECK(p.row(row).tail(T - t - 1).cwiseAbs().sum() == 0.0);
  }
}

TEST_CASE("attention: scaled forward and backward match the float64 reference", "[nn][attention]") {
  const Eigen::Index B = 3, T = 16, H = 4, d = 16, C = H * d;
  // Values of size 3 on a non-unit scale; an output gradient of size 1e-3.
  const MatD qkv = random_matrix(B * T, 3 * C, 3, 0.5), dout = random_matrix(B * T, C, 4, 1e-3);
  MatD o_ref, p_ref, dqkv_ref;
  nn::attention_forward_ref<double>(o_ref, p_ref, qkv, B, H);
  nn::attention_backward_ref<double>(dqkv_ref, dout, qkv, p_ref, B, H);
  struct Case {
    const char* name;
    nn::attention_config cfg;
    double fwd, bwd;
  };
  // fp16: a few roundings of 2^-11 each; fp8: e4m3fn operands (2^-4) in the
  // forward pass, e5m2 gradients (2^-3) in the backward one, through softmax.
  const Case cases[] = {{"fp32", nn::attention_config::fp32(), 1e-5, 1e-5},
                        {"fp16", nn::attention_config::fp16(), 2e-3, 2e-3},
                        {"fp8", nn::attention_config::fp8(), 0.1, 0.25}};
  for (const auto& c : cases) {
    SECTION(c.name) {
      nn::Tensor o, dqkv;
      nn::attention_cache cache;
      nn::attention_forward(o, cache, to_tensor(qkv, 0.25f), B, H, c.cfg);
      nn::attention_backward(dqkv, to_tensor(dout, 1.0f / 1024), cache, c.cfg);
      INFO(c.name << ": forward " << rel_error(values(o), o_ref) << ", backward "
                  << rel_error(values(dqkv), dqkv_ref));
      CHECK(rel_error(values(cache.p), p_ref) < c.fwd);
      CHECK(rel_error(values(o), o_ref) < c.fwd);
      CHECK(rel_error(values(dqkv), dqkv_ref) < c.bwd);
      // Each third of dqkv separately (a wrong half would hide in the norm of the whole).
      for (int part = 0; part < 3; ++part) {
        INFO("part " << part);
        CHECK(rel_error(values(dqkv).middleCols(part * C, C), dqkv_ref.middleCols(part * C, C)) < c.bwd);
      }
      // Unit scaling: the output data stays O(1), the scale carries the magnitude.
      const double rms = std::sqrt(o.data().cast<double>().squaredNorm() / static_cast<double>(o.size()));
      CHECK(rms > 0.05);
      CHECK(rms < 16.0);
    }
  }
}

TEST_CASE("attention: naive fp8 runs on scale 1 and is further from the reference than scaled fp8",
          "[nn][attention]") {
  const Eigen::Index B = 2, T = 8, H = 2, d = 8, C = H * d;
  // Small values: the naive casts lose them in e4m3fn's subnormals, the scaled ones do not.
  const MatD qkv = random_matrix(B * T, 3 * C, 5, 2e-3), dout = random_matrix(B * T, C, 6, 1e-4);
  MatD o_ref, p_ref, dqkv_ref;
  nn::attention_forward_ref<double>(o_ref, p_ref, qkv, B, H);
  nn::attention_backward_ref<double>(dqkv_ref, dout, qkv, p_ref, B, H);
  double err[2];
  for (int naive = 0; naive < 2; ++naive) {
    const auto cfg = naive ? nn::attention_config::fp8_naive() : nn::attention_config::fp8();
    nn::Tensor o, dqkv;
    nn::attention_cache cache;
    nn::attention_forward(o, cache, to_tensor(qkv, 1.0f / 256), B, H, cfg);
    nn::attention_backward(dqkv, to_tensor(dout, 1.0f / 4096), cache, cfg);
    if (naive) {
      CHECK(o.scale() == 1.0f);
      CHECK(dqkv.scale() == 1.0f);
    }
    // The worst of dQ, dK, dV: dQ and dK, products of two small gradients, underflow without scales.
    err[naive] = 0.0;
    for (int part = 0; part < 3; ++part) {
      err[naive] = std::max(err[naive], rel_error(values(dqkv).middleCols(part * C, C), dqkv_ref.middleCols(part * C, C)));
    }
  }
  INFO("worst part: scaled " << err[0] << ", naive " << err[1]);
  CHECK(err[0] < 0.25);
  CHECK(err[1] > 0.5);
}

TEST_CASE("attention: causal - a future token changes no earlier output and gets no gradient from it",
          "[nn][attention]") {
  const Eigen::Index B = 2, T = 10, H = 2, d = 4, C = H * d, t0 = 6;
  for (const auto& cfg : {nn::attention_config::fp32(), nn::attention_config::fp8()}) {
    MatD qkv = random_matrix(B * T, 3 * C, 7);
    nn::Tensor o1, o2;
    nn::attention_cache c1, c2;
    nn::attention_forward(o1, c1, to_tensor(qkv, 1.0f), B, H, cfg);
    // Change every token after t0 in both sequences (Q, K and V).
    for (Eigen::Index b = 0; b < B; ++b) qkv.middleRows(b * T + t0 + 1, T - t0 - 1) *= -3.0;
    nn::attention_forward(o2, c2, to_tensor(qkv, 1.0f), B, H, cfg);
    for (Eigen::Index b = 0; b < B; ++b) {
      CHECK(values(o1).middleRows(b * T, t0 + 1) == values(o2).middleRows(b * T, t0 + 1));
    }
    // A loss on positions <= t0 only: no gradient reaches the later tokens.
    MatD r = random_matrix(B * T, C, 8);
    for (Eigen::Index b = 0; b < B; ++b) r.middleRows(b * T + t0 + 1, T - t0 - 1).setZero();
    nn::Tensor dqkv;
    nn::attention_backward(dqkv, to_tensor(r, 1.0f), c2, cfg);
    for (Eigen::Index b = 0; b < B; ++b) {
      CHECK(dqkv.data().middleRows(b * T + t0 + 1, T - t0 - 1).isZero(0.0f));
      CHECK(!dqkv.data().middleRows(b * T, t0 + 1).isZero(0.0f));
    }
  }
}

TEST_CASE("attention: causal softmax and its backward, shapes and configs checked", "[nn][attention][errors]") {
  const Eigen::Index T = 5;
  const MatD s = random_matrix(2 * T, T, 9, 4.0);
  const nn::Tensor p = nn::causal_softmax(to_tensor(s, 2.0f), T);
  CHECK(p.scale() == 1.0f);
  for (Eigen::Index r = 0; r < s.rows(); ++r) {
    const Eigen::Index t = r % T;
    double sum = 0.0, m = s.row(r).head(t + 1).maxCoeff();
    for (Eigen::Index j = 0; j <= t; ++j) sum += std::exp(s(r, j) - m);
    for (Eigen::Index j = 0; j < T; ++j) {
      const double want = j <= t ? std::exp(s(r, j) - m) / sum : 0.0;
      CHECK(std::abs(static_cast<double>(p.data()(r, j)) - want) < 1e-6);
    }
  }
  // Backward: the Jacobian-vector product of softmax, row by row, in double.
  const MatD dp = random_matrix(2 * T, T, 10);
  const nn::Tensor ds = nn::causal_softmax_backward(to_tensor(dp, 0.5f), p);
  CHECK(ds.scale() == 0.5f);
  const MatD pv = values(p);
  for (Eigen::Index r = 0; r < s.rows(); ++r) {
    const double dot = dp.row(r).dot(pv.row(r));
    for (Eigen::Index j = 0; j < T; ++j) {
      CHECK(std::abs(values(ds)(r, j) - pv(r, j) * (dp(r, j) - dot)) < 1e-6);
    }
  }

  // And the float32 pair against central differences of L = sum(R .* softmax(S)).
  {
    const MatD rr = random_matrix(2 * T, T, 13);
    const nn::Tensor p32 = nn::causal_softmax(to_tensor(s, 1.0f), T);
    const MatD ds32 = values(nn::causal_softmax_backward(to_tensor(rr, 1.0f), p32));
    MatD xp = s;
    const auto loss = [&] { return values(nn::causal_softmax(to_tensor(xp, 1.0f), T)).cwiseProduct(rr).sum(); };
    CHECK(scalify_test::fd_worst(xp.data(), xp.size(), 1, 1e-2, 1.0, loss, ds32.data(), 0.05) < 5e-3);
  }

  const auto shape_error = [](auto f, const std::string& part) {
    try {
      f();
      FAIL("no shape_error");
    } catch (const scalify::shape_error& e) {
      CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(part));
    }
  };
  shape_error([&] { nn::causal_softmax(to_tensor(s, 1.0f), 4); }, "causal_softmax");
  shape_error([&] { nn::causal_softmax_backward(to_tensor(dp.topRows(3), 1.0f), p); }, "causal_softmax_backward");
  nn::Tensor o;
  nn::attention_cache cache;
  const nn::Tensor qkv = to_tensor(random_matrix(12, 24, 11), 1.0f);
  shape_error([&] { nn::attention_forward(o, cache, qkv, 5, 2, nn::attention_config::fp32()); }, "batch 5");
  shape_error([&] { nn::attention_forward(o, cache, qkv, 2, 3, nn::attention_config::fp32()); }, "heads 3");
  nn::attention_forward(o, cache, qkv, 2, 2, nn::attention_config::fp32());
  nn::Tensor dqkv;
  shape_error([&] { nn::attention_backward(dqkv, to_tensor(random_matrix(12, 7, 12), 1.0f), cache,
                                           nn::attention_config::fp32()); },
              "dout");
  nn::attention_config bad = nn::attention_config::fp8();
  bad.grad = static_cast<nn::dtype>(42);
  CHECK_THROWS_AS(nn::attention_forward(o, cache, qkv, 2, 2, bad), std::invalid_argument);
  bad = nn::attention_config::fp8();
  bad.probs_rescale = static_cast<nn::rescale_mode>(9);
  CHECK_THROWS_AS(nn::attention_forward(o, cache, qkv, 2, 2, bad), std::invalid_argument);
}

TEST_CASE("attention: causal softmax of scores whose values overflow float, from their data", "[nn][attention]") {
  // S - m = (data - max data) * scale: scores 4 * 2^126 = 2^128 overflowed float (inf - inf: NaN).
  const Eigen::Index T = 3;
  nn::Matrix data(T, T);
  data << 4.0f, 9.0f, 9.0f, 1.0f, 1.0f, 9.0f, 2.0f, 2.0f, 2.0f - 0x1p-20f;
  const nn::Tensor p = nn::causal_softmax(nn::Tensor(data, 0x1p126f), T);
  // Row 2: the third score is 2^-20 * 2^126 below the others: exp(-2^106) = 0.
  const MatD want = (MatD(3, 3) << 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.5, 0.5, 0.0).finished();
  CHECK(values(p) == want);
}

TEST_CASE("attention: an empty batch throws, naming attention_forward, before the cache changes",
          "[nn][attention][errors]") {
  nn::Tensor o;
  nn::attention_cache cache;
  const nn::Tensor qkv = to_tensor(random_matrix(4, 12, 3), 1.0f);
  nn::attention_forward(o, cache, qkv, 2, 2, nn::attention_config::fp32());
  try {
    nn::attention_forward(o, cache, nn::Tensor(nn::Matrix(0, 12), 1.0f), 1, 1, nn::attention_config::fp32());
    FAIL("no shape_error");
  } catch (const scalify::shape_error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("scalify::nn::attention_forward: qkv (0 x 12)"));
  }
  CHECK(cache.batch == 2);
  CHECK(cache.heads == 2);
  nn::Tensor dqkv;
  nn::attention_backward(dqkv, to_tensor(random_matrix(4, 4, 4), 1.0f), cache, nn::attention_config::fp32());
  CHECK(dqkv.rows() == 4);
}
