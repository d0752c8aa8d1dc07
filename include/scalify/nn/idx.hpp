// scalify nn: reading IDX files (the MNIST / Fashion-MNIST format), gzip
// compressed or not.
//
//   read_idx(path)                          one IDX file of unsigned bytes: dims + data
//   load_idx_dataset(images, labels)        N images (N, H*W) in [0, 1] + N labels
//   load_fashion_mnist(dir)                 train and test sets from a directory
//                                           (default: the Debian package's files)
//
// Needs zlib: this header includes <zlib.h> (Debian: zlib1g-dev) and the
// program must link it (CMake: find_package(ZLIB), ZLIB::ZLIB). It is the only
// scalify header with that dependency, and it is not in scalify/scalify.hpp.
//
// The file is read through zlib's gzopen/gzread, which read gzip files and
// pass other files through unchanged, so both `x-ubyte.gz` and `x-ubyte` work.
//
// IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header
//   bytes 0-1: 0   byte 2: type (0x08 = unsigned byte)   byte 3: number of dims n
//   n big-endian uint32 sizes, then the data, row-major.
// Anything else (bad magic, another type, truncated, trailing bytes, counts
// that disagree) throws scalify::format_error naming the file and the problem.
#ifndef SCALIFY_NN_IDX_HPP_
#define SCALIFY_NN_IDX_HPP_

#include <zlib.h>  // gzopen, gzread, gzclose, gzerror (zlib1g-dev; link ZLIB::ZLIB)

#include <algorithm>   // std::min
#include <cerrno>      // errno
#include <cstdio>      // std::snprintf
#include <cstdint>     // uint8_t, uint32_t
#include <cstring>     // std::strerror
#include <filesystem>  // std::filesystem::exists
#include <string>      // std::string
#include <vector>      // std::vector

#include "scalify/errors.hpp"     // format_error
#include "scalify/nn/tensor.hpp"  // Matrix

namespace scalify::nn {

/// An IDX array of unsigned bytes.
struct idx_array {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

/// Images as rows of floats in [0, 1] and their labels.
struct idx_dataset {
  Matrix images;            ///< (N, H * W), pixel / 255
  std::vector<int> labels;  ///< N labels
  Eigen::Index height = 0, width = 0;
  Eigen::Index size() const { return images.rows(); }
};

/// Where the Debian package dataset-fashion-mnist installs its files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

namespace detail {

class gz_file {
 public:
  explicit gz_file(const std::string& path) : path_(path) {
    errno = 0;
    f_ = gzopen(path.c_str(), "rb");
    if (f_ == nullptr) {
      throw format_error("scalify::nn::read_idx: cannot open '" + path + "': " +
                         (errno != 0 ? std::strerror(errno) : "out of memory"));
    }
  }
  ~gz_file() { gzclose(f_); }
  gz_file(const gz_file&) = delete;
  gz_file& operator=(const gz_file&) = delete;

