// fuzz_idx: libFuzzer target for the IDX reader (scalify/nn/idx.hpp).
//
// Input: a mode byte, then the file's bytes. Mode bits:
//   bit 0   write the bytes gzip-compressed (a valid gzip wrapper around them,
//           so the fuzzer reaches the IDX layer inside gzip without forging
//           CRCs); else write them as they are (plain IDX, or gzip if they
//           start with 1f 8b: then the gzip layer itself is fuzzed);
//   bit 1   with bit 0: compress into two gzip members, split at a point the
//           second byte gives;
//   bit 2   a dataset: the bytes after the second byte are split there into an
//           images file and a labels file for load_idx_dataset (each
//           compressed if bit 0).
//
// Findings: any exception other than scalify::format_error (read_idx
// documents no other, bar std::bad_alloc for a real out-of-memory), a
// format_error whose message does not name the file, a crash, an ASan or
// UBSan report, or a result that disagrees with the oracle below.
//
// Oracle. When the IDX bytes are known (plain bytes not starting with 1f 8b,
// or bytes this target compressed itself), a 20-line parser written from the
// format's definition says whether the file is valid and what it holds;
// read_idx must agree: same dims and data, or a format_error. In every case
// a result must be consistent: data.size() is the product of dims (computed
// here with overflow checks of its own) and at most kIdxMaxBytes.
#include <unistd.h>  // getpid, access
#include <zlib.h>    // gzopen, gzwrite, gzclose

#include <cstdint>    // uint8_t, uint32_t, uint64_t
#include <cstdio>     // std::fopen, std::fwrite, std::remove
#include <cstdlib>    // std::abort, std::atexit, std::getenv
#include <exception>  // std::exception
#include <optional>   // std::optional
#include <string>     // std::string
#include <vector>     // std::vector

#include "scalify/nn/idx.hpp"  // read_idx, load_idx_dataset, kIdxMaxBytes

namespace {

using Bytes = std::vector<uint8_t>;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_idx finding: %s\n", what.c_str());
  std::abort();
}

/// $TMPDIR, else /dev/shm (memory: ~18x the executions per second of a disk /tmp), else /tmp.
std::string temp_path(const char* name) {
  const char* env = std::getenv("TMPDIR");
  const std::string dir = env != nullptr && *env != '\0'       ? env
                          : ::access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm"
                                                                 : "/tmp";
  return dir + "/scalify_fuzz_idx_" + std::to_string(::getpid()) + "_" + name;
}
const std::string kImages = temp_path("images"), kLabels = temp_path("labels");

void remove_files() {
  std::remove(kImages.c_str());
  std::remove(kLabels.c_str());
}

void write_file(const std::string& path, const Bytes& b, bool gzip, size_t split) {
  if (!gzip) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) finding("cannot write " + path);
    if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
    return;
  }
  std::fclose(std::fopen(path.c_str(), "wb"));
  // One gzip member per part: gzopen "ab" starts a new one.
  const size_t cut = split < b.size() ? split : b.size();
  for (const auto& [from, to] : {std::pair{size_t{0}, cut}, std::pair{cut, b.size()}}) {
    if (from == to && from != 0) continue;
    gzFile f = gzopen(path.c_str(), "ab");
    if (f == nullptr) finding("cannot write " + path);
    if (to > from) gzwrite(f, b.data() + from, static_cast<unsigned>(to - from));
    gzclose(f);
  }
}

/// What a valid IDX file of unsigned bytes holds, from the definition:
/// 00 00 08 n, n big-endian uint32 sizes (1 <= n <= 4), then exactly their
/// product of bytes (at most kIdxMaxBytes). Nothing when the bytes are not that.
std::optional<scalify::nn::idx_array> parse(const Bytes& b) {
  if (b.size() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] < 1 || b[3] > 4) return std::nullopt;
  const size_t n = b[3];
  if (b.size() < 4 + 4 * n) return std::nullopt;
  scalify::nn::idx_array a;
  uint64_t count = 1;
  bool overflow = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = b.data() + 4 + 4 * i;
    a.dims.push_back(uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]);
    overflow |= __builtin_mul_overflow(count, uint64_t{a.dims.back()}, &count);
  }
  for (uint32_t d : a.dims) overflow &= d != 0;  // a zero size: an empty array, whatever the others
  if (overflow || count > scalify::nn::kIdxMaxBytes || b.size() - 4 - 4 * n != count) return std::nullopt;
  a.data.assign(b.begin() + static_cast<long>(4 + 4 * n), b.end());
  return a;
}

