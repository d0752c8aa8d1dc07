// Train an MLP on Fashion-MNIST with scaled float8 / float16 arithmetic.
//
//   train_fashion_mnist [--precision fp32|fp16|fp8|fp16-naive] [--epochs 5] [--batch 128]
//                       [--lr 0.05] [--momentum 0.9] [--seed 1] [--hidden 512,512]
//                       [--threads N] [--json FILE] [--data DIR] [--limit N]
//                       [--state fp32|fp16|fp16-rn|bf16|fp16-naive] [--optimizer sgd|adamw] [--wd X]
//
//   fp32        float32 matmuls, float32 optimizer (the baseline)
//   fp16        scaled float16 matmul operands, scaled float16 optimizer state and master weights
//   fp8         e4m3fn activations and weights, e5m2 gradients, scaled float16 optimizer state
//   fp16-naive  plain float16 without scaling: operands, results, gradients and optimizer
//               state on scale 1 (what unscaled low precision does)
//
// --state overrides the optimizer storage of the preset (master weights and
// momentum): fp32 plain; fp16, bf16 scaled with stochastic rounding of the
// master weights; fp16-rn scaled float16 rounded to nearest; fp16-naive plain
// float16. It separates the matmul formats' effect from the optimizer's.
// --optimizer adamw uses AdamW (betas 0.9, 0.999, weight decay --wd, default 0)
// instead of SGD with momentum. --limit N trains on the first N images only.
//
// The data comes from the Debian package dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist) or --data DIR (IDX files, .gz or not).
// Same arguments and seed give the same result. The last line of the output is
// `test_accuracy=<fraction>`. Bad arguments: a usage message and exit code 2.
//
// The training step reads top to bottom: zero_grad, forward, loss, backward, step.
#include <unistd.h>  // isatty

#include <Eigen/Core>  // Eigen::setNbThreads
#include <chrono>      // std::chrono::steady_clock
#include <cstdint>     // uint64_t
#include <cstdio>      // std::fprintf, std::printf
#include <cstdlib>     // std::exit, std::strtol
#include <fstream>     // std::ofstream
#include <memory>      // std::unique_ptr
#include <numeric>     // std::iota
#include <random>      // std::mt19937_64
#include <string>      // std::string
#include <vector>      // std::vector

#include "scalify/nn/idx.hpp"   // load_fashion_mnist (zlib)
#include "scalify/nn/loss.hpp"  // softmax_cross_entropy
#include "scalify/nn/mlp.hpp"   // make_mlp
#include "scalify/nn/optim.hpp" // sgd

namespace nn = scalify::nn;

// ----------------------------------------------------------------------------
// Arguments

struct Args {
  std::string precision = "fp32";
  int epochs = 5;
  int batch = 128;
  float lr = 0.05f;
  float momentum = 0.9f;
  uint64_t seed = 1;
  std::vector<Eigen::Index> hidden = {512, 512};
  int threads = 1;
  std::string json;
  std::string data = nn::kFashionMnistDir;
  long limit = 0;  // 0: the whole training set
  std::string state;  // empty: the preset's
  std::string optimizer = "sgd";
  float wd = 0.0f;
};

[[noreturn]] void usage(const std::string& error) {
  std::fprintf(stderr,
               "train_fashion_mnist: %s\n"
               "usage: train_fashion_mnist [--precision fp32|fp16|fp8|fp16-naive] [--epochs N] [--batch N]\n"
               "                           [--lr X] [--momentum X] [--seed N] [--hidden N,N,...] [--threads N]\n"
               "                           [--json FILE] [--data DIR] [--limit N] [--state fp32|fp16|fp16-rn|bf16|fp16-naive]\n"
               "                           [--optimizer sgd|adamw] [--wd X]\n",
               error.c_str());
  std::exit(2);
}

