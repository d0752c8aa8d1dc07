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
// A file that starts with the gzip magic bytes 1f 8b is decompressed with
// zlib's inflate; any other file is read as it is (an IDX file starts with
// 00 00), so both `x-ubyte.gz` and `x-ubyte` work.
//
// IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header
//   bytes 0-1: 0   byte 2: type (0x08 = unsigned byte)   byte 3: number of dims n
//   n big-endian uint32 sizes, then the data, row-major.
// gzip: RFC 1952 (one or more members, each a deflate stream, RFC 1951, then
// its CRC-32 and length).
//
// Files are untrusted input. Anything else (bad magic, another type, a
// truncated header or data, bytes after the data, sizes whose product is over
// kIdxMaxBytes, a corrupted, truncated or bad gzip stream, bytes after the
// gzip stream) throws scalify::format_error naming the file and the problem,
// in every build type. Memory follows the bytes actually present, never the
// sizes a header claims: an uncompressed file's size is checked against the
// header before the data is allocated; gzip data is read into a buffer that
// grows as it arrives (from 64 KiB, to at most twice what the stream holds).
#ifndef SCALIFY_NN_IDX_HPP_
#define SCALIFY_NN_IDX_HPP_

#include <zlib.h>  // inflate, inflateInit2, inflateGetHeader, gz_header (zlib1g-dev; link ZLIB::ZLIB)

#include <Eigen/Core>  // Eigen::Index
#include <algorithm>     // std::min, std::find
#include <cerrno>        // errno
#include <climits>       // UINT_MAX
#include <cstdint>       // uint8_t, uint32_t, uint64_t
#include <cstdio>        // std::FILE, std::fopen, std::fread, std::ferror, std::fclose, std::snprintf
#include <cstring>       // std::strerror
#include <filesystem>    // std::filesystem::exists, status, file_size
#include <limits>        // std::numeric_limits
#include <memory>        // std::unique_ptr
#include <new>           // std::bad_alloc
#include <optional>      // std::optional
#include <string>        // std::string, std::to_string
#include <system_error>  // std::error_code
#include <vector>        // std::vector

#include "scalify/errors.hpp"     // format_error
#include "scalify/nn/tensor.hpp"  // Matrix

