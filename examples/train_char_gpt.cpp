// Trains a character-level GPT (scalify/nn/gpt.hpp) on the text of Debian's
// `fortunes` package, in fp32, fp16, fp8 or naive fp8, and reports the
// validation loss in nats per character.
//
//   train_char_gpt                                   the defaults: fp8, a model that gets well below
//                                                    2 nats/char in a few minutes on 2 cores
//   train_char_gpt --precision fp32 --seed 2 --json run.json --sample 300
//
// Data: the files of --data (default /usr/share/games/fortunes; apt-get
// install fortunes) in sorted order, '%' separator lines removed; the last
// 10 % of the bytes is the validation split (nn/text.hpp). Each step draws
// --batch windows of --seq + 1 characters from the training split at random
// (std::mt19937_64 seeded by --seed), and trains on predicting every next
// character: AdamW (scaled fp16 state; fp32 state for fp32; unscaled fp16
// for fp8-naive), learning rate --lr with --warmup steps of linear warmup
// then cosine decay to lr/10 at --steps, gradients clipped to global norm 1.
// The validation loss is the mean over fixed, evenly spaced windows of the
// validation split (64 of them every --eval-every steps, 512 at the end).
//
// --threads N limits every parallel region (scalify's GEMM pool included).
// Same seed and threads, same result. On a terminal a progress bar (step,
// loss, tokens/s, ETA) is drawn on stderr; in a pipe, one line per
// evaluation. The last line of stdout is exactly `val_loss=<4 decimals>`.
// Exit code 1 if the data cannot be read, 2 for bad arguments.
//
// --save FILE writes a checkpoint (weights, AdamW state, step, batch RNG and
// the running train loss) at every evaluation and at the end, replacing FILE
// atomically; --stop-after N ends the run after step N (the schedule still
// spans --steps), as an interrupted job would. --resume FILE continues from
// such a checkpoint with the same settings (else a message and exit 2): the
// steps after it give exactly the losses of the uninterrupted run.
//
// Data parallel (built with MPI): under `mpirun -np P` every rank draws the
// same P x --batch windows per step and trains on its --batch of them; the
// gradients are averaged across the ranks (--wire fp32, fp16 or e5m2) before
// clipping and the step; rank 0 prints and writes --json and --save.
#include <algorithm>  // std::min, std::max
#include <chrono>     // std::chrono::steady_clock
#include <cmath>      // std::exp, std::isfinite
#include <cstdint>    // uint64_t
#include <cstdio>     // std::printf, std::fprintf, std::snprintf
#include <exception>  // std::exception
#include <fstream>    // std::ofstream
#include <random>     // std::mt19937_64
#include <string>     // std::string
#include <vector>     // std::vector

#include "cli.hpp"                        // examples::cli, progress_bar, thread_scope, num
#include "distributed.hpp"                // examples::ranks
#include "resume.hpp"                     // examples::save, resume, run_settings
#include "scalify/cpu.hpp"                // active_cpu_path
#include "scalify/nn/gpt.hpp"             // gpt, precision
#include "scalify/nn/loss.hpp"            // softmax_cross_entropy
#include "scalify/nn/optim.hpp"           // adamw, warmup_cosine, clip_grad_norm
#include "scalify/nn/text.hpp"            // load_char_corpus
#include "scalify/version.hpp"            // SCALIFY_VERSION

namespace nn = scalify::nn;
using examples::num;