void check_consistent(const scalify::nn::idx_array& a) {
  if (a.dims.empty() || a.dims.size() > 4) finding("read_idx returned " + std::to_string(a.dims.size()) + " dims");
  uint64_t count = 1;
  bool overflow = false;
  for (uint32_t d : a.dims) overflow |= __builtin_mul_overflow(count, uint64_t{d}, &count);
  for (uint32_t d : a.dims) overflow &= d != 0;
  if (overflow || count != a.data.size() || count > scalify::nn::kIdxMaxBytes) {
    finding("read_idx: dims and data.size() = " + std::to_string(a.data.size()) + " disagree");
  }
}

/// Runs f; returns its result, or nothing after a format_error naming `path`.
template <class F>
auto attempt(const std::string& path, F f) -> std::optional<decltype(f())> {
  try {
    return f();
  } catch (const scalify::format_error& e) {
    if (std::string(e.what()).find(path) == std::string::npos) {
      finding(std::string("format_error without the file name: ") + e.what());
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  }
  return std::nullopt;
}

void fuzz_read(const Bytes& file, bool gzip, size_t split) {
  write_file(kImages, file, gzip, split);
  const auto got = attempt(kImages, [] { return scalify::nn::read_idx(kImages); });
  if (got) check_consistent(*got);
  const bool oracle = gzip || file.size() < 2 || file[0] != 0x1f || file[1] != 0x8b;
  if (!oracle) return;
  const auto expected = parse(file);
  if (expected.has_value() != got.has_value()) {
    finding(std::string("read_idx ") + (got ? "accepted" : "refused") + " a file the definition says is " +
            (expected ? "valid" : "invalid"));
  }
  if (got && (got->dims != expected->dims || got->data != expected->data)) finding("read_idx: wrong dims or data");
}

void fuzz_dataset(const Bytes& images, const Bytes& labels, bool gzip) {
  write_file(kImages, images, gzip, images.size() / 2);
  write_file(kLabels, labels, gzip, 0);
  std::optional<scalify::nn::idx_dataset> got;
  try {
    got = scalify::nn::load_idx_dataset(kImages, kLabels);
  } catch (const scalify::format_error& e) {
    const std::string msg = e.what();
    if (msg.find(kImages) == std::string::npos && msg.find(kLabels) == std::string::npos) {
      finding("format_error without a file name: " + msg);
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  }
  const bool oracle = gzip || ((images.size() < 2 || images[0] != 0x1f || images[1] != 0x8b) &&
                               (labels.size() < 2 || labels[0] != 0x1f || labels[1] != 0x8b));
  if (!oracle) return;
  const auto im = parse(images), lb = parse(labels);
  const bool valid = im && lb && im->dims.size() == 3 && lb->dims.size() == 1 && im->dims[0] == lb->dims[0] &&
                     uint64_t{im->dims[1]} * im->dims[2] <= scalify::nn::kIdxMaxBytes;
  if (valid != got.has_value()) {
    finding(std::string("load_idx_dataset ") + (got ? "accepted" : "refused") + " files the definition says are " +
            (valid ? "valid" : "invalid"));
  }
  if (!got) return;
  const Eigen::Index n = im->dims[0], pixels = Eigen::Index{im->dims[1]} * im->dims[2];
  if (got->images.rows() != n || got->images.cols() != pixels || got->height != im->dims[1] ||
      got->width != im->dims[2] || got->labels.size() != lb->data.size()) {
    finding("load_idx_dataset: wrong shapes");
  }
  for (size_t i = 0; i < im->data.size(); ++i) {
    if (got->images.data()[i] != static_cast<float>(im->data[i]) / 255.0f) finding("load_idx_dataset: wrong pixel");
  }
  for (size_t i = 0; i < lb->data.size(); ++i) {
    if (got->labels[i] != lb->data[i]) finding("load_idx_dataset: wrong label");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::atexit(remove_files);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t mode = data[0], split = data[1];
  const bool gzip = (mode & 1) != 0;
  const Bytes rest(data + 2, data + size);
  if ((mode & 4) == 0) {
    fuzz_read(rest, gzip, (mode & 2) != 0 ? split : rest.size());
  } else {
    const size_t cut = split < rest.size() ? split : rest.size();
    fuzz_dataset(Bytes(rest.begin(), rest.begin() + static_cast<long>(cut)),
                 Bytes(rest.begin() + static_cast<long>(cut), rest.end()), gzip);
  }
  return 0;
}
