// scalify/activation.hpp: one activation enum and one GELU for the library.
//
// - This file opens both namespaces at file scope, as a user's program might,
//   and names `activation` unqualified: it compiles only if scalify::activation
//   and scalify::nn::activation are one entity (a second enum would be ambiguous).
// - GELU: the GEMM epilogue's activation::gelu_tanh, nn::gelu_forward and
//   scalify::gelu_tanh give the same float32 bits, and all are within a few ulp
//   of the formula evaluated in double; hand-computed values pin the tanh
//   approximation (not the erf form).
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include "scalify/nn.hpp"  // and, through it, scalify/scalify.hpp
#include "support/activation_ref.hpp"

using namespace scalify;      // NOLINT: the point of the test
using namespace scalify::nn;  // NOLINT

static_assert(std::is_same_v<scalify::activation, scalify::nn::activation>);
static_assert(std::is_same_v<decltype(activation::relu), scalify::activation>);

namespace {

// Unqualified `activation` with both using-directives in effect.
constexpr activation kRelu = activation::relu;
constexpr activation kGelu = activation::gelu_tanh;

/// Floats spread over many binades of both signs, plus a dense grid around 0.
std::vector<float> sample_inputs() {
  std::vector<float> xs;
  for (int i = -4000; i <= 4000; ++i) xs.push_back(static_cast<float>(i) * 0.0025f);  // [-10, 10]
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> expo(-40, 12);
  for (int i = 0; i < 20000; ++i) {
    const float v = std::ldexp(mant(gen), expo(gen));
    xs.push_back(i % 2 ? v : -v);
  }
  return xs;
}

}  // namespace

TEST_CASE("activation: one enum in scalify and scalify::nn", "[activation]") {
  CHECK(kRelu == scalify::activation::relu);
  CHECK(kGelu == scalify::nn::activation::gelu_tanh);
  // Both users of the enum take the same values.
  const gemm_options g{.act = activation::gelu_tanh};
  const mlp_config m{.sizes = {4, 8, 2}, .act = g.act};
  CHECK(make_mlp(m).size() == 3);  // linear, gelu, linear
  const mlp_config none{.sizes = {4, 8, 2}, .act = activation::none};
  CHECK(make_mlp(none).size() == 2);  // linear, linear: no activation layer
}

TEST_CASE("activation: gelu_tanh is the tanh approximation (hand-computed values)", "[activation]") {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) at x = 1: tanh(0.8297466...) = 0.6823839...
  CHECK(gelu_tanh(1.0) == Approx(0.8411919906082768).epsilon(1e-14));
  CHECK(gelu_tanh(-1.0) == Approx(-0.1588080093917232).epsilon(1e-13));
  CHECK(gelu_tanh(0.0) == 0.0);
  // The erf form x Phi(x) = 0.8413447460685429 at 1: a different function, 1.5e-4 away.
  CHECK(std::abs(gelu_tanh(1.0) - 0.8413447460685429) > 1e-4);
  // Derivative at 0 is 1/2; at 1, hand-differentiated: 0.5 (1 + t) + 0.5 (1 - t^2) k (1 + 3 * 0.044715).
  CHECK(gelu_tanh_grad(0.0) == 0.5);
  const double k = std::sqrt(2.0 / 3.14159265358979323846), t = std::tanh(k * 1.044715);
  CHECK(gelu_tanh_grad(1.0) == Approx(0.5 * (1 + t) + 0.5 * (1 - t * t) * k * (1 + 3 * 0.044715)).epsilon(1e-14));
  // Non-finite inputs.
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(gelu_tanh(inf) == inf);
  CHECK(gelu_tanh(-inf) == 0.0f);
  CHECK(std::signbit(gelu_tanh(-inf)));
  CHECK(std::isnan(gelu_tanh(std::nanf(""))));
}

TEST_CASE("activation: the epilogue's GELU, nn's GELU and scalify::gelu_tanh agree bit for bit, near double",
          "[activation]") {
  const std::vector<float> xs = sample_inputs();
  Matrix x(1, static_cast<Eigen::Index>(xs.size()));
  for (size_t i = 0; i < xs.size(); ++i) x(0, static_cast<Eigen::Index>(i)) = xs[i];
  Tensor y;
  gelu_forward(y, Tensor(x, 1.0f));
  REQUIRE(y.scale() == 1.0f);
  long mismatches = 0;
  double worst = 0.0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const float v = xs[i];
    const float lib = gelu_tanh(v);
    const float epi = kernels::activate(v, activation::gelu_tanh);
    const float layer = y.data()(0, static_cast<Eigen::Index>(i));
    if (std::bit_cast<uint32_t>(lib) != std::bit_cast<uint32_t>(epi) ||
        std::bit_cast<uint32_t>(lib) != std::bit_cast<uint32_t>(layer)) {
      if (++mismatches <= 5) FAIL_CHECK("x = " << v << ": gelu_tanh " << lib << ", epilogue " << epi << ", nn " << layer);
    }
    // float32 evaluation: a few roundings of x-sized terms (tanh, the cubic, the product) -> 8 u |x|.
    const double want = scalify_test::gelu_ref(v), err = std::abs(static_cast<double>(lib) - want);
    const double tol = 8 * 0x1p-24 * std::abs(static_cast<double>(v)) + 1e-45;
    worst = std::max(worst, err / tol);
    if (err > tol) FAIL_CHECK("x = " << v << ": got " << lib << ", double " << want);
  }
  INFO("worst error / tolerance " << worst);
  CHECK(mismatches == 0);
  CHECK(worst <= 1.0);
}

TEST_CASE("activation: gemm with the fused GELU equals gemm then nn::gelu_forward", "[activation]") {
  const Eigen::Index m = 9, n = 37, k = 50;
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix a(m, k), b(k, n);
  for (Eigen::Index i = 0; i < a.size(); ++i) a.data()[i] = normal(gen);
  for (Eigen::Index i = 0; i < b.size(); ++i) b.data()[i] = 0.3f * normal(gen);
  Matrix fused(m, n), plain(m, n);
  gemm(row_major_view<const float>(a.data(), m, k), row_major_view<const float>(b.data(), k, n),
       row_major_view(fused.data(), m, n), {.act = activation::gelu_tanh});
  gemm(row_major_view<const float>(a.data(), m, k), row_major_view<const float>(b.data(), k, n),
       row_major_view(plain.data(), m, n), {});
  Tensor y;
  gelu_forward(y, Tensor(plain, 1.0f));
  for (Eigen::Index i = 0; i < fused.size(); ++i) {
    INFO("element " << i << ": pre-activation " << plain.data()[i]);
    CHECK(std::bit_cast<uint32_t>(fused.data()[i]) == std::bit_cast<uint32_t>(y.data().data()[i]));
  }
}