long parse_int(const std::string& flag, const std::string& v, long min) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < min) {
    usage(flag + " wants an integer >= " + std::to_string(min) + ", got '" + v + "'");
  }
  return x;
}

float parse_float(const std::string& flag, const std::string& v, float min, float max) {
  char* end = nullptr;
  const float x = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(x >= min && x <= max)) {
    usage(flag + " wants a number in [" + std::to_string(min) + ", " + std::to_string(max) + "], got '" + v + "'");
  }
  return x;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") usage("train an MLP on Fashion-MNIST");
    if (i + 1 >= argc) usage("missing value after " + flag);
    const std::string v = argv[++i];
    if (flag == "--precision") {
      if (v != "fp32" && v != "fp16" && v != "fp8" && v != "fp16-naive") usage("unknown precision '" + v + "'");
      a.precision = v;
    } else if (flag == "--epochs") {
      a.epochs = static_cast<int>(parse_int(flag, v, 1));
    } else if (flag == "--batch") {
      a.batch = static_cast<int>(parse_int(flag, v, 1));
    } else if (flag == "--lr") {
      a.lr = parse_float(flag, v, 0.0f, 10.0f);
    } else if (flag == "--momentum") {
      a.momentum = parse_float(flag, v, 0.0f, 0.999f);
    } else if (flag == "--seed") {
      a.seed = static_cast<uint64_t>(parse_int(flag, v, 0));
    } else if (flag == "--hidden") {
      a.hidden.clear();
      size_t start = 0;
      while (start <= v.size()) {
        const size_t comma = v.find(',', start);
        const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        a.hidden.push_back(parse_int(flag, item, 1));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (flag == "--threads") {
      a.threads = static_cast<int>(parse_int(flag, v, 1));
    } else if (flag == "--json") {
      a.json = v;
    } else if (flag == "--data") {
      a.data = v;
    } else if (flag == "--state") {
      if (v != "fp32" && v != "fp16" && v != "fp16-rn" && v != "bf16" && v != "fp16-naive") {
        usage("unknown --state '" + v + "'");
      }
      a.state = v;
    } else if (flag == "--optimizer") {
      if (v != "sgd" && v != "adamw") usage("unknown optimizer '" + v + "'");
      a.optimizer = v;
    } else if (flag == "--wd") {
      a.wd = parse_float(flag, v, 0.0f, 1.0f);
    } else if (flag == "--limit") {
      a.limit = parse_int(flag, v, 1);
    } else {
      usage("unknown argument '" + flag + "'");
    }
  }
  return a;
}

// ----------------------------------------------------------------------------
// Precision presets

struct Precision {
  nn::linear_config linear;
  nn::state_config state;
  nn::rescale_mode loss_grad_rescale;
};

Precision preset(const std::string& name) {
  if (name == "fp16") return {nn::linear_config::fp16(), nn::state_config{}, nn::rescale_mode::l1};
  if (name == "fp8") return {nn::linear_config::fp8(), nn::state_config{}, nn::rescale_mode::l1};
  if (name == "fp16-naive") {
    return {nn::linear_config::fp16_naive(), nn::state_config::fp16_naive(), nn::rescale_mode::none};
  }
  return {nn::linear_config::fp32(), nn::state_config::fp32(), nn::rescale_mode::l1};
}

// ----------------------------------------------------------------------------
// Helpers

/// Rows `idx[begin, begin + n)` of `images` as a tensor on scale 1.
nn::Tensor gather(const nn::Matrix& images, const std::vector<int>& order, size_t begin, size_t n) {
  nn::Matrix x(static_cast<Eigen::Index>(n), images.cols());
  for (size_t i = 0; i < n; ++i) x.row(static_cast<Eigen::Index>(i)) = images.row(order[begin + i]);
  return nn::Tensor(std::move(x), 1.0f);
}

int argmax_row(const nn::Tensor& logits, Eigen::Index r) {
  Eigen::Index best = 0;
  logits.data().row(r).maxCoeff(&best);  // the scale is > 0: same argmax as the values
  return static_cast<int>(best);
}

