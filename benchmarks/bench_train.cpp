// scalify benchmark: one training step of an MLP 784-1024-1024-10, batch 256:
// zero_grad, forward, softmax cross-entropy, backward, SGD step.
//
//   BM_TrainStep/fp32   float32 matmuls, float32 optimizer
//   BM_TrainStep/fp16   scaled float16 matmul operands and optimizer state
//   BM_TrainStep/fp8    e4m3fn forward, e5m2 gradients, scaled float16 optimizer state
//   BM_TrainStep/fp8_state32  fp8's matmuls with fp32's optimizer (separates the two costs)
//   BM_TrainStepAlternating/fp16, fp8   the same steps alternated with fp32's
//                             in rounds of 5 (a shared machine's noise falls on both)
//   BM_SgdStep/fp32, fp16     the optimizer's step alone, on the same MLP's
//                             1.86 M parameters (float32 or scaled float16 state)
//
// and one step of train_char_gpt's default GPT (3 blocks, dim 128, 4 heads,
// batch 16 x 64 characters, vocabulary 114, AdamW, gradient clipping) on
// random tokens: BM_GptStep/fp32, fp16, fp8, fp8_naive, with `tokens/s` and
// `vs_fp32` as above.
//
// The fp16 and fp8 rows report `vs_fp32`: their step time over fp32's, both
// measured in this process in wall time (best step of the run: the GEMM's
// worker threads count too). The matmuls go through scalify::matmul, i.e.
// scalify::gemm on the active CPU path (on AVX2 every format is widened to
// float32 while packing and runs the same float32 micro-kernel; the float8
// speed-up needs the AVX-512 BF16 kernel). `GFLOP/s` counts the 3 matmuls per Linear (6 * B * I * O).
//
//   build/benchmarks/bench_train
#include <benchmark/benchmark.h>

#include <algorithm>  // std::sort, std::min
#include <chrono>     // std::chrono::steady_clock

#include <map>     // std::map
#include <random>  // std::mt19937
#include <string>  // std::string
#include <vector>  // std::vector

#include "scalify/nn/gpt.hpp"
#include "scalify/nn/loss.hpp"
#include "scalify/nn/mlp.hpp"
#include "scalify/nn/optim.hpp"

#include "context.hpp"  // scalify_bench::run

namespace {

namespace nn = scalify::nn;

constexpr int kBatch = 256;
const std::vector<Eigen::Index> kSizes = {784, 1024, 1024, 10};

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::map<std::string, double>& best_step() {
  static std::map<std::string, double> best;
  return best;
}

/// One model, optimizer and batch of the MLP benchmarks; step() runs one
/// training step and returns its wall time in seconds.
class trainer {
 public:
  trainer(nn::linear_config lcfg, nn::state_config scfg)
      : net_(nn::make_mlp({.sizes = kSizes, .linear = lcfg, .seed = 1})),
        opt_(net_.parameters(), {.lr = 0.01f, .momentum = 0.9f}, scfg),
        labels_(kBatch) {
    std::mt19937 gen(3);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    nn::Matrix images(kBatch, kSizes.front());
    for (Eigen::Index i = 0; i < images.size(); ++i) images.data()[i] = pixel(gen);
    x_ = nn::Tensor(images, 1.0f);
    for (int i = 0; i < kBatch; ++i) labels_[static_cast<size_t>(i)] = i % 10;
  }
  double step() {
    const double t0 = wall_seconds();
    net_.zero_grad();
    const nn::Tensor logits = net_.forward(x_);
    nn::Tensor dlogits;
    const float loss = nn::softmax_cross_entropy(&dlogits, logits, labels_);
    net_.backward(dlogits);
    opt_.step();
    benchmark::DoNotOptimize(loss);
    return wall_seconds() - t0;
  }