  /// Reads up to n bytes; returns the count read (less at the end of the file).
  size_t read(void* out, size_t n) {
    size_t done = 0;
    auto* p = static_cast<unsigned char*>(out);
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      const int got = gzread(f_, p + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(f_, &code);
        throw format_error("scalify::nn::read_idx: '" + path_ + "': corrupted or unreadable (" +
                           (msg != nullptr ? msg : "zlib error") + ")");
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

[[noreturn]] inline void idx_fail(const std::string& path, const std::string& what) {
  throw format_error("scalify::nn: '" + path + "' is not a valid IDX file: " + what);
}

inline std::string dims_string(const std::vector<uint32_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s + ")";
}

}  // namespace detail

/// Reads one IDX file of unsigned bytes (gzip-compressed or not). Throws
/// format_error naming the file for a missing file, a bad magic number, a type
/// other than unsigned byte, a truncated file or bytes after the data.
///
/// **Example**: `auto a = scalify::nn::read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");`
inline idx_array read_idx(const std::string& path) {
  detail::gz_file f(path);
  unsigned char header[4];
  const size_t got = f.read(header, 4);
  if (got < 4) detail::idx_fail(path, "truncated header (" + std::to_string(got) + " of 4 bytes)");
  if (header[0] != 0 || header[1] != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "bad magic number 0x%02x%02x%02x%02x (expected 0x0000TTNN)", header[0], header[1],
                  header[2], header[3]);
    detail::idx_fail(path, buf);
  }
  if (header[2] != 0x08) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "element type 0x%02x is not supported (only 0x08, unsigned byte)", header[2]);
    detail::idx_fail(path, buf);
  }
  const unsigned n = header[3];
  if (n < 1 || n > 4) detail::idx_fail(path, std::to_string(n) + " dimensions (expected 1 to 4)");
  idx_array a;
  a.dims.resize(n);
  uint64_t total = 1;
  for (unsigned i = 0; i < n; ++i) {
    unsigned char b[4];
    if (f.read(b, 4) < 4) detail::idx_fail(path, "truncated header (dimension " + std::to_string(i) + " missing)");
    a.dims[i] = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
    total *= a.dims[i];
    if (total > (uint64_t{1} << 34)) detail::idx_fail(path, "sizes too large " + detail::dims_string(a.dims));
  }
  a.data.resize(static_cast<size_t>(total));
  const size_t read = f.read(a.data.data(), a.data.size());
  if (read < a.data.size()) {
    detail::idx_fail(path, "truncated: " + std::to_string(read) + " data bytes, " + detail::dims_string(a.dims) +
                               " needs " + std::to_string(total));
  }
  unsigned char extra;
  if (f.read(&extra, 1) != 0) {
    detail::idx_fail(path, "unexpected bytes after the " + std::to_string(total) + " data bytes of " +
                               detail::dims_string(a.dims));
  }
  return a;
}

/// Reads an images file (N, H, W) and a labels file (N) into an idx_dataset.
/// Throws format_error for wrong dimensions or different counts.
///
/// **Example**: `auto test = scalify::nn::load_idx_dataset(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");`
inline idx_dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path) {
  const idx_array images = read_idx(images_path);
  const idx_array labels = read_idx(labels_path);
  if (images.dims.size() != 3) {
    detail::idx_fail(images_path, "images must have 3 dimensions (N, H, W), got " + detail::dims_string(images.dims));
  }
  if (labels.dims.size() != 1) {
    detail::idx_fail(labels_path, "labels must have 1 dimension (N), got " + detail::dims_string(labels.dims));
  }
  if (images.dims[0] != labels.dims[0]) {
    throw format_error("scalify::nn::load_idx_dataset: '" + images_path + "' has " + std::to_string(images.dims[0]) +
                       " images but '" + labels_path + "' has " + std::to_string(labels.dims[0]) + " labels");
  }
  idx_dataset d;
  d.height = images.dims[1];
  d.width = images.dims[2];
  const Eigen::Index N = images.dims[0], P = d.height * d.width;
  d.images.resize(N, P);
  for (Eigen::Index i = 0; i < N * P; ++i) d.images.data()[i] = static_cast<float>(images.data[static_cast<size_t>(i)]) / 255.0f;
  d.labels.assign(labels.data.begin(), labels.data.end());
  return d;
}

/// Fashion-MNIST (or MNIST) train and test sets.
struct idx_train_test {
  idx_dataset train, test;
};

/// Loads train-{images-idx3,labels-idx1}-ubyte and t10k-... from `dir`
/// (each `.gz` or not; default kFashionMnistDir, the Debian package
/// dataset-fashion-mnist). Throws format_error naming the missing file.
///
/// **Example**: `auto data = scalify::nn::load_fashion_mnist();`
inline idx_train_test load_fashion_mnist(const std::string& dir = kFashionMnistDir) {
  auto find = [&](const std::string& stem) {
    const std::string base = dir + "/" + stem;
    if (std::filesystem::exists(base + ".gz")) return base + ".gz";
    if (std::filesystem::exists(base)) return base;
    throw format_error("scalify::nn::load_fashion_mnist: neither '" + base + ".gz' nor '" + base +
                       "' exists (Debian: apt-get install dataset-fashion-mnist, or pass the directory)");
  };
  // One after the other (argument evaluation order is unspecified): the first missing file is reported.
  const std::string train_images = find("train-images-idx3-ubyte");
  const std::string train_labels = find("train-labels-idx1-ubyte");
  const std::string test_images = find("t10k-images-idx3-ubyte");
  const std::string test_labels = find("t10k-labels-idx1-ubyte");
  idx_train_test d;
  d.train = load_idx_dataset(train_images, train_labels);
  d.test = load_idx_dataset(test_images, test_labels);
  return d;
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_IDX_HPP_
