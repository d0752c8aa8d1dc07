// scalify nn: a character-level text corpus, by default Debian's `fortunes`
// package (/usr/share/games/fortunes, about 2.5 MB of English).
//
//   load_char_corpus(dir, val_fraction)   the files of `dir` in sorted name order (not the .dat
//                                         indexes nor the .u8 links), the '%' separator lines
//                                         removed, concatenated; the last val_fraction of the
//                                         bytes is the validation split
//   char_corpus::vocab                    the bytes of the training split, sorted; token id i + 1 is
//                                         vocab[i], id 0 is "a byte the training split does not have"
//   char_corpus::encode / decode          bytes <-> ids
//
// Bytes, not Unicode characters: a UTF-8 sequence is several tokens.
#ifndef SCALIFY_NN_TEXT_HPP_
#define SCALIFY_NN_TEXT_HPP_

#include <algorithm>    // std::sort
#include <array>        // std::array
#include <cstddef>      // size_t
#include <filesystem>   // std::filesystem
#include <fstream>      // std::ifstream
#include <iterator>     // std::istreambuf_iterator
#include <sstream>      // std::istringstream
#include <stdexcept>    // std::runtime_error, std::invalid_argument
#include <string>       // std::string, std::getline
#include <string_view>  // std::string_view
#include <utility>      // std::move
#include <vector>       // std::vector

#include "scalify/errors.hpp"  // SCALIFY_CHECK

namespace scalify::nn {

/// Where Debian's `fortunes` package puts its files.
inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

/// A character-level corpus: the two splits as token ids and the vocabulary.
struct char_corpus {
  std::string vocab;           ///< the training split's bytes, sorted; id i + 1 is vocab[i]
  std::vector<int> train, val; ///< the splits as ids
  std::vector<std::string> files;  ///< the files read, in order

  /// V: vocab.size() + 1 (id 0: a byte outside the vocabulary).
  int vocab_size() const { return static_cast<int>(vocab.size()) + 1; }

  /// The id of each byte of `text` (0 for a byte outside the vocabulary).
  std::vector<int> encode(std::string_view text) const {
    std::array<int, 256> id{};
    for (size_t i = 0; i < vocab.size(); ++i) id[static_cast<unsigned char>(vocab[i])] = static_cast<int>(i) + 1;
    std::vector<int> out(text.size());
    for (size_t i = 0; i < text.size(); ++i) out[i] = id[static_cast<unsigned char>(text[i])];
    return out;
  }
  /// The bytes of ids ('?' for id 0). Throws std::out_of_range for an id outside [0, vocab_size()).
  std::string decode(const std::vector<int>& ids) const {
    std::string out(ids.size(), '?');
    for (size_t i = 0; i < ids.size(); ++i) {
      SCALIFY_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), std::out_of_range,
                    "scalify::nn::char_corpus::decode: id " + std::to_string(ids[i]) + " outside [0, " +
                        std::to_string(vocab_size()) + ")");
      if (ids[i] > 0) out[i] = vocab[static_cast<size_t>(ids[i] - 1)];
    }
    return out;
  }
};

/// Builds a char_corpus from `text`: the last val_fraction of its bytes are
/// the validation split, the vocabulary is the training split's bytes.
/// Throws std::invalid_argument unless 0 <= val_fraction < 1 and the
/// training split is not empty.
inline char_corpus make_char_corpus(std::string_view text, double val_fraction) {
  SCALIFY_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, std::invalid_argument,
                "scalify::nn::make_char_corpus: val_fraction must be in [0, 1), got " + std::to_string(val_fraction));
  const auto n_val = static_cast<size_t>(static_cast<double>(text.size()) * val_fraction);
  const std::string_view train = text.substr(0, text.size() - n_val), val = text.substr(text.size() - n_val);
  SCALIFY_CHECK(!train.empty(), std::invalid_argument, "scalify::nn::make_char_corpus: the training split is empty");
  std::array<bool, 256> seen{};
  for (const char c : train) seen[static_cast<unsigned char>(c)] = true;
  char_corpus corpus;
  for (int b = 0; b < 256; ++b) {
    if (seen[static_cast<size_t>(b)]) corpus.vocab.push_back(static_cast<char>(b));
  }
  corpus.train = corpus.encode(train);
  corpus.val = corpus.encode(val);
  return corpus;
}

/// Reads the corpus of `dir` (see the file comment). Throws std::runtime_error
/// naming the directory and, for the default one, the Debian package to
/// install, when it is missing or has no text file; std::invalid_argument as
/// make_char_corpus.
///
/// **Example**: `auto corpus = scalify::nn::load_char_corpus();  // fortunes, 10 % validation`
inline char_corpus load_char_corpus(const std::string& dir = kFortunesDir, double val_fraction = 0.1) {
  namespace fs = std::filesystem;
  const std::string hint = dir == kFortunesDir ? " (install the Debian package: apt-get install fortunes)" : "";
  std::error_code ec;
  SCALIFY_CHECK(fs::is_directory(dir, ec), std::runtime_error,
                "scalify::nn::load_char_corpus: no directory " + dir + hint);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool skipped = name.ends_with(".dat") || name.ends_with(".u8") || !entry.is_regular_file();
    if (!skipped) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::string text;
  for (const auto& name : names) {
    std::ifstream in(fs::path(dir) / name, std::ios::binary);
    SCALIFY_CHECK(in.good(), std::runtime_error, "scalify::nn::load_char_corpus: cannot read " + dir + "/" + name);
    const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream lines(content);
    for (std::string line; std::getline(lines, line);) {
      if (line == "%") continue;  // the separator between two fortunes
      text += line;
      text += '\n';
    }
  }
  SCALIFY_CHECK(!text.empty(), std::runtime_error,
                "scalify::nn::load_char_corpus: no text in " + dir + hint);
  char_corpus corpus = make_char_corpus(text, val_fraction);
  corpus.files = std::move(names);
  return corpus;
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_TEXT_HPP_