double accuracy(nn::sequential& net, const nn::idx_dataset& d) {
  std::vector<int> order(static_cast<size_t>(d.size()));
  std::iota(order.begin(), order.end(), 0);
  long correct = 0;
  const size_t chunk = 1000;
  for (size_t b = 0; b < order.size(); b += chunk) {
    const size_t n = std::min(chunk, order.size() - b);
    const nn::Tensor logits = net.forward(gather(d.images, order, b, n));
    for (size_t i = 0; i < n; ++i) correct += argmax_row(logits, static_cast<Eigen::Index>(i)) == d.labels[b + i];
  }
  return static_cast<double>(correct) / static_cast<double>(order.size());
}

void progress(int epoch, size_t done, size_t total, double loss) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / total);
  std::fprintf(stderr, "\repoch %d [%.*s%*s] %3d%% loss %.4f", epoch, filled, "##############################",
               width - filled, "", static_cast<int>(100 * done / total), loss);
  std::fflush(stderr);
}

struct EpochResult {
  double loss, train_acc, test_acc, seconds, images_per_second;
};

// ----------------------------------------------------------------------------
// Training

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  Eigen::setNbThreads(args.threads);

  nn::idx_train_test data;
  try {
    data = nn::load_fashion_mnist(args.data);
  } catch (const scalify::format_error& e) {
    std::fprintf(stderr, "train_fashion_mnist: %s\n", e.what());
    return 1;
  }
  for (int l : data.train.labels) {
    if (l < 0 || l > 9) {
      std::fprintf(stderr, "train_fashion_mnist: label %d out of [0, 9]\n", l);
      return 1;
    }
  }
  const size_t n_train = args.limit > 0 ? std::min<size_t>(static_cast<size_t>(args.limit), data.train.labels.size())
                                        : data.train.labels.size();

  Precision prec = preset(args.precision);
  if (args.state == "fp32") prec.state = nn::state_config::fp32();
  if (args.state == "fp16") prec.state = nn::state_config{};
  if (args.state == "fp16-rn") prec.state = nn::state_config{.stochastic_master = false};
  if (args.state == "bf16") prec.state = nn::state_config{.format = nn::dtype::bfloat16};
  if (args.state == "fp16-naive") prec.state = nn::state_config::fp16_naive();
  nn::mlp_config mcfg;
  mcfg.sizes.push_back(data.train.images.cols());
  for (auto h : args.hidden) mcfg.sizes.push_back(h);
  mcfg.sizes.push_back(10);
  mcfg.linear = prec.linear;
  mcfg.seed = args.seed;
  nn::sequential net = nn::make_mlp(mcfg);
  std::unique_ptr<nn::sgd> sgd;
  std::unique_ptr<nn::adamw> adamw;
  if (args.optimizer == "adamw") {
    adamw = std::make_unique<nn::adamw>(net.parameters(), nn::adamw_config{.lr = args.lr, .weight_decay = args.wd},
                                        prec.state);
  } else {
    sgd = std::make_unique<nn::sgd>(net.parameters(),
                                    nn::sgd_config{.lr = args.lr, .momentum = args.momentum, .weight_decay = args.wd},
                                    prec.state);
  }

  std::printf("# precision %s, %s\n", args.precision.c_str(), net.name().c_str());
  std::printf("# optimizer: %s lr %g momentum %g wd %g, state %s%s; batch %d, seed %llu, %zu training images\n",
              args.optimizer.c_str(), static_cast<double>(args.lr), static_cast<double>(args.momentum),
              static_cast<double>(args.wd), nn::dtype_name(prec.state.format),
              prec.state.dynamic_scale ? " scaled" : "", args.batch, static_cast<unsigned long long>(args.seed),
              n_train);
  std::printf("%5s %8s %9s %9s %8s %9s\n", "epoch", "loss", "train_acc", "test_acc", "seconds", "images/s");
  std::fflush(stdout);

  const bool tty = isatty(2) != 0;
  std::mt19937_64 shuffle_rng(args.seed ^ 0x5eed'5eedull);
  std::vector<int> order(n_train);
  std::vector<EpochResult> results;
  for (int epoch = 1; epoch <= args.epochs; ++epoch) {
    std::iota(order.begin(), order.end(), 0);
    for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[shuffle_rng() % (i + 1)]);  // Fisher-Yates

    const auto start = std::chrono::steady_clock::now();
    double loss_sum = 0.0;
    long correct = 0, batches = 0;
    std::vector<int> labels;
    for (size_t b = 0; b < n_train; b += static_cast<size_t>(args.batch)) {
      const size_t n = std::min(static_cast<size_t>(args.batch), n_train - b);
      const nn::Tensor x = gather(data.train.images, order, b, n);
      labels.resize(n);
      for (size_t i = 0; i < n; ++i) labels[i] = data.train.labels[static_cast<size_t>(order[b + i])];

      net.zero_grad();
      const nn::Tensor logits = net.forward(x);  // (B, 10)
      nn::Tensor dlogits;
      const float loss = nn::softmax_cross_entropy(&dlogits, logits, labels, prec.loss_grad_rescale);
      net.backward(dlogits);
      if (sgd) {
        sgd->step();
      } else {
        adamw->step();
      }

      loss_sum += loss;
      ++batches;
      for (size_t i = 0; i < n; ++i) correct += argmax_row(logits, static_cast<Eigen::Index>(i)) == labels[i];
      if (tty && (batches % 20 == 0 || b + n == n_train)) progress(epoch, b + n, n_train, loss_sum / batches);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) std::fprintf(stderr, "\r%*s\r", 70, "");
    const EpochResult r{loss_sum / static_cast<double>(batches), static_cast<double>(correct) / static_cast<double>(n_train),
                        accuracy(net, data.test), seconds, static_cast<double>(n_train) / seconds};
    results.push_back(r);
    std::printf("%5d %8.4f %9.4f %9.4f %8.2f %9.0f\n", epoch, r.loss, r.train_acc, r.test_acc, r.seconds,
                r.images_per_second);
    std::fflush(stdout);
  }

  if (!args.json.empty()) {
    std::ofstream f(args.json);
    if (!f) {
      std::fprintf(stderr, "train_fashion_mnist: cannot write '%s'\n", args.json.c_str());
      return 1;
    }
    f << "{\"precision\": \"" << args.precision << "\", \"state\": \"" << nn::dtype_name(prec.state.format)
      << (prec.state.dynamic_scale ? " scaled" : "")
      << (prec.state.format != nn::dtype::float32 && !prec.state.stochastic_master ? " nearest" : "")
      << "\", \"epochs\": " << args.epochs << ", \"batch\": " << args.batch
      << ", \"optimizer\": \"" << args.optimizer << "\", \"wd\": " << args.wd << ", \"lr\": " << args.lr << ", \"momentum\": " << args.momentum << ", \"seed\": " << args.seed
      << ", \"train_images\": " << n_train << ", \"sizes\": [";
    for (size_t i = 0; i < mcfg.sizes.size(); ++i) f << (i ? ", " : "") << mcfg.sizes[i];
    f << "], \"epoch_results\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      f << (i ? ", " : "") << "{\"epoch\": " << i + 1 << ", \"loss\": " << r.loss << ", \"train_accuracy\": " << r.train_acc
        << ", \"test_accuracy\": " << r.test_acc << ", \"seconds\": " << r.seconds
        << ", \"images_per_second\": " << r.images_per_second << "}";
    }
    f << "], \"test_accuracy\": " << results.back().test_acc << "}\n";
  }
  std::printf("test_accuracy=%.4f\n", results.back().test_acc);
  return 0;
}
