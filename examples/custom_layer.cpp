// A user-written layer plugged into an scalify MLP: a residual block
//
//   y = x + relu(x W + b)          x, y are (B, C), W is (C, C), b is (1, C)
//
// built from scalify's scaled pieces: the Linear forward/backward pair (float8
// matmuls), the ReLU pair, and scalify::add for the skip connection (add's
// scale rule rebases both branches onto a common scale). Backward:
//
//   dh = dy                         (the branch gets dy ...)
//   dz = relu'(z) * dh              z = x W + b
//   dx_branch = dz W^T, dW += x^T dz, db += sum_b dz
//   dx = dy + dx_branch             (... and the skip adds it back: explicit sum)
//
// The network, Linear(20, 64) -> ReLU -> Residual(64) -> Linear(64, 3), is
// trained in fp8 on a synthetic 3-class problem for a few hundred steps.
// Exit code 0 if it fits (train accuracy >= 0.9), 1 otherwise.
#include <cstdio>   // std::printf
#include <memory>   // std::make_unique
#include <random>   // std::mt19937_64
#include <vector>   // std::vector

#include "cli.hpp"                     // examples::cli (--help)
#include "scalify/nn/activations.hpp"  // relu_forward, relu_backward
#include "scalify/nn/linear.hpp"       // linear_forward, linear_backward
#include "scalify/nn/loss.hpp"         // softmax_cross_entropy
#include "scalify/nn/mlp.hpp"          // module, sequential, linear_layer, relu_layer
#include "scalify/nn/optim.hpp"        // sgd
#include "scalify/ops/elementwise.hpp" // scalify::add

namespace nn = scalify::nn;

// ----------------------------------------------------------------------------
// The user layer

class residual_block : public nn::module {
 public:
  residual_block(Eigen::Index channels, const nn::linear_config& cfg, uint64_t seed) : cfg_(cfg) {
    nn::linear_init(params_, channels, channels, seed);
    // Start close to the identity: a small branch (folded into the scale, the data stays unit-variance).
    params_.w.set_scale(params_.w.scale() * 0.25f);
    nn::linear_zero_grad(grads_, params_);
  }
  std::string name() const override { return "residual(" + std::to_string(params_.w.rows()) + ")"; }

  nn::Tensor forward(const nn::Tensor& x) override {
    nn::linear_forward(z_, cache_, x, params_, cfg_);  // z = x W + b
    nn::Tensor h;
    nn::relu_forward(h, z_);                           // h = relu(z)
    return scalify::add(x, h);                         // y = x + h, scaled add
  }

  nn::Tensor backward(const nn::Tensor& dy, bool need_dx) override {
    nn::Tensor dz, dx_branch;
    nn::relu_backward(dz, dy, z_);                                             // dz = relu'(z) * dy
    nn::linear_backward(need_dx ? &dx_branch : nullptr, grads_, dz, cache_, params_, cfg_);
    if (!need_dx) return {};
    return scalify::add(dy, dx_branch);                                        // dx = dy + dz W^T
  }

  std::vector<nn::param_ref> parameters() override {
    return {{"w", &params_.w, &grads_.dw}, {"b", &params_.b, &grads_.db}};
  }
  void zero_grad() override { nn::linear_zero_grad(grads_, params_); }

 private:
  nn::linear_config cfg_;
  nn::linear_params params_;
  nn::linear_grads grads_;
  nn::linear_cache cache_;
  nn::Tensor z_;
};

// ----------------------------------------------------------------------------
// A synthetic problem: 3 Gaussian clusters in 20 dimensions (easy: the point is the layer).

struct Data {
  nn::Matrix x;
  std::vector<int> y;
};

Data make_data(int n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  nn::Matrix centers(3, 20);
  for (Eigen::Index i = 0; i < centers.size(); ++i) centers.data()[i] = normal(gen);
  Data d{nn::Matrix(n, 20), std::vector<int>(static_cast<size_t>(n))};
  for (int i = 0; i < n; ++i) {
    const int c = i % 3;
    d.y[static_cast<size_t>(i)] = c;
    for (Eigen::Index j = 0; j < 20; ++j) d.x(i, j) = centers(c, j) + 0.8f * normal(gen);
  }
  return d;
}

int main(int argc, char** argv) {
  examples::cli("custom_layer", "Trains a small MLP with a user-written residual layer in fp8 on synthetic data;\n"
                                "exit code 0 if it fits (train accuracy >= 0.9).")
      .parse(argc, argv);  // no options: --help, or exit 2
  const nn::linear_config cfg = nn::linear_config::fp8();
  nn::sequential net;
  net.add(std::make_unique<nn::linear_layer>(20, 64, cfg, 1));
  net.add(std::make_unique<nn::relu_layer>());
  net.add(std::make_unique<residual_block>(64, cfg, 2));
  net.add(std::make_unique<nn::linear_layer>(64, 3, cfg, 3));
  std::printf("%s\n", net.name().c_str());

  nn::sgd opt(net.parameters(), {.lr = 0.05f, .momentum = 0.9f});  // scaled float16 state
  const Data data = make_data(512, 7);
  const int batch = 64;
  double acc = 0.0;
  for (int epoch = 1; epoch <= 10; ++epoch) {
    double loss_sum = 0.0;
    long correct = 0;
    for (int b = 0; b < 512; b += batch) {
      const nn::Tensor x(data.x.middleRows(b, batch), 1.0f);
      const std::vector<int> labels(data.y.begin() + b, data.y.begin() + b + batch);
      net.zero_grad();
      const nn::Tensor logits = net.forward(x);
      nn::Tensor dlogits;
      loss_sum += nn::softmax_cross_entropy(&dlogits, logits, labels);
      net.backward(dlogits);
      opt.step();
      for (int i = 0; i < batch; ++i) {
        Eigen::Index k = 0;
        logits.data().row(i).maxCoeff(&k);
        correct += k == labels[static_cast<size_t>(i)];
      }
    }
    acc = static_cast<double>(correct) / 512.0;
    std::printf("epoch %2d  loss %.4f  train accuracy %.4f\n", epoch, loss_sum / (512 / batch), acc);
  }
  return acc >= 0.9 ? 0 : 1;
}
