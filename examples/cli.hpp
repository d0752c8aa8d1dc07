// The command line of the example programs: options, --help, errors, a
// progress bar, and the thread limit of --threads. Not part of the library
// (examples/ only).
//
//   cli args("prog", "what it does");
//   args.option("--epochs", "N", "epochs to train", [&](const std::string& v) { epochs = args.to_int(v, 1); }, "5");
//   args.flag("--dry-run", "print the settings and exit", &dry_run);
//   args.parse(argc, argv);
//
// - `--flag value` and `--flag=value` are both accepted;
// - `--help` / `-h` prints the options and their defaults on stdout, exit 0;
// - an unknown flag, a missing or bad value: a message and a usage line on
//   stderr, exit 2 (fail() does the same for checks made after parsing).
//
// progress_bar draws one line on stderr, redrawn in place with '\r', only when
// stderr is a terminal; in a pipe or a file it prints nothing (no '\r' spam).
#ifndef SCALIFY_EXAMPLES_CLI_HPP_
#define SCALIFY_EXAMPLES_CLI_HPP_

#include <unistd.h>  // isatty, access

#include <cerrno>      // errno
#include <chrono>      // std::chrono::steady_clock
#include <cstdio>      // std::fprintf, std::snprintf
#include <cstdlib>     // std::exit, std::strtol, std::strtod, std::getenv
#include <cstring>     // std::strcmp
#include <filesystem>  // std::filesystem::path, exists, is_directory
#include <functional>  // std::function
#include <stdexcept>   // std::invalid_argument
#include <string>      // std::string
#include <system_error>  // std::error_code
#include <utility>     // std::move
#include <vector>      // std::vector

#include <Eigen/Core>                     // Eigen::setNbThreads
#include "scalify/core/config_scope.hpp"  // config_scope, current_config
#include "scalify/kernels/thread_pool.hpp"  // thread_limit

namespace examples {

/// `x` printed like printf's %g: 0.05, 1e-08, 5.
inline std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

class cli {
 public:
  cli(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

  /// An option with a value. `default_text` is shown by --help ("" for none).
  void option(std::string name, std::string value_name, std::string help, std::function<void(const std::string&)> set,
              std::string default_text = "") {
    options_.push_back({std::move(name), std::move(value_name), std::move(help), std::move(default_text), std::move(set),
                        nullptr});
  }
  /// An option without a value: sets *target to true.
  void flag(std::string name, std::string help, bool* target) {
    options_.push_back({std::move(name), "", std::move(help), "", nullptr, target});
  }

  /// Parses the arguments; exits 0 after --help, 2 on an error.
  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        print_help();
        std::exit(0);
      }
      std::string value;
      bool has_value = false;
      if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg.resize(eq);
        has_value = true;
      }
      const opt* o = find(arg);
      if (o == nullptr) fail((arg.rfind('-', 0) == 0 ? "unknown option '" : "unexpected argument '") + arg + "'");
      current_ = o->name;
      if (o->target != nullptr) {
        if (has_value) fail(o->name + " takes no value");
        *o->target = true;
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) fail("missing value after " + o->name);
        value = argv[++i];
      }
      o->set(value);
    }
    current_.clear();
  }

  /// An error in the arguments: message and usage line on stderr, exit 2.
  [[noreturn]] void fail(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\nusage: %s [options]   (%s --help lists them)\n", program_.c_str(), message.c_str(),
                 program_.c_str(), program_.c_str());
    std::exit(2);
  }

  /// The value of the option being parsed as an integer >= min (else fail()).
  long to_int(const std::string& v, long min) const {
    char* end = nullptr;
    errno = 0;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < min) {
      fail(current_ + " wants an integer >= " + num(static_cast<double>(min)) + ", got '" + v + "'");
    }
    return x;
  }
  /// The value of the option being parsed as a number in [min, max] (else fail()).
  double to_number(const std::string& v, double min, double max) const {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= min && x <= max)) {
      fail(current_ + " wants a number in [" + num(min) + ", " + num(max) + "], got '" + v + "'");
    }
    return x;
  }
  /// The value of the option being parsed, which must be one of `choices`.
  std::string to_choice(const std::string& v, const std::vector<std::string>& choices) const {
    for (const auto& c : choices) {
      if (v == c) return v;
    }
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    fail(current_ + " wants one of " + list + ", got '" + v + "'");
  }

  /// Fails (exit 2) unless a file can be created or overwritten at `path`:
  /// call it before long work, so a typo in a directory costs nothing.
  void check_output_file(const std::string& flag, const std::string& path) const {
    namespace fs = std::filesystem;
    const fs::path p(path);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::error_code ec;
    const std::string what = flag + " '" + path + "': ";
    if (p.filename().empty()) fail(what + "not a file name");
    if (!fs::exists(dir, ec)) fail(what + "directory '" + dir.string() + "' does not exist");
    if (!fs::is_directory(dir, ec)) fail(what + "'" + dir.string() + "' is not a directory");
    if (fs::is_directory(p, ec)) fail(what + "is a directory");
    const bool exists = fs::exists(p, ec);
    if (access(exists ? p.c_str() : dir.c_str(), W_OK) != 0) {
      fail(what + "cannot write " + (exists ? "the file" : "into '" + dir.string() + "'") + " (permission denied)");
    }
  }

 private:
  struct opt {
    std::string name, value_name, help, default_text;
    std::function<void(const std::string&)> set;
    bool* target;
  };
  const opt* find(const std::string& name) const {
    for (const auto& o : options_) {
      if (o.name == name) return &o;
    }
    return nullptr;
  }
  void print_help() const {
    std::printf("usage: %s [options]\n\n%s\n\noptions%s:\n", program_.c_str(), summary_.c_str(),
                options_.empty() ? "" : " (--name value or --name=value)");
    for (const auto& o : options_) {
      std::string left = "  " + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
      if (left.size() < 26) left.resize(26, ' ');
      std::printf("%s %s%s\n", left.c_str(), o.help.c_str(),
                  o.default_text.empty() ? "" : (" (default " + o.default_text + ")").c_str());
    }
    std::printf("  %-24s %s\n", "-h, --help", "this help");
  }

  std::string program_, summary_, current_;
  std::vector<opt> options_;
};