namespace {

struct Args {
  std::string precision = "fp8";
  long steps = 2500;
  long batch = 16;
  long seq = 64;
  long layers = 3;
  long heads = 4;
  long dim = 128;
  double lr = 3e-3;
  long warmup = 100;
  uint64_t seed = 1;
  int threads = 0;
  long eval_every = 250;
  long sample = 0;
  std::string data = nn::kFortunesDir;
  std::string json;
  std::string save, resume;
  long stop_after = 0;  // 0: run to --steps
  std::string wire = "fp32";
  bool tied = false;
  bool dry_run = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  examples::cli c("train_char_gpt",
                  "Trains a character-level GPT on the fortunes text in fp32, fp16, fp8 or naive fp8;\n"
                  "the last line is val_loss=<nats per character>.");
  c.option("--precision", "P", "fp32, fp16, fp8 or fp8-naive",
           [&](const std::string& v) { a.precision = c.to_choice(v, {"fp32", "fp16", "fp8", "fp8-naive"}); }, a.precision);
  c.option("--steps", "N", "training steps", [&](const std::string& v) { a.steps = c.to_int(v, 1); }, num(a.steps));
  c.option("--batch", "B", "sequences per step", [&](const std::string& v) { a.batch = c.to_int(v, 1); }, num(a.batch));
  c.option("--seq", "T", "characters per sequence (the context)", [&](const std::string& v) { a.seq = c.to_int(v, 1); },
           num(a.seq));
  c.option("--layers", "L", "transformer blocks", [&](const std::string& v) { a.layers = c.to_int(v, 1); },
           num(a.layers));
  c.option("--heads", "H", "attention heads", [&](const std::string& v) { a.heads = c.to_int(v, 1); }, num(a.heads));
  c.option("--dim", "C", "channels (a multiple of --heads)", [&](const std::string& v) { a.dim = c.to_int(v, 1); },
           num(a.dim));
  c.option("--lr", "X", "peak learning rate (AdamW)", [&](const std::string& v) { a.lr = c.to_number(v, 1e-6, 1.0); },
           num(a.lr));
  c.option("--warmup", "N", "steps of linear warmup", [&](const std::string& v) { a.warmup = c.to_int(v, 0); },
           num(a.warmup));
  c.option("--seed", "S", "initialization and batch order", [&](const std::string& v) {
    a.seed = static_cast<uint64_t>(c.to_int(v, 0));
  }, num(static_cast<double>(a.seed)));
  c.option("--threads", "N", "threads of every parallel region (0: SCALIFY_NUM_THREADS, else every core)",
           [&](const std::string& v) { a.threads = static_cast<int>(c.to_int(v, 0)); }, "0");
  c.option("--eval-every", "N", "steps between validation losses", [&](const std::string& v) {
    a.eval_every = c.to_int(v, 1);
  }, num(a.eval_every));
  c.option("--sample", "N", "print N generated characters at the end", [&](const std::string& v) {
    a.sample = c.to_int(v, 0);
  }, "0");
  c.option("--data", "DIR", "the text files", [&](const std::string& v) { a.data = v; }, a.data);
  c.option("--json", "FILE", "write the settings and the losses as JSON (checked before training)",
           [&](const std::string& v) { a.json = v; }, "none");
  c.option("--save", "FILE", "write a checkpoint at every evaluation and at the end (checked before training)",
           [&](const std::string& v) { a.save = v; }, "none");
  c.option("--resume", "FILE", "continue the run of a --save checkpoint (same settings)",
           [&](const std::string& v) { a.resume = v; }, "none");
  c.option("--stop-after", "N", "stop after step N, as if interrupted (with --save: resume later)",
           [&](const std::string& v) { a.stop_after = c.to_int(v, 1); }, "--steps");
  c.option("--wire", "W", "under mpirun: the gradient all-reduce's wire format, fp32, fp16 or e5m2",
           [&](const std::string& v) { a.wire = c.to_choice(v, examples::wire_choices()); }, a.wire);
  c.flag("--tied", "the head is the token table (tied embeddings)", &a.tied);
  c.flag("--dry-run", "print the settings and exit", &a.dry_run);
  c.parse(argc, argv);
  if (a.dim % a.heads != 0) c.fail("--dim " + num(a.dim) + " is not a multiple of --heads " + num(a.heads));
  if (a.warmup > a.steps) c.fail("--warmup " + num(a.warmup) + " is more than --steps " + num(a.steps));
  if (a.stop_after > a.steps) c.fail("--stop-after " + num(a.stop_after) + " is more than --steps " + num(a.steps));
  if (!a.json.empty()) c.check_output_file("--json", a.json);
  if (!a.save.empty()) c.check_output_file("--save", a.save);
  return a;
}

/// Mean cross-entropy (nats per character) over `windows` evenly spaced
/// windows of seq + 1 characters of `ids`, in batches of `batch`.
double mean_loss(nn::gpt& model, const std::vector<int>& ids, long seq, long batch, long windows) {
  const long span = static_cast<long>(ids.size()) - seq - 1;
  if (span <= 0) return std::nan("");
  double sum = 0.0;
  long done = 0;
  std::vector<int> x, y;
  while (done < windows) {
    const long n = std::min(batch, windows - done);
    x.clear();
    y.clear();
    for (long b = 0; b < n; ++b) {
      const long start = (done + b) * span / std::max<long>(1, windows - 1);
      x.insert(x.end(), ids.begin() + start, ids.begin() + start + seq);
      y.insert(y.end(), ids.begin() + start + 1, ids.begin() + start + seq + 1);
    }
    const nn::Tensor logits = model.forward(x, n);
    sum += static_cast<double>(nn::softmax_cross_entropy(nullptr, logits, y)) * static_cast<double>(n);
    done += n;
  }
  return sum / static_cast<double>(windows);
}

/// N characters sampled from the model (temperature 1), starting after a newline.
std::string sample(nn::gpt& model, const nn::char_corpus& corpus, long n, long seq, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int> context = corpus.encode("\n");
  std::string out;
  for (long i = 0; i < n; ++i) {
    const long t = std::min<long>(static_cast<long>(context.size()), seq);
    const std::vector<int> window(context.end() - t, context.end());
    const nn::Tensor logits = model.forward(window, 1);
    const Eigen::VectorXf row = (logits.data().row(t - 1) * logits.scale()).transpose();
    const float m = row.maxCoeff();
    std::vector<double> p(static_cast<size_t>(row.size()));
    for (Eigen::Index j = 0; j < row.size(); ++j) p[static_cast<size_t>(j)] = std::exp(static_cast<double>(row(j) - m));
    std::discrete_distribution<int> pick(p.begin(), p.end());
    const int id = pick(gen);
    context.push_back(id);
    out += corpus.decode({id});
  }
  return out;
}

/// x for a JSON file, exactly (17 digits: a resumed run is compared with an
/// uninterrupted one); null if it is not finite (a diverged run's loss).
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

struct Eval {
  long step;
  double train_loss, val_loss, seconds;
};

}  // namespace