namespace scalify::nn {

/// An IDX array of unsigned bytes: `data.size()` is always the product of `dims`.
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

/// The largest data read_idx accepts: 16 GiB (the product of the sizes; an
/// image of load_idx_dataset has at most as many pixels).
///
/// **Example**: `static_assert(scalify::nn::kIdxMaxBytes == uint64_t{1} << 34);`
inline constexpr uint64_t kIdxMaxBytes = uint64_t{1} << 34;

namespace detail {

[[noreturn]] inline void idx_fail(const std::string& path, const std::string& what) {
  throw format_error("scalify::nn: '" + path + "' is not a valid IDX file: " + what);
}

inline std::string dims_string(const std::vector<uint32_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s + ")";
}

/// "1 byte", "2 bytes".
inline std::string bytes_string(uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

/// a * b if it is at most `limit`, else nothing (no wrap-around).
inline std::optional<uint64_t> mul_at_most(uint64_t a, uint64_t b, uint64_t limit) {
  if (a != 0 && b > limit / a) return std::nullopt;
  return a * b;
}

/// The bytes of a file, decompressed if it is gzip (starts with 1f 8b).
///
/// gzip goes through inflate rather than gzread: gzread silently ignores bytes
/// after the last gzip member and reports a stream cut short only through a
/// later gzerror. With inflate every case is explicit: Z_STREAM_END comes only
/// after a complete member whose CRC-32 and length trailer match; Z_DATA_ERROR
/// is a corrupted stream (zlib says why); input that runs out before
/// Z_STREAM_END is a truncated file. After each member the file must end or
/// another member start (gzip files may be concatenated, RFC 1952 2.2, as
/// `gzip -d` reads them); anything else is an error.
class idx_source {
 public:
  explicit idx_source(const std::string& path) : path_(path) {
    errno = 0;
    f_.reset(std::fopen(path.c_str(), "rb"));
    if (f_ == nullptr) {
      throw format_error("scalify::nn::read_idx: cannot open '" + path + "': " +
                         (errno != 0 ? std::strerror(errno) : "unknown error"));
    }
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (!ec && std::filesystem::is_directory(st)) {
      throw format_error("scalify::nn::read_idx: cannot read '" + path + "': it is a directory");
    }
    if (!ec && std::filesystem::is_regular_file(st)) {
      const auto size = std::filesystem::file_size(path, ec);
      if (!ec) file_size_ = size;
    }
    // The first two bytes decide between gzip and plain. They stay in in_
    // (next_in, avail_in) as the first input of either.
    in_.resize(2);
    zs_.avail_in = static_cast<uInt>(raw_read(in_.data(), 2));
    gzip_ = zs_.avail_in == 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzip_) in_.resize(size_t{1} << 16);
    zs_.next_in = in_.data();
    if (gzip_) {
      // 16 + MAX_WBITS: the gzip wrapper only (header, deflate data, CRC-32 and length checked).
      const int ret = inflateInit2(&zs_, 16 + MAX_WBITS);
      if (ret == Z_MEM_ERROR) throw std::bad_alloc();
      if (ret != Z_OK) {
        throw format_error("scalify::nn::read_idx: '" + path + "': zlib cannot start (inflateInit2 returned " +
                           std::to_string(ret) + ")");
      }
      inflating_ = true;
      watch_header();
    }
  }
  ~idx_source() {
    if (inflating_) inflateEnd(&zs_);
  }
  idx_source(const idx_source&) = delete;
  idx_source& operator=(const idx_source&) = delete;

  /// Reads up to n (decompressed) bytes; fewer only at the end of the data.
  size_t read(void* out, size_t n) {
    auto* p = static_cast<unsigned char*>(out);
    size_t done = 0;
    if (!gzip_) {
      for (; done < n && zs_.avail_in > 0; --zs_.avail_in) p[done++] = *zs_.next_in++;  // the peeked bytes
      if (done < n) done += raw_read(p + done, n - done);
      position_ += done;
      return done;
    }
    while (done < n && !finished_) {
      if (zs_.avail_in == 0 && refill() == 0) {
        idx_fail(path_, std::string("gzip stream truncated: the file ends after ") + std::to_string(consumed()) +
                            " bytes, inside the " + (header_.done == 1 ? "compressed data" : "gzip header") +
                            " (no end-of-stream trailer)");
      }
      const size_t chunk = std::min<size_t>(n - done, size_t{1} << 30);
      const uInt in_before = zs_.avail_in;
      zs_.next_out = p + done;
      zs_.avail_out = static_cast<uInt>(chunk);
      const int ret = inflate(&zs_, Z_NO_FLUSH);
      done += chunk - zs_.avail_out;
      if (ret == Z_STREAM_END) {
        next_member();
      } else if (ret == Z_MEM_ERROR) {
        throw std::bad_alloc();
      } else if (ret != Z_OK && !(ret == Z_BUF_ERROR && (zs_.avail_in < in_before || zs_.avail_out < chunk))) {
        // Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR, or no progress at all.
        gzip_fail(ret);
      }
    }
    position_ += done;
    return done;
  }

  /// Bytes left after those read, when known before reading them (a plain
  /// regular file); gzip: nothing (the header may lie, so it is never trusted).
  std::optional<uint64_t> remaining() const {
    if (gzip_ || !file_size_) return std::nullopt;
    return *file_size_ >= position_ ? *file_size_ - position_ : 0;
  }

 private:
  size_t raw_read(unsigned char* out, size_t n) {
    const size_t got = std::fread(out, 1, n, f_.get());
    if (got < n && std::ferror(f_.get())) {
      throw format_error("scalify::nn::read_idx: cannot read '" + path_ + "': " + std::strerror(errno));
    }
    read_ += got;
    return got;
  }

  /// Refills the (empty) input buffer; returns the bytes read (0 at the end of the file).
  size_t refill() {
    zs_.next_in = in_.data();
    zs_.avail_in = static_cast<uInt>(raw_read(in_.data(), in_.size()));
    return zs_.avail_in;
  }

  /// Compressed bytes consumed so far.
  uint64_t consumed() const { return read_ - zs_.avail_in; }

  void watch_header() {
    header_ = {};  // done: 0 while the header is parsed, 1 once it has been
    inflateGetHeader(&zs_, &header_);
  }

  [[noreturn]] void gzip_fail(int ret) const {
    const std::string why = zs_.msg != nullptr ? zs_.msg : "zlib error " + std::to_string(ret);
    if (header_.done != 1) idx_fail(path_, "bad gzip header (zlib: " + why + ")");
    if (why == "incorrect data check") idx_fail(path_, "gzip trailer: the CRC-32 does not match the data");
    if (why == "incorrect length check") idx_fail(path_, "gzip trailer: the length does not match the data");
    idx_fail(path_,
             "corrupted gzip data before compressed byte " + std::to_string(consumed()) + " (zlib: " + why + ")");
  }

  /// After a member's end: the end of the file, or another member.
  void next_member() {
    if (zs_.avail_in == 0 && refill() == 0) {
      finished_ = true;
      return;
    }
    if (zs_.avail_in == 1) {  // its first two bytes are needed
      in_[0] = *zs_.next_in;
      zs_.next_in = in_.data();
      zs_.avail_in = 1 + static_cast<uInt>(raw_read(in_.data() + 1, in_.size() - 1));
    }
    if (zs_.avail_in >= 2 && zs_.next_in[0] == 0x1f && zs_.next_in[1] == 0x8b) {
      inflateReset(&zs_);
      watch_header();
      return;
    }
    const uint64_t at = consumed();
    const std::string count = file_size_ && *file_size_ > at ? bytes_string(*file_size_ - at) : "bytes";
    idx_fail(path_, count + " after the end of the gzip stream at byte " + std::to_string(at) +
                        " (not another gzip member)");
  }

  struct file_closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };

