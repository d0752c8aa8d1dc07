// The MLP builder and the training loop end to end (nn/mlp.hpp, nn/optim.hpp,
// nn/loss.hpp): a small MLP must fit a tiny synthetic dataset in fp32, fp16
// and fp8, deterministically.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "scalify/nn/loss.hpp"
#include "scalify/nn/mlp.hpp"
#include "scalify/nn/optim.hpp"

namespace nn = scalify::nn;

namespace {

/// 256 points in 16-D, 4 classes: the label is the argmax of a fixed random
/// linear map of a nonlinear feature (|x|), so a linear model cannot fit it
/// but a one-hidden-layer MLP can.
struct Toy {
  nn::Matrix x;
  std::vector<int> y;
};

Toy make_toy(uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = 256, d = 16, c = 4;
  nn::Matrix teacher(d, c);
  for (Eigen::Index i = 0; i < teacher.size(); ++i) teacher.data()[i] = normal(gen);
  Toy t{nn::Matrix(n, d), std::vector<int>(n)};
  for (Eigen::Index i = 0; i < t.x.size(); ++i) t.x.data()[i] = normal(gen);
  const nn::Matrix scores = t.x.cwiseAbs() * teacher;
  for (int i = 0; i < n; ++i) {
    Eigen::Index k = 0;
    scores.row(i).maxCoeff(&k);
    t.y[static_cast<size_t>(i)] = static_cast<int>(k);
  }
  return t;
}

struct Fit {
  double accuracy;
  float last_loss;
};

Fit train(const nn::linear_config& lcfg, const nn::state_config& scfg, int epochs) {
  const Toy toy = make_toy(3);
  nn::sequential net = nn::make_mlp({.sizes = {16, 64, 4}, .linear = lcfg, .seed = 11});
  nn::sgd opt(net.parameters(), {.lr = 0.1f, .momentum = 0.9f}, scfg);
  const int batch = 32;
  Fit fit{0.0, 0.0f};
  for (int e = 0; e < epochs; ++e) {
    for (int b = 0; b < 256; b += batch) {
      const nn::Tensor x(toy.x.middleRows(b, batch), 1.0f);
      const std::vector<int> labels(toy.y.begin() + b, toy.y.begin() + b + batch);
      net.zero_grad();
      const nn::Tensor logits = net.forward(x);
      nn::Tensor dlogits;
      fit.last_loss = nn::softmax_cross_entropy(&dlogits, logits, labels);
      net.backward(dlogits);
      opt.step();
    }
  }
  const nn::Tensor logits = net.forward(nn::Tensor(toy.x, 1.0f));
  long correct = 0;
  for (int i = 0; i < 256; ++i) {
    Eigen::Index k = 0;
    logits.data().row(i).maxCoeff(&k);
    correct += k == toy.y[static_cast<size_t>(i)];
  }
  fit.accuracy = static_cast<double>(correct) / 256.0;
  return fit;
}

}  // namespace

TEST_CASE("mlp: make_mlp builds Linear -> act -> ... -> Linear", "[nn][mlp]") {
  nn::sequential net = nn::make_mlp({.sizes = {8, 16, 16, 3}, .act = nn::activation::gelu_tanh, .layernorm = true});
  CHECK(net.size() == 7);  // linear, layernorm, gelu, linear, layernorm, gelu, linear
  CHECK(net.parameters().size() == 10);
  const nn::Tensor y = net.forward(nn::Tensor(nn::Matrix::Random(5, 8), 1.0f));
  CHECK(y.rows() == 5);
  CHECK(y.cols() == 3);
  CHECK_THROWS_AS(nn::make_mlp({.sizes = {8}}), std::invalid_argument);
  CHECK_THROWS_AS(nn::make_mlp({.sizes = {8, 0, 3}}), std::invalid_argument);
  CHECK_THROWS_AS(net.forward(nn::Tensor(nn::Matrix::Random(5, 7), 1.0f)), scalify::shape_error);
}

TEST_CASE("mlp: fits a tiny synthetic dataset in fp32, fp16 and fp8", "[nn][mlp]") {
  struct Case {
    const char* name;
    nn::linear_config l;
    nn::state_config s;
  };
  const std::vector<Case> cases = {
      {"fp32", nn::linear_config::fp32(), nn::state_config::fp32()},
      {"fp16", nn::linear_config::fp16(), nn::state_config{}},
      {"fp8", nn::linear_config::fp8(), nn::state_config{}},
  };
  for (const auto& c : cases) {
    SECTION(c.name) {
      const Fit fit = train(c.l, c.s, 60);
      INFO(c.name << ": train accuracy " << fit.accuracy << ", last loss " << fit.last_loss);
      CHECK(fit.accuracy >= 0.95);
      CHECK(fit.last_loss < 0.3f);
    }
  }
}