int main(int argc, char** argv) {
  const examples::ranks ranks(&argc, &argv);  // one process, or every rank of mpirun
  const Args args = parse_args(argc, argv);
  const examples::thread_scope thread_scope("train_char_gpt", args.threads);  // every parallel region below
  const int threads = thread_scope.threads();  // in effect: --threads, SCALIFY_NUM_THREADS or every core
  const std::string cpu_path(scalify::to_string(scalify::active_cpu_path()));
  const nn::precision prec = nn::parse_precision(args.precision);

  nn::char_corpus corpus;
  try {
    corpus = nn::load_char_corpus(args.data);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_char_gpt: %s\n", e.what());
    return 1;
  }
  if (static_cast<long>(corpus.val.size()) <= args.seq + 1 || static_cast<long>(corpus.train.size()) <= args.seq + 1) {
    std::fprintf(stderr, "train_char_gpt: the text in %s is too short for --seq %ld\n", args.data.c_str(), args.seq);
    return 1;
  }

  nn::gpt model({.vocab = corpus.vocab_size(), .context = args.seq, .layers = args.layers, .heads = args.heads,
                 .dim = args.dim, .linear = nn::linear_config_for(prec), .attention = nn::attention_config_for(prec),
                 .tie_head = args.tied, .seed = args.seed});
  const nn::state_config state = nn::state_config_for(prec);
  nn::adamw opt(model.parameters(), {.lr = static_cast<float>(args.lr), .weight_decay = 0.0f}, state);
  const nn::warmup_cosine schedule{.peak = static_cast<float>(args.lr), .min_lr = static_cast<float>(args.lr / 10),
                                   .warmup = args.warmup, .total = args.steps};
  size_t n_params = 0;
  for (const auto& p : model.parameters()) n_params += static_cast<size_t>(p.value->size());

  std::printf("# precision %s: %s, %zu parameters\n", nn::precision_name(prec), model.name().c_str(), n_params);
  std::printf("# adamw lr %s (warmup %ld, cosine to %s), state %s%s, clip 1\n", num(args.lr).c_str(), args.warmup,
              num(args.lr / 10).c_str(), nn::dtype_name(state.format), state.dynamic_scale ? " scaled" : " unscaled");
  std::printf("# steps %ld, batch %ld, seq %ld, seed %llu, threads %d\n", args.steps, args.batch, args.seq,
              static_cast<unsigned long long>(args.seed), threads);
  std::printf("# data %s: %zu files, %zu train / %zu validation characters, vocabulary %d\n", args.data.c_str(),
              corpus.files.size(), corpus.train.size(), corpus.val.size(), corpus.vocab_size());
  std::printf("# scalify %s, cpu path %s\n", SCALIFY_VERSION, cpu_path.c_str());
  if (ranks.size() > 1) {
    std::printf("# data parallel: %d processes, %ld sequences each per step (global batch %ld), %s gradients on the wire\n",
                ranks.size(), args.batch, args.batch * ranks.size(), args.wire.c_str());
  }
  if (args.dry_run) return 0;

  // What a resumed run must share with the run that saved the checkpoint.
  examples::run_settings settings;
  settings.add("precision", nn::precision_name(prec));
  settings.add("model", model.name());
  settings.add("steps", num(args.steps));
  settings.add("batch", num(args.batch));
  settings.add("lr", examples::hex(args.lr));
  settings.add("warmup", num(args.warmup));
  settings.add("seed", std::to_string(args.seed));
  settings.add("eval_every", num(args.eval_every));
  settings.add("text", std::to_string(corpus.train.size()) + "+" + std::to_string(corpus.val.size()));
  if (ranks.size() > 1) {
    settings.add("ranks", std::to_string(ranks.size()));
    settings.add("wire", args.wire);
  }

  std::mt19937_64 gen(args.seed ^ 0xba7c'4e5ull);
  long first_step = 0;
  double loss_sum = 0.0;
  long loss_count = 0;
  if (!args.resume.empty()) {
    const auto meta = examples::resume("train_char_gpt", args.resume, model.parameters(), opt, settings);
    first_step = examples::count("train_char_gpt", meta, "train.step");
    scalify::io::restore_rng(gen, examples::required("train_char_gpt", meta, "train.rng"), "train.rng");
    loss_sum = examples::from_hex(examples::required("train_char_gpt", meta, "train.loss_sum"));
    loss_count = examples::count("train_char_gpt", meta, "train.loss_count");
    std::printf("# resumed from %s after step %ld\n", args.resume.c_str(), first_step);
    if (first_step >= args.steps) {
      std::fprintf(stderr, "train_char_gpt: --resume: the checkpoint is after step %ld of %ld: nothing to train\n",
                   first_step, args.steps);
      return 2;
    }
  }
  const auto save = [&](long steps_done) {
    if (args.save.empty() || !ranks.root()) return;
    examples::save("train_char_gpt", args.save, model.parameters(), opt, settings,
                   {{"train.step", std::to_string(steps_done)},
                    {"train.rng", scalify::io::rng_state(gen)},
                    {"train.loss_sum", examples::hex(loss_sum)},
                    {"train.loss_count", std::to_string(loss_count)}});
  };
  const long last_step = args.stop_after > 0 ? args.stop_after : args.steps;
  std::printf("%6s %10s %9s %9s %9s\n", "step", "train_loss", "val_loss", "tokens/s", "seconds");
  std::fflush(stdout);

  std::uniform_int_distribution<long> offset(0, static_cast<long>(corpus.train.size()) - args.seq - 2);
  const size_t tokens_per_step = static_cast<size_t>(args.batch * args.seq);
  examples::progress_bar bar;
  bar.start("training", static_cast<size_t>(last_step - first_step) * tokens_per_step, 0, "tok/s");
  const auto start = std::chrono::steady_clock::now();
  std::vector<Eval> evals;
  std::vector<int> x, y;
  for (long step = first_step; step < last_step; ++step) {
    x.clear();
    y.clear();
    for (long b = 0; b < args.batch * ranks.size(); ++b) {  // the global batch; this rank's --batch of it
      const long o = offset(gen);
      if (b / args.batch != ranks.rank()) continue;
      x.insert(x.end(), corpus.train.begin() + o, corpus.train.begin() + o + args.seq);
      y.insert(y.end(), corpus.train.begin() + o + 1, corpus.train.begin() + o + args.seq + 1);
    }
    model.zero_grad();
    const nn::Tensor logits = model.forward(x, args.batch);
    nn::Tensor dlogits;
    const double share = 1.0 / ranks.size();
    const float loss = static_cast<float>(
        ranks.sum(static_cast<double>(nn::softmax_cross_entropy(&dlogits, logits, y)) * share));
    model.backward(dlogits);
    ranks.reduce_gradients(model.parameters(), share, args.wire);  // the global batch's mean (no-op alone)
    nn::clip_grad_norm(model.parameters(), 1.0);
    opt.config().lr = schedule.at(step);
    opt.step();  // skipped if a gradient is not finite
    if (std::isfinite(loss)) {
      loss_sum += loss;
      ++loss_count;
    }
    if (bar.enabled()) {
      char text[64];
      std::snprintf(text, sizeof text, "step %ld/%ld  loss %.4f", step + 1, args.steps, static_cast<double>(loss));
      bar.update(static_cast<size_t>(step + 1 - first_step) * tokens_per_step, text, step + 1 == last_step);
    }
    // Evaluations at every --eval-every steps and at the end; a run stopped by
    // --stop-after between them evaluates too, but keeps the running train loss
    // (saved in the checkpoint), so a resumed run reports what an uninterrupted one does.
    const bool boundary = (step + 1) % args.eval_every == 0 || step + 1 == args.steps;
    if (boundary || step + 1 == last_step) {
      const bool last = step + 1 == args.steps;
      if (bar.enabled()) bar.note("validation");
      const double val = mean_loss(model, corpus.val, args.seq, args.batch, last ? 512 : 64);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double train = loss_count > 0 ? loss_sum / static_cast<double>(loss_count) : std::nan("");
      evals.push_back({step + 1, train, val, seconds});
      bar.clear();
      std::printf("%6ld %10.4f %9.4f %9.0f %9.1f\n", step + 1, train, val,
                  static_cast<double>(step + 1 - first_step) * static_cast<double>(tokens_per_step) / seconds, seconds);
      std::fflush(stdout);
      if (boundary) {
        loss_sum = 0.0;
        loss_count = 0;
      }
      save(step + 1);
    }
  }
  if (last_step < args.steps) std::printf("# stopped after step %ld of %ld (--stop-after)\n", last_step, args.steps);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double tokens_per_second =
      static_cast<double>(last_step - first_step) * static_cast<double>(tokens_per_step) / seconds;
  if (opt.skipped_steps() > 0) std::printf("# %ld steps skipped: a gradient was not finite\n", opt.skipped_steps());
  if (args.sample > 0) {
    std::printf("# sample:\n%s\n# end of sample\n", sample(model, corpus, args.sample, args.seq, args.seed).c_str());
  }
  if (!args.json.empty() && ranks.root()) {
    std::ofstream f(args.json);
    if (!f) {
      std::fprintf(stderr, "train_char_gpt: cannot write '%s'\n", args.json.c_str());
      return 1;
    }
    f << "{\"version\": \"" << SCALIFY_VERSION << "\", \"cpu_path\": \"" << cpu_path << "\", \"threads\": " << threads
      << ", \"precision\": \"" << nn::precision_name(prec) << "\", \"steps\": " << args.steps
      << ", \"batch\": " << args.batch << ", \"seq\": " << args.seq << ", \"layers\": " << args.layers
      << ", \"heads\": " << args.heads << ", \"dim\": " << args.dim
      << ", \"tied\": " << (args.tied ? "true" : "false") << ", \"lr\": " << args.lr
      << ", \"warmup\": " << args.warmup << ", \"first_step\": " << first_step << ", \"ranks\": " << ranks.size()
      << ", \"wire\": \"" << (ranks.size() > 1 ? args.wire : "none") << "\""
      << ", \"seed\": " << args.seed << ", \"parameters\": " << n_params
      << ", \"skipped_steps\": " << opt.skipped_steps() << ", \"seconds\": " << seconds
      << ", \"tokens_per_second\": " << tokens_per_second << ", \"evals\": [";
    for (size_t i = 0; i < evals.size(); ++i) {
      f << (i ? ", " : "") << "{\"step\": " << evals[i].step
        << ", \"train_loss\": " << json_number(evals[i].train_loss)
        << ", \"val_loss\": " << json_number(evals[i].val_loss) << ", \"seconds\": " << evals[i].seconds << "}";
    }
    f << "], \"val_loss\": " << json_number(evals.back().val_loss) << "}\n";
  }
  std::printf("val_loss=%.4f\n", evals.back().val_loss);
  return 0;
}