  std::string path_;
  std::unique_ptr<std::FILE, file_closer> f_;
  std::optional<uint64_t> file_size_;
  bool gzip_ = false, inflating_ = false, finished_ = false;
  z_stream zs_{};
  gz_header header_{};
  std::vector<unsigned char> in_;
  uint64_t read_ = 0;      // bytes read from the file
  uint64_t position_ = 0;  // (decompressed) bytes returned by read()
};

}  // namespace detail

/// Reads one IDX file of unsigned bytes (gzip-compressed or not). Throws
/// format_error naming the file for a missing or unreadable file, a bad magic
/// number, a type other than unsigned byte, 0 or more than 4 dimensions, sizes
/// whose product is over kIdxMaxBytes, a truncated header or data, bytes after
/// the data, and a bad, corrupted or truncated gzip stream or bytes after it.
/// It never allocates more than the file really holds (for gzip: twice that, or 64 KiB).
///
/// **Example**: `auto a = scalify::nn::read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");`
inline idx_array read_idx(const std::string& path) {
  detail::idx_source f(path);
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
    char buf[80];
    std::snprintf(buf, sizeof buf, "element type 0x%02x is not supported (only 0x08, unsigned byte)", header[2]);
    detail::idx_fail(path, buf);
  }
  const unsigned n = header[3];
  if (n < 1 || n > 4) detail::idx_fail(path, std::to_string(n) + " dimensions (expected 1 to 4)");

  idx_array a;
  unsigned char sizes[16];
  const size_t size_bytes = f.read(sizes, 4 * n);
  if (size_bytes < 4 * n) {
    detail::idx_fail(path, "truncated header: " + std::to_string(n) + " dimensions need " + std::to_string(4 * n) +
                               " bytes of sizes, the data ends after " + std::to_string(size_bytes));
  }
  for (unsigned i = 0; i < n; ++i) {
    const unsigned char* b = sizes + 4 * i;
    a.dims.push_back((uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]});
  }
  // The product, overflow-checked (no wrap-around past 2^64); 0 if any size is
  // 0, whatever the others (an empty array).
  std::optional<uint64_t> total = 1;
  for (size_t i = 0; i < a.dims.size() && total; ++i) total = detail::mul_at_most(*total, a.dims[i], kIdxMaxBytes);
  if (std::find(a.dims.begin(), a.dims.end(), 0u) != a.dims.end()) total = 0;
  if (!total) {
    detail::idx_fail(path, "sizes too large: " + detail::dims_string(a.dims) + " is more than the limit of " +
                               std::to_string(kIdxMaxBytes) + " bytes (kIdxMaxBytes)");
  }
  auto truncated = [&](uint64_t present) {
    detail::idx_fail(path, "truncated: " + std::to_string(present) + " data bytes, " + detail::dims_string(a.dims) +
                               " needs " + std::to_string(*total));
  };

  // A plain file's size is known: check it before allocating anything.
  const std::optional<uint64_t> left = f.remaining();
  if (left && *left < *total) truncated(*left);
  // Else grow the buffer as the data arrives (doubling from 64 KiB): a header
  // that claims more than the stream holds costs at most twice what it holds.
  const size_t want = static_cast<size_t>(*total);
  size_t have = 0;
  a.data.resize(left ? want : std::min<size_t>(want, size_t{1} << 16));
  while (have < want) {
    if (have == a.data.size()) a.data.resize(std::min(want, 2 * have));
    const size_t got_now = f.read(a.data.data() + have, a.data.size() - have);
    have += got_now;
    if (got_now == 0) break;
  }
  if (have < want) truncated(have);

  // Bytes after the data (reading on also checks the rest of a gzip stream).
  const std::optional<uint64_t> extra = f.remaining();
  unsigned char one;
  if ((extra && *extra > 0) || (!extra && f.read(&one, 1) != 0)) {
    detail::idx_fail(path, (extra ? "unexpected " + detail::bytes_string(*extra) : std::string("unexpected bytes")) +
                               " after the " + std::to_string(want) + " data bytes of " +
                               detail::dims_string(a.dims));
  }
  return a;
}