TEST_CASE("mlp: training is deterministic", "[nn][mlp]") {
  const Fit a = train(nn::linear_config::fp8(), nn::state_config{}, 3);
  const Fit b = train(nn::linear_config::fp8(), nn::state_config{}, 3);
  CHECK(a.last_loss == b.last_loss);
  CHECK(a.accuracy == b.accuracy);
}

TEST_CASE("make_mlp rejects an activation or linear format outside its enum", "[nn][mlp][errors]") {
  nn::mlp_config cfg{.sizes = {4, 3, 2}};
  cfg.act = static_cast<nn::activation>(5);
  CHECK_THROWS_AS(nn::make_mlp(cfg), std::invalid_argument);
  CHECK_THROWS_WITH(nn::make_mlp(cfg), Catch::Contains("scalify::nn::make_mlp") && Catch::Contains("activation 5"));
  cfg.act = nn::activation::gelu_tanh;
  cfg.linear.forward.lhs = static_cast<nn::dtype>(40);
  CHECK_THROWS_WITH(nn::make_mlp(cfg), Catch::Contains("forward.lhs") && Catch::Contains("dtype 40"));
  cfg.linear = nn::linear_config::fp8();
  cfg.linear.input_rescale = static_cast<nn::rescale_mode>(-2);
  CHECK_THROWS_WITH(nn::make_mlp(cfg), Catch::Contains("input_rescale") && Catch::Contains("rescale_mode -2"));
  cfg.linear = nn::linear_config::fp8();
  CHECK(nn::make_mlp(cfg).size() == 3);  // linear, gelu, linear
  cfg.sizes = {4, -3, 2};
  CHECK_THROWS_WITH(nn::make_mlp(cfg), Catch::Contains("-3"));
  // The layer classes check too: a bad config, and sizes whose weights cannot be addressed.
  nn::linear_config bad = nn::linear_config::fp8();
  bad.grad_weight.rhs = static_cast<nn::dtype>(12);
  CHECK_THROWS_WITH(nn::linear_layer(4, 3, bad, 1),
                    Catch::Contains("scalify::nn::linear_layer") && Catch::Contains("grad_weight.rhs"));
  CHECK_THROWS_WITH(nn::linear_layer(Eigen::Index{1} << 62, 2, nn::linear_config::fp32(), 1),
                    Catch::Contains("scalify::nn::linear_init"));
  CHECK_THROWS_AS(nn::layernorm_layer(-4), std::invalid_argument);
  cfg.sizes = {Eigen::Index{1} << 40, Eigen::Index{1} << 40};
  CHECK_THROWS_AS(nn::make_mlp(cfg), std::invalid_argument);
}

TEST_CASE("mlp: one NaN pixel skips the optimizer step instead of poisoning every weight", "[nn][mlp][nonfinite]") {
  // The report: a NaN in one input made the logits gradient's scale inf, and
  // after one SGD step every weight was NaN. Now the step is skipped.
  const Toy toy = make_toy(3);
  nn::sequential net = nn::make_mlp({.sizes = {16, 64, 4}, .linear = nn::linear_config::fp8(), .seed = 11});
  nn::sgd opt(net.parameters(), {.lr = 0.1f, .momentum = 0.9f});
  const std::vector<int> labels(toy.y.begin(), toy.y.begin() + 32);
  auto train_step = [&](const nn::Matrix& x) {
    net.zero_grad();
    nn::Tensor dlogits;
    (void)nn::softmax_cross_entropy(&dlogits, net.forward(nn::Tensor(x, 1.0f)), labels);
    net.backward(dlogits);
    return opt.step();
  };
  CHECK(train_step(toy.x.topRows(32)));
  std::vector<nn::Matrix> before;
  for (const auto& p : net.parameters()) before.push_back(p.value->data() * p.value->scale());
  nn::Matrix bad = toy.x.topRows(32);
  bad(5, 7) = std::nanf("");
  CHECK_FALSE(train_step(bad));
  CHECK(opt.skipped_steps() == 1);
  const auto params = net.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    CHECK((params[i].value->data() * params[i].value->scale()) == before[i]);  // unchanged, and no NaN
  }
  CHECK(train_step(toy.x.topRows(32)));
  CHECK(opt.step_count() == 2);
  for (const auto& p : net.parameters()) CHECK(p.value->data().allFinite());
}