 private:
  nn::sequential net_;
  nn::sgd opt_;
  nn::Tensor x_;
  std::vector<int> labels_;
};

double mlp_flops() {
  double flops = 0.0;
  for (size_t i = 0; i + 1 < kSizes.size(); ++i) flops += 6.0 * kBatch * static_cast<double>(kSizes[i] * kSizes[i + 1]);
  return flops;
}

void BM_TrainStep(benchmark::State& state, const std::string& name, nn::linear_config lcfg, nn::state_config scfg) {
  trainer t(lcfg, scfg);
  double best = 1e30;
  for (auto _ : state) best = std::min(best, t.step());
  state.counters["GFLOP/s"] = benchmark::Counter(mlp_flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_ms"] = best * 1e3;
  best_step()[name] = best;
  if (name != "fp32" && best_step().count("fp32") != 0) state.counters["vs_fp32"] = best / best_step()["fp32"];
}

/// The same steps of fp32 and of another precision, alternated in rounds of
/// 5 steps each for the whole run, so a neighbour's load on a shared machine
/// falls on both: `vs_fp32` is the ratio of the two best steps, `median_vs_fp32`
/// the median over the rounds of the ratio of the rounds' best steps. One
/// iteration is one round of each.
void BM_TrainStepAlternating(benchmark::State& state, nn::linear_config lcfg, nn::state_config scfg) {
  trainer base(nn::linear_config::fp32(), nn::state_config::fp32()), other(lcfg, scfg);
  constexpr int kRound = 5;
  double best_base = 1e30, best_other = 1e30;
  std::vector<double> ratios;
  for (auto _ : state) {
    double round_base = 1e30, round_other = 1e30;
    for (int i = 0; i < kRound; ++i) round_base = std::min(round_base, base.step());
    for (int i = 0; i < kRound; ++i) round_other = std::min(round_other, other.step());
    best_base = std::min(best_base, round_base);
    best_other = std::min(best_other, round_other);
    ratios.push_back(round_other / round_base);
  }
  std::sort(ratios.begin(), ratios.end());
  state.counters["fp32_best_ms"] = best_base * 1e3;
  state.counters["best_ms"] = best_other * 1e3;
  state.counters["vs_fp32"] = best_other / best_base;
  state.counters["median_vs_fp32"] = ratios.empty() ? 0.0 : ratios[ratios.size() / 2];
}

// fp32 first: the other rows divide by its time.
BENCHMARK_CAPTURE(BM_TrainStep, fp32, std::string("fp32"), nn::linear_config::fp32(), nn::state_config::fp32())
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, fp16, std::string("fp16"), nn::linear_config::fp16(), nn::state_config{})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, fp8, std::string("fp8"), nn::linear_config::fp8(), nn::state_config{})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStep, fp8_state32, std::string("fp8_state32"), nn::linear_config::fp8(),
                  nn::state_config::fp32())
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStepAlternating, fp16, nn::linear_config::fp16(), nn::state_config{})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_TrainStepAlternating, fp8, nn::linear_config::fp8(), nn::state_config{})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_SgdStep(benchmark::State& state, const std::string& name, nn::state_config scfg) {
  nn::sequential net = nn::make_mlp({.sizes = kSizes, .linear = nn::linear_config::fp32(), .seed = 1});
  nn::sgd opt(net.parameters(), {.lr = 1e-4f, .momentum = 0.9f}, scfg);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  nn::Matrix images(kBatch, kSizes.front());
  for (Eigen::Index i = 0; i < images.size(); ++i) images.data()[i] = pixel(gen);
  std::vector<int> labels(kBatch);
  for (int i = 0; i < kBatch; ++i) labels[static_cast<size_t>(i)] = i % 10;
  net.zero_grad();
  nn::Tensor dlogits;
  nn::softmax_cross_entropy(&dlogits, net.forward(nn::Tensor(images, 1.0f)), labels);
  net.backward(dlogits);  // the gradients every step reads
  double best = 1e30, params = 0.0;
  for (const nn::param_ref& p : net.parameters()) params += static_cast<double>(p.value->size());
  for (auto _ : state) {
    const double t0 = wall_seconds();
    benchmark::DoNotOptimize(opt.step());
    best = std::min(best, wall_seconds() - t0);
  }
  state.counters["Mparams/s"] = benchmark::Counter(params * 1e-6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_ms"] = best * 1e3;
  const std::string key = "sgd_" + name;
  best_step()[key] = best;
  if (name != "fp32" && best_step().count("sgd_fp32") != 0) state.counters["vs_fp32"] = best / best_step()["sgd_fp32"];
}

BENCHMARK_CAPTURE(BM_SgdStep, fp32, std::string("fp32"), nn::state_config::fp32())
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_SgdStep, fp16, std::string("fp16"), nn::state_config{})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_GptStep(benchmark::State& state, const std::string& name, nn::precision prec) {
  constexpr Eigen::Index kB = 16, kT = 64, kVocab = 114;
  nn::gpt model({.vocab = kVocab, .context = kT, .layers = 3, .heads = 4, .dim = 128,
                 .linear = nn::linear_config_for(prec), .attention = nn::attention_config_for(prec), .seed = 1});
  nn::adamw opt(model.parameters(), {.lr = 1e-3f, .weight_decay = 0.0f}, nn::state_config_for(prec));
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> token(0, static_cast<int>(kVocab) - 1);
  std::vector<int> x(static_cast<size_t>(kB * kT)), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = token(gen);
    y[i] = token(gen);
  }
  double best = 1e30;
  for (auto _ : state) {
    const double t0 = wall_seconds();
    model.zero_grad();
    const nn::Tensor logits = model.forward(x, kB);
    nn::Tensor dlogits;
    const float loss = nn::softmax_cross_entropy(&dlogits, logits, y);
    model.backward(dlogits);
    nn::clip_grad_norm(model.parameters(), 1.0);
    opt.step();
    benchmark::DoNotOptimize(loss);
    best = std::min(best, wall_seconds() - t0);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kB * kT), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_ms"] = best * 1e3;
  const std::string key = "gpt_" + name;
  best_step()[key] = best;
  if (name != "fp32" && best_step().count("gpt_fp32") != 0) state.counters["vs_fp32"] = best / best_step()["gpt_fp32"];
}

BENCHMARK_CAPTURE(BM_GptStep, fp32, std::string("fp32"), nn::precision::fp32)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_GptStep, fp16, std::string("fp16"), nn::precision::fp16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_GptStep, fp8, std::string("fp8"), nn::precision::fp8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_GptStep, fp8_naive, std::string("fp8_naive"), nn::precision::fp8_naive)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  return scalify_bench::run(argc, argv);
}
