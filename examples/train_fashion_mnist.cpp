// Train an MLP on Fashion-MNIST with scaled float8 / float16 arithmetic.
//
//   train_fashion_mnist --help                       the options and their defaults
//   train_fashion_mnist --precision fp8 --epochs 5   (--flag value or --flag=value)
//
//   fp32        float32 matmuls, float32 optimizer (the baseline)
//   fp16        scaled float16 matmul operands, scaled float16 optimizer state and weights
//   fp8         e4m3fn activations and weights, e5m2 gradients, scaled float16 optimizer state
//   fp16-naive  plain float16 without scaling: operands, results, gradients and optimizer
//               state on scale 1 (what unscaled low precision does)
//
// --state overrides the optimizer storage of the preset (weights and
// momentum): fp32 plain; fp16, bf16 scaled with stochastic rounding of the
// weights; fp16-rn scaled float16 rounded to nearest; fp16-naive plain
// float16. It separates the matmul formats' effect from the optimizer's.
// --optimizer adamw uses AdamW instead of SGD with momentum; --lr and --wd
// default to each optimizer's own defaults. --limit N trains on the first N
// images only. --dry-run prints the settings and exits.
//
// --threads N limits every parallel region (scalify's GEMM, the evaluation of
// stored results, casts; Eigen's own products) through config_scope's
// `threads`; without it, the library's default applies: SCALIFY_NUM_THREADS
// if set, else every core. The header and the --json file give the threads in
// effect, the CPU path and the scalify version.
//
// The data comes from the Debian package dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist) or --data DIR (IDX files, .gz or not).
// Same arguments and seed give the same result. The last line of the output is
// `test_accuracy=<fraction>`. Bad arguments (and a --json path that cannot be
// written, checked before training, and an invalid SCALIFY_NUM_THREADS): a
// message on stderr and exit code 2.
// On a terminal a progress bar (rate, ETA) is drawn on stderr.
//
// --save FILE writes a checkpoint (scalify/io/checkpoint.hpp: the weights, the
// optimizer's state and step count, the shuffling RNG, the epoch) after every
// epoch, replacing FILE atomically. --resume FILE continues such a run: same
// settings (checked: a message and exit 2 if they differ), --epochs the total
// to reach; the epochs after the checkpoint's give exactly the results the
// uninterrupted run gives.
//
// Data parallel: built with MPI (scalify::mpi), the same program runs under
// `mpirun -np P`: every rank shuffles the same way and trains on its share of
// each global batch of P x --batch images; the gradients are averaged across
// the ranks (scalify/dist/: --wire fp32, fp16 or e5m2 on the wire) before
// every step, so all ranks keep the same weights; rank 0 prints and writes
// --json and --save. With --wire fp32 the run matches one process with
// --batch P x B up to float32 summation order.
//
// The training step reads top to bottom: zero_grad, forward, loss, backward,
// (all-reduce,) step.
#include <Eigen/Core>  // Eigen::setNbThreads
#include <algorithm>   // std::min
#include <chrono>      // std::chrono::steady_clock
#include <cstdint>     // uint64_t
#include <cstdio>      // std::fprintf, std::printf
#include <fstream>     // std::ofstream
#include <map>         // std::map
#include <memory>      // std::unique_ptr
#include <numeric>     // std::iota
#include <optional>    // std::optional
#include <random>      // std::mt19937_64
#include <stdexcept>   // std::invalid_argument
#include <string>      // std::string
#include <vector>      // std::vector

#include "cli.hpp"                        // examples::cli, progress_bar, thread_scope, num
#include "distributed.hpp"                // examples::ranks
#include "resume.hpp"                     // examples::save, resume, run_settings
#include "scalify/cpu.hpp"                // active_cpu_path, to_string
#include "scalify/nn/idx.hpp"             // load_fashion_mnist (zlib)
#include "scalify/nn/loss.hpp"            // softmax_cross_entropy
#include "scalify/nn/mlp.hpp"             // make_mlp
#include "scalify/nn/optim.hpp"           // sgd, adamw
#include "scalify/version.hpp"            // SCALIFY_VERSION

namespace nn = scalify::nn;
using examples::num;

// ----------------------------------------------------------------------------
// Arguments

