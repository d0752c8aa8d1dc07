// The examples' --save / --resume: checkpoints (scalify/io/checkpoint.hpp)
// plus the settings a resumed run must share with the run that saved it.
//
//   examples::run_settings s;  s.add("precision", ...); ...
//   save(program, path, params, opt, s, {{"train.epoch", "3"}, ...})
//   auto meta = resume(program, path, params, opt, s);   // exits on a bad file or other settings
//   hex(x) / from_hex(text)    doubles in metadata, exactly
#pragma once

#include <cstdio>     // std::fprintf, std::snprintf
#include <cstdlib>    // std::exit, std::strtod, std::strtol
#include <exception>  // std::exception
#include <map>        // std::map
#include <string>     // std::string
#include <vector>     // std::vector

#include "scalify/io/checkpoint.hpp"  // save_checkpoint, load_checkpoint

namespace examples {

/// The settings that must be equal to resume ("key=value" pairs, in order).
class run_settings {
 public:
  void add(const std::string& key, const std::string& value) { text_ += (text_.empty() ? "" : " ") + key + "=" + value; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

/// `x` exactly, as C's %a ("0x1.8p+1"); from_hex reads it back.
inline std::string hex(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", x);
  return buf;
}
inline double from_hex(const std::string& s) { return std::strtod(s.c_str(), nullptr); }

inline constexpr const char* kSettingsKey = "example.settings";

/// Writes a checkpoint of `params` and `opt` with the run's settings and
/// `metadata`; on failure a message on stderr and exit 1.
template <class Optimizer>
void save(const char* program, const std::string& path, const std::vector<scalify::nn::param_ref>& params,
          Optimizer& opt, const run_settings& settings, std::map<std::string, std::string> metadata) {
  metadata[kSettingsKey] = settings.text();
  try {
    scalify::io::save_checkpoint(path, params, opt, metadata);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: --save: %s\n", program, e.what());
    std::exit(1);
  }
}

/// Restores `params` and `opt` from checkpoint `path` and returns its
/// metadata. A file that cannot be read or does not fit the model: message,
/// exit 1. A checkpoint written with other settings: message naming both,
/// exit 2 (checked before anything is loaded).
template <class Optimizer>
std::map<std::string, std::string> resume(const char* program, const std::string& path,
                                          const std::vector<scalify::nn::param_ref>& params, Optimizer& opt,
                                          const run_settings& settings) {
  try {
    const auto file = scalify::io::safetensors_file::open(path);  // opened and checked once
    const std::string saved = file.metadata(kSettingsKey, "(none)");
    if (saved != settings.text()) {
      std::fprintf(stderr,
                   "%s: --resume '%s' was written with other settings; resume with the same ones.\n"
                   "  checkpoint: %s\n  this run:   %s\n",
                   program, path.c_str(), saved.c_str(), settings.text().c_str());
      std::exit(2);
    }
    return scalify::io::load_checkpoint(file, params, opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: --resume: %s\n", program, e.what());
    std::exit(1);
  }
}

/// The metadata value of `key`; message and exit 1 if it is missing.
inline std::string required(const char* program, const std::map<std::string, std::string>& meta,
                            const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) {
    std::fprintf(stderr, "%s: --resume: the checkpoint has no '%s'\n", program, key.c_str());
    std::exit(1);
  }
  return it->second;
}

/// The metadata value of `key` as an integer >= 0; message and exit 1 if it is missing or not one.
inline long count(const char* program, const std::map<std::string, std::string>& meta, const std::string& key) {
  const std::string v = required(program, meta, key);
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < 0) {
    std::fprintf(stderr, "%s: --resume: the checkpoint's '%s' is '%s', not a count\n", program, key.c_str(), v.c_str());
    std::exit(1);
  }
  return x;
}

}  // namespace examples