/// Reads an images file (N, H, W) and a labels file (N) into an idx_dataset.
/// Throws format_error for wrong dimensions, different counts, or an image
/// of more than kIdxMaxBytes pixels (also when N = 0).
///
/// **Example**:
/// ```
/// auto test = scalify::nn::load_idx_dataset(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
/// ```
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
  // Every count fits Eigen::Index with room for the floats' bytes: N * H * W
  // is the data read_idx read (<= kIdxMaxBytes), and H * W is held to the same
  // limit, so an empty set (N = 0) of absurd images is refused too.
  constexpr uint64_t kMaxElements =
      std::min<uint64_t>(kIdxMaxBytes, static_cast<uint64_t>(std::numeric_limits<Eigen::Index>::max()) / sizeof(float));
  const std::optional<uint64_t> pixels = detail::mul_at_most(images.dims[1], images.dims[2], kMaxElements);
  if (!pixels) {
    detail::idx_fail(images_path, "images " + detail::dims_string(images.dims) + ": an image of " +
                                      std::to_string(images.dims[1]) + " x " + std::to_string(images.dims[2]) +
                                      " pixels is over the limit of " + std::to_string(kMaxElements));
  }
  const std::optional<uint64_t> elements = detail::mul_at_most(images.dims[0], *pixels, kMaxElements);
  if (!elements || *elements != images.data.size()) {
    detail::idx_fail(images_path, "images " + detail::dims_string(images.dims) + " do not match their " +
                                      std::to_string(images.data.size()) + " data bytes");
  }
  idx_dataset d;
  d.height = static_cast<Eigen::Index>(images.dims[1]);
  d.width = static_cast<Eigen::Index>(images.dims[2]);
  d.images.resize(static_cast<Eigen::Index>(images.dims[0]), static_cast<Eigen::Index>(*pixels));
  float* out = d.images.data();  // row-major (N, H * W): the file's order
  for (size_t i = 0; i < images.data.size(); ++i) out[i] = static_cast<float>(images.data[i]) / 255.0f;
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