struct Args {
  std::string precision = "fp32";
  int epochs = 5;
  int batch = 128;
  std::optional<float> lr;  // empty: the optimizer's default (below)
  float momentum = 0.9f;
  std::optional<float> wd;  // empty: the optimizer's default
  uint64_t seed = 1;
  std::vector<Eigen::Index> hidden = {512, 512};
  int threads = 0;  // 0: the library's default (SCALIFY_NUM_THREADS, else every core)
  std::string json;
  std::string data = nn::kFashionMnistDir;
  long limit = 0;     // 0: the whole training set
  std::string state;  // empty: the preset's
  std::string optimizer = "sgd";
  std::string save, resume;
  std::string wire = "fp32";
  bool dry_run = false;
};

// The defaults of --lr and --wd: SGD's are this example's (the numpy reference
// of the training docs); AdamW's are nn::adamw_config's.
constexpr float kSgdLr = 0.05f, kSgdWd = 0.0f;

Args parse_args(int argc, char** argv) {
  Args a;
  const nn::adamw_config adamw_defaults;
  examples::cli c("train_fashion_mnist", "Trains an MLP on Fashion-MNIST in fp32, fp16 or fp8 (scalify).");
  c.option("--precision", "P", "fp32, fp16, fp8 or fp16-naive: matmul formats and optimizer storage",
           [&](const std::string& v) { a.precision = c.to_choice(v, {"fp32", "fp16", "fp8", "fp16-naive"}); },
           a.precision);
  c.option("--epochs", "N", "passes over the training set", [&](const std::string& v) {
    a.epochs = static_cast<int>(c.to_int(v, 1));
  }, std::to_string(a.epochs));
  c.option("--batch", "N", "images per step", [&](const std::string& v) { a.batch = static_cast<int>(c.to_int(v, 1)); },
           std::to_string(a.batch));
  c.option("--lr", "X", "learning rate", [&](const std::string& v) { a.lr = static_cast<float>(c.to_number(v, 0, 10)); },
           num(kSgdLr) + " for sgd, " + num(adamw_defaults.lr) + " for adamw");
  c.option("--momentum", "X", "SGD momentum", [&](const std::string& v) {
    a.momentum = static_cast<float>(c.to_number(v, 0, 0.999));
  }, num(a.momentum));
  c.option("--wd", "X", "weight decay (SGD: L2, AdamW: decoupled)",
           [&](const std::string& v) { a.wd = static_cast<float>(c.to_number(v, 0, 1)); },
           num(kSgdWd) + " for sgd, " + num(adamw_defaults.weight_decay) + " for adamw");
  c.option("--optimizer", "NAME", "sgd or adamw", [&](const std::string& v) {
    a.optimizer = c.to_choice(v, {"sgd", "adamw"});
  }, a.optimizer);
  c.option("--state", "S", "optimizer storage: fp32, fp16, fp16-rn, bf16 or fp16-naive",
           [&](const std::string& v) { a.state = c.to_choice(v, {"fp32", "fp16", "fp16-rn", "bf16", "fp16-naive"}); },
           "the precision's");
  c.option("--seed", "N", "seed of the initial weights, shuffles and roundings", [&](const std::string& v) {
    a.seed = static_cast<uint64_t>(c.to_int(v, 0));
  }, std::to_string(a.seed));
  c.option("--hidden", "N,N,...", "hidden layer sizes", [&](const std::string& v) {
    a.hidden.clear();
    size_t start = 0;
    while (true) {
      const size_t comma = v.find(',', start);
      a.hidden.push_back(c.to_int(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start), 1));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }, "512,512");
  c.option("--threads", "N", "threads of every parallel region: the GEMM, storing large results, casts, Eigen",
           [&](const std::string& v) { a.threads = static_cast<int>(c.to_int(v, 1)); },
           "SCALIFY_NUM_THREADS, else every core");
  c.option("--limit", "N", "train on the first N images only", [&](const std::string& v) { a.limit = c.to_int(v, 1); },
           "all");
  c.option("--data", "DIR", "directory of the IDX files (.gz or not)", [&](const std::string& v) { a.data = v; },
           a.data);
  c.option("--json", "FILE", "write the settings and per-epoch results as JSON (checked before training)",
           [&](const std::string& v) { a.json = v; }, "none");
  c.option("--save", "FILE", "write a checkpoint after every epoch (checked before training)",
           [&](const std::string& v) { a.save = v; }, "none");
  c.option("--resume", "FILE", "continue the run of a --save checkpoint up to --epochs (same settings)",
           [&](const std::string& v) { a.resume = v; }, "none");
  c.option("--wire", "W", "under mpirun: the gradient all-reduce's wire format, fp32, fp16 or e5m2",
           [&](const std::string& v) { a.wire = c.to_choice(v, examples::wire_choices()); }, a.wire);
  c.flag("--dry-run", "print the settings and exit without loading data or training", &a.dry_run);
  c.parse(argc, argv);
  if (!a.json.empty()) c.check_output_file("--json", a.json);
  if (!a.save.empty()) c.check_output_file("--save", a.save);
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

double accuracy(nn::sequential& net, const nn::idx_dataset& d, examples::progress_bar& bar) {
  std::vector<int> order(static_cast<size_t>(d.size()));
  std::iota(order.begin(), order.end(), 0);
  long correct = 0;
  const size_t chunk = 1000;
  for (size_t b = 0; b < order.size(); b += chunk) {
    const size_t n = std::min(chunk, order.size() - b);
    bar.note("evaluating " + std::to_string(b) + "/" + std::to_string(order.size()) + " test images");
    const nn::Tensor logits = net.forward(gather(d.images, order, b, n));
    for (size_t i = 0; i < n; ++i) correct += argmax_row(logits, static_cast<Eigen::Index>(i)) == d.labels[b + i];
  }
  return static_cast<double>(correct) / static_cast<double>(order.size());
}

struct EpochResult {
  int epoch;
  double loss, train_acc, test_acc, seconds, images_per_second;
};

// ----------------------------------------------------------------------------
// Training

int main(int argc, char** argv) {
  const examples::ranks ranks(&argc, &argv);  // one process, or every rank of mpirun
  const Args args = parse_args(argc, argv);  // exits 2 on bad arguments or an unwritable --json
  const examples::thread_scope thread_scope("train_fashion_mnist", args.threads);  // every parallel region below
  const int threads = thread_scope.threads();  // in effect: --threads, SCALIFY_NUM_THREADS or every core
  const std::string cpu_path(scalify::to_string(scalify::active_cpu_path()));

  nn::idx_train_test data;
  if (!args.dry_run) {
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
  }
  const size_t n_available = args.dry_run ? 60000 : data.train.labels.size();
  const size_t n_train = args.limit > 0 ? std::min<size_t>(static_cast<size_t>(args.limit), n_available) : n_available;

  Precision prec = preset(args.precision);
  if (args.state == "fp32") prec.state = nn::state_config::fp32();
  if (args.state == "fp16") prec.state = nn::state_config{};
  if (args.state == "fp16-rn") prec.state = nn::state_config{.stochastic_master = false};
  if (args.state == "bf16") prec.state = nn::state_config{.format = nn::dtype::bfloat16};
  if (args.state == "fp16-naive") prec.state = nn::state_config::fp16_naive();
  nn::mlp_config mcfg;
  mcfg.sizes.push_back(args.dry_run ? 784 : data.train.images.cols());
  for (auto h : args.hidden) mcfg.sizes.push_back(h);
  mcfg.sizes.push_back(10);
  mcfg.linear = prec.linear;
  mcfg.seed = args.seed;
  nn::sequential net = nn::make_mlp(mcfg);

  // The optimizer, from its own defaults plus the flags given; the header
  // below prints the settings read back from it.
  std::unique_ptr<nn::sgd> sgd;
  std::unique_ptr<nn::adamw> adamw;
  std::string opt_text;
  if (args.optimizer == "adamw") {
    nn::adamw_config c;
    if (args.lr) c.lr = *args.lr;
    if (args.wd) c.weight_decay = *args.wd;
    adamw = std::make_unique<nn::adamw>(net.parameters(), c, prec.state);
    const nn::adamw_config& r = adamw->config();
    opt_text = "adamw lr " + num(r.lr) + " betas " + num(r.beta1) + "," + num(r.beta2) + " eps " + num(r.eps) +
               " wd " + num(r.weight_decay);
  } else {
    nn::sgd_config c{.lr = args.lr.value_or(kSgdLr), .momentum = args.momentum, .weight_decay = args.wd.value_or(kSgdWd)};
    sgd = std::make_unique<nn::sgd>(net.parameters(), c, prec.state);
    const nn::sgd_config& r = sgd->config();
    opt_text = "sgd lr " + num(r.lr) + " momentum " + num(r.momentum) + " wd " + num(r.weight_decay);
  }
  const nn::state_config& st = prec.state;
  const std::string state_text =
      std::string(nn::dtype_name(st.format)) + (st.dynamic_scale ? " scaled" : " unscaled") +
      (st.format == nn::dtype::float32 ? "" : (st.stochastic_master ? ", stochastic rounding" : ", nearest rounding"));

  std::printf("# precision %s: %s\n", args.precision.c_str(), net.name().c_str());
  std::printf("# optimizer %s; state %s\n", opt_text.c_str(), state_text.c_str());
  std::printf("# epochs %d, batch %d, seed %llu, threads %d, %zu training images%s\n", args.epochs, args.batch,
              static_cast<unsigned long long>(args.seed), threads, n_train, args.dry_run ? " (dry run)" : "");
  std::printf("# scalify %s, cpu path %s\n", SCALIFY_VERSION, cpu_path.c_str());
  std::printf("# data %s%s%s\n", args.data.c_str(), args.json.empty() ? "" : ", json ", args.json.c_str());
  if (ranks.size() > 1) {
    std::printf("# data parallel: %d processes, %d images each per step (global batch %d), %s gradients on the wire\n",
                ranks.size(), args.batch, args.batch * ranks.size(), args.wire.c_str());
  }
  if (args.dry_run) return 0;

  // What a resumed run must share with the run that saved the checkpoint.
  examples::run_settings settings;
  settings.add("precision", args.precision);
  settings.add("state", state_text);
  settings.add("optimizer", opt_text);
  settings.add("batch", std::to_string(args.batch));
  settings.add("seed", std::to_string(args.seed));
  settings.add("train_images", std::to_string(n_train));
  std::string sizes;
  for (auto n : mcfg.sizes) sizes += (sizes.empty() ? "" : ",") + std::to_string(n);
  settings.add("sizes", sizes);
  if (ranks.size() > 1) {
    settings.add("ranks", std::to_string(ranks.size()));
    settings.add("wire", args.wire);
  }

  std::mt19937_64 shuffle_rng(args.seed ^ 0x5eed'5eedull);
  int first_epoch = 1;
  if (!args.resume.empty()) {
    const auto meta = sgd ? examples::resume("train_fashion_mnist", args.resume, net.parameters(), *sgd, settings)
                          : examples::resume("train_fashion_mnist", args.resume, net.parameters(), *adamw, settings);
    first_epoch = static_cast<int>(examples::count("train_fashion_mnist", meta, "train.epoch")) + 1;
    scalify::io::restore_rng(shuffle_rng, examples::required("train_fashion_mnist", meta, "train.rng"), "train.rng");
    std::printf("# resumed from %s after epoch %d\n", args.resume.c_str(), first_epoch - 1);
    if (first_epoch > args.epochs) {
      std::fprintf(stderr, "train_fashion_mnist: --resume: the checkpoint is after epoch %d; --epochs %d leaves "
                   "nothing to train\n", first_epoch - 1, args.epochs);
      return 2;
    }
  }
  std::printf("%5s %8s %9s %9s %8s %9s\n", "epoch", "loss", "train_acc", "test_acc", "seconds", "images/s");
  std::fflush(stdout);

  examples::progress_bar bar;  // stderr, terminals only
  std::vector<int> order(n_train);
  std::vector<EpochResult> results;
  long skipped_reported = sgd ? sgd->skipped_steps() : adamw->skipped_steps();
  for (int epoch = first_epoch; epoch <= args.epochs; ++epoch) {
    std::iota(order.begin(), order.end(), 0);
    for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[shuffle_rng() % (i + 1)]);  // Fisher-Yates

    const auto start = std::chrono::steady_clock::now();
    bar.start("epoch " + std::to_string(epoch) + "/" + std::to_string(args.epochs), n_train,
              n_train * static_cast<size_t>(args.epochs - epoch));
    double loss_sum = 0.0;
    long correct = 0, batches = 0;
    std::vector<int> labels;
    const size_t global_batch = static_cast<size_t>(args.batch) * static_cast<size_t>(ranks.size());
    for (size_t b = 0; b < n_train; b += global_batch) {
      // This rank's share of the global batch [b, b + n_global): [b + lo, b + hi).
      const size_t n_global = std::min(global_batch, n_train - b);
      const size_t lo = n_global * static_cast<size_t>(ranks.rank()) / static_cast<size_t>(ranks.size());
      const size_t hi = n_global * static_cast<size_t>(ranks.rank() + 1) / static_cast<size_t>(ranks.size());
      const size_t n = hi - lo;
      net.zero_grad();
      float loss = 0.0f;
      if (n > 0) {
        const nn::Tensor x = gather(data.train.images, order, b + lo, n);
        labels.resize(n);
        for (size_t i = 0; i < n; ++i) labels[i] = data.train.labels[static_cast<size_t>(order[b + lo + i])];
        const nn::Tensor logits = net.forward(x);  // (B, 10)
        nn::Tensor dlogits;
        loss = nn::softmax_cross_entropy(&dlogits, logits, labels, prec.loss_grad_rescale);
        net.backward(dlogits);
        for (size_t i = 0; i < n; ++i) correct += argmax_row(logits, static_cast<Eigen::Index>(i)) == labels[i];
      }
      const double share = static_cast<double>(n) / static_cast<double>(n_global);
      ranks.reduce_gradients(net.parameters(), share, args.wire);  // the global batch's mean (no-op alone)
      if (sgd) {
        sgd->step();  // skips the step if a gradient is not finite (on every rank alike)
      } else {
        adamw->step();
      }

      loss_sum += ranks.sum(static_cast<double>(loss) * share);  // the global batch's mean loss
      ++batches;
      if (bar.enabled()) {
        char loss_text[32];
        std::snprintf(loss_text, sizeof loss_text, "loss %.4f", loss_sum / static_cast<double>(batches));
        bar.update(b + n_global, loss_text, b + n_global == n_train);
      }
    }
    correct = static_cast<long>(ranks.sum(static_cast<double>(correct)));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double test_acc = accuracy(net, data.test, bar);  // the bar stays up, with a note
    bar.clear();
    const EpochResult r{epoch, loss_sum / static_cast<double>(batches),
                        static_cast<double>(correct) / static_cast<double>(n_train), test_acc, seconds,
                        static_cast<double>(n_train) / seconds};
    results.push_back(r);
    std::printf("%5d %8.4f %9.4f %9.4f %8.2f %9.0f\n", epoch, r.loss, r.train_acc, r.test_acc, r.seconds,
                r.images_per_second);
    const long skipped = sgd ? sgd->skipped_steps() : adamw->skipped_steps();
    if (skipped != skipped_reported) {
      std::printf("# %ld steps skipped so far: a gradient was not finite\n", skipped);
      skipped_reported = skipped;
    }
    std::fflush(stdout);
    if (!args.save.empty() && ranks.root()) {
      const std::map<std::string, std::string> meta = {{"train.epoch", std::to_string(epoch)},
                                                       {"train.rng", scalify::io::rng_state(shuffle_rng)}};
      if (sgd) {
        examples::save("train_fashion_mnist", args.save, net.parameters(), *sgd, settings, meta);
      } else {
        examples::save("train_fashion_mnist", args.save, net.parameters(), *adamw, settings, meta);
      }
    }
  }

  if (!args.json.empty() && ranks.root()) {
    std::ofstream f(args.json);
    if (!f) {
      std::fprintf(stderr, "train_fashion_mnist: cannot write '%s'\n", args.json.c_str());
      return 1;
    }
    f.precision(17);  // losses and accuracies exactly (a resumed run is compared with an uninterrupted one)
    const float lr = sgd ? sgd->config().lr : adamw->config().lr;
    const float wd = sgd ? sgd->config().weight_decay : adamw->config().weight_decay;
    f << "{\"version\": \"" << SCALIFY_VERSION << "\", \"cpu_path\": \"" << cpu_path << "\", \"threads\": " << threads
      << ", \"precision\": \"" << args.precision << "\", \"state\": \"" << nn::dtype_name(st.format)
      << (st.dynamic_scale ? " scaled" : "")
      << (st.format != nn::dtype::float32 && !st.stochastic_master ? " nearest" : "")
      << "\", \"epochs\": " << args.epochs << ", \"batch\": " << args.batch
      << ", \"optimizer\": \"" << args.optimizer << "\", \"wd\": " << wd << ", \"lr\": " << lr
      << ", \"momentum\": " << args.momentum << ", \"seed\": " << args.seed
      << ", \"train_images\": " << n_train << ", \"skipped_steps\": " << skipped_reported
      << ", \"first_epoch\": " << first_epoch << ", \"ranks\": " << ranks.size() << ", \"wire\": \""
      << (ranks.size() > 1 ? args.wire : "none") << "\", \"sizes\": [";
    for (size_t i = 0; i < mcfg.sizes.size(); ++i) f << (i ? ", " : "") << mcfg.sizes[i];
    f << "], \"epoch_results\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      f << (i ? ", " : "") << "{\"epoch\": " << r.epoch << ", \"loss\": " << r.loss << ", \"train_accuracy\": " << r.train_acc
        << ", \"test_accuracy\": " << r.test_acc << ", \"seconds\": " << r.seconds
        << ", \"images_per_second\": " << r.images_per_second << "}";
    }
    f << "], \"test_accuracy\": " << results.back().test_acc << "}\n";
  }
  std::printf("test_accuracy=%.4f\n", results.back().test_acc);
  return 0;
}