/// For its lifetime, limits every parallel region of scalify (GEMM pool,
/// evaluation, casts) and Eigen's to `threads` (0: the library's default,
/// SCALIFY_NUM_THREADS if set, else every core). threads() is the limit in
/// force. An invalid SCALIFY_NUM_THREADS: a message naming `program` on
/// stderr, exit 2.
class thread_scope {
 public:
  thread_scope(const char* program, int threads) : scope_(with_threads(threads)) {
    try {
      threads_ = scalify::thread_limit();
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "%s: %s\n", program, e.what());
      std::exit(2);
    }
    Eigen::setNbThreads(threads_);
  }
  int threads() const { return threads_; }

 private:
  static scalify::scalify_config with_threads(int threads) {
    scalify::scalify_config c = scalify::current_config();
    c.threads = threads;
    return c;
  }
  scalify::config_scope scope_;
  int threads_ = 1;
};

/// "1:05" or "1:02:03" for a number of seconds.
inline std::string clock_time(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

/// A one-line progress bar on stderr with rate and ETA, redrawn at most ~10
/// times a second, only if stderr is a terminal (and TERM is not "dumb").
///
///   epoch 2/5 [########............] 24320/60000  loss 0.4123  2890 img/s  ETA 0:12, run 1:05
class progress_bar {
 public:
  progress_bar() {
    const char* term = std::getenv("TERM");
    enabled_ = isatty(STDERR_FILENO) != 0 && !(term != nullptr && std::strcmp(term, "dumb") == 0);
  }
  bool enabled() const { return enabled_; }

  /// Starts timing a phase of `total` items (an epoch); `later` items follow
  /// in later phases (the other epochs), for the ETA of the whole run. The
  /// rate is shown as items per second with `unit` ("img/s").
  void start(std::string label, size_t total, size_t later = 0, std::string unit = "img/s") {
    label_ = std::move(label);
    unit_ = std::move(unit);
    total_ = total;
    later_ = later;
    start_ = std::chrono::steady_clock::now();
    last_ = {};
  }
  /// `done` of total items; `extra` follows the counts (e.g. the loss). Rate and
  /// ETA come from the time since start(). force: draw even if drawn < 0.1 s ago.
  void update(size_t done, const std::string& extra, bool force = false) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && last_ != std::chrono::steady_clock::time_point{} && now - last_ < std::chrono::milliseconds(100)) {
      return;
    }
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const int width = 20;
    const int filled = total_ ? static_cast<int>(width * done / total_) : width;
    const std::string bar = std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.');
    std::string line = label_ + " [" + bar + "] " + std::to_string(done) + "/" + std::to_string(total_) + "  " + extra;
    if (rate > 0) {
      line += "  " + std::to_string(static_cast<long>(rate)) + " " + unit_;
      line += done < total_ ? "  ETA " + clock_time(static_cast<double>(total_ - done) / rate)
                            : "  took " + clock_time(elapsed);
      if (later_ > 0) line += ", run " + clock_time(static_cast<double>(total_ - done + later_) / rate);
    }
    status_ = line;
    draw("");
  }
  /// Shows `note` after the last drawn line (e.g. "evaluating 2000/10000"), so
  /// the bar stays visible during work that is not counted.
  void note(const std::string& note) {
    if (enabled_) draw("  | " + note);
  }
  /// Erases the line (before printing a result on stdout).
  void clear() {
    if (!enabled_) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
  }

 private:
  void draw(const std::string& suffix) {
    std::fprintf(stderr, "\r%s%s\x1b[K", status_.c_str(), suffix.c_str());
    std::fflush(stderr);
  }

  bool enabled_ = false;
  std::string label_, status_, unit_ = "img/s";
  size_t total_ = 0, later_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace examples

#endif  // SCALIFY_EXAMPLES_CLI_HPP_
