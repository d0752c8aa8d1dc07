// scalify io: scaled tensors in safetensors files.
//
//   safetensors_writer  add(name, x): x's data under `name` in its own dtype and
//                       its scale under `name_scale` (F32, or F8_E8M0 for an
//                       E8M0 scale); set_metadata(key, value); write(path)
//   safetensors_file    open(path): the file mapped read-only and its header
//                       checked; load<T>(name) copies a tensor into a
//                       ScaledMatrix<T>, load_converted<T>(name) rounds any float
//                       dtype into T, view<T>(name) reads it in place (no copy)
//   parse_safetensors   the header checks on bytes in memory (what open() runs)
//
// The file format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON, then the data buffer. The
// JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets into the data buffer) and "__metadata__" to string pairs.
// Data is row-major and little-endian. The convention of scaled fp8
// checkpoints (torchao, compressed-tensors): `w` holds the data, `w_scale`
// the per-tensor scale, value = w * w_scale. A tensor without `_scale` reads
// with scale 1.
//
// Shapes: a ScaledMatrix is written as [rows, cols] (or a shape given to
// add() with the same number of elements). Reading maps a shape onto a
// matrix: [] is 1 x 1, [n] is 1 x n (a row, like the layers' biases), and
// [d0, ..., dk] is (d0 * ... * dk-1) x dk.
//
// Untrusted files: open() and parse_safetensors() check, before anything is
// read or allocated from the header's numbers, that the header fits the file
// and the size limit (read_limits), is valid UTF-8 JSON of the expected shape
// (no duplicate names, known dtypes, non-negative integer shapes and offsets),
// that each tensor's byte length is its shape's element count times its
// dtype's size (overflow-checked: every partial product of the shape, left
// to right, fits PTRDIFF_MAX / 8, even with a zero dimension), and that the tensors cover the data buffer
// exactly, without gaps or overlaps. Any violation throws format_error naming
// the file, the tensor and the problem; the JSON is read by a SAX handler
// (nlohmann/json), so memory stays proportional to what the header declares
// and nested values are rejected at once.
#ifndef SCALIFY_IO_SAFETENSORS_HPP_
#define SCALIFY_IO_SAFETENSORS_HPP_

#include <Eigen/Core>  // Eigen::Matrix, Eigen::Map
#include <algorithm>   // std::sort, std::find_if, std::any_of
#include <atomic>      // std::atomic (write()'s temporary names)
#include <bit>         // std::endian
#include <cerrno>      // errno
#include <cstdint>     // uint64_t, int64_t, uintptr_t, PTRDIFF_MAX
#include <cstdio>      // std::fopen, std::fwrite, std::rename, std::remove
#include <cstring>     // std::memcpy, std::strerror
#include <iterator>    // std::istreambuf_iterator
#include <limits>      // std::numeric_limits
#include <map>         // std::map
#include <optional>    // std::optional
#include <set>         // std::set
#include <memory>      // std::shared_ptr
#include <span>        // std::span
#include <stdexcept>   // std::invalid_argument, std::runtime_error
#include <string>      // std::string
#include <string_view> // std::string_view
#include <type_traits> // std::is_same_v
#include <utility>     // std::move
#include <vector>      // std::vector

#include <nlohmann/json.hpp>  // nlohmann::json (Debian: nlohmann-json3-dev)

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>     // open
#include <sys/mman.h>  // mmap, munmap
#include <sys/stat.h>  // fstat
#include <unistd.h>    // close, getpid, write, fsync, unlink
#define SCALIFY_IO_MMAP 1
#else
#include <fstream>  // std::ifstream (no memory map: the file is read into memory)
#define SCALIFY_IO_MMAP 0
#endif

#include "scalify/core/scaled_array.hpp"  // ScaledArray, ScaledMatrix
#include "scalify/errors.hpp"             // format_error, shape_error, SCALIFY_CHECK
#include "scalify/formats/convert.hpp"    // convert, convert_options
#include "scalify/formats/float16.hpp"    // float16, bfloat16
#include "scalify/formats/float8.hpp"     // float8_e4m3fn, float8_e5m2, float8_e8m0fnu
#include "scalify/version.hpp"            // SCALIFY_VERSION

namespace scalify::io {

static_assert(std::endian::native == std::endian::little,
              "scalify/io/safetensors.hpp reads and writes little-endian data in place: big-endian hosts "
              "are not supported");

/// The dtypes of the safetensors format. The float ones load into
/// ScaledArrays; the integer ones can be listed and read as bytes.
enum class tensor_dtype : uint8_t { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, F8_E8M0, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

namespace detail {
struct dtype_entry {
  tensor_dtype dtype;
  const char* name;
  uint8_t size;
};
inline constexpr dtype_entry kDtypes[] = {
    {tensor_dtype::F64, "F64", 8},         {tensor_dtype::F32, "F32", 4},         {tensor_dtype::F16, "F16", 2},
    {tensor_dtype::BF16, "BF16", 2},       {tensor_dtype::F8_E4M3, "F8_E4M3", 1}, {tensor_dtype::F8_E5M2, "F8_E5M2", 1},
    {tensor_dtype::F8_E8M0, "F8_E8M0", 1}, {tensor_dtype::I64, "I64", 8},         {tensor_dtype::I32, "I32", 4},
    {tensor_dtype::I16, "I16", 2},         {tensor_dtype::I8, "I8", 1},           {tensor_dtype::U64, "U64", 8},
    {tensor_dtype::U32, "U32", 4},         {tensor_dtype::U16, "U16", 2},         {tensor_dtype::U8, "U8", 1},
    {tensor_dtype::BOOL, "BOOL", 1},
};
}  // namespace detail

/// "F8_E4M3", ... (the format's spelling).
inline const char* dtype_name(tensor_dtype t) {
  for (const auto& e : detail::kDtypes) {
    if (e.dtype == t) return e.name;
  }
  throw std::invalid_argument("scalify::io::dtype_name: unknown tensor_dtype " + std::to_string(static_cast<int>(t)));
}
/// Bytes per element.
inline size_t dtype_size(tensor_dtype t) {
  for (const auto& e : detail::kDtypes) {
    if (e.dtype == t) return e.size;
  }
  throw std::invalid_argument("scalify::io::dtype_size: unknown tensor_dtype " + std::to_string(static_cast<int>(t)));
}

namespace detail {
inline bool parse_dtype(std::string_view s, tensor_dtype& out) {
  for (const auto& e : kDtypes) {
    if (s == e.name) {
      out = e.dtype;
      return true;
    }
  }
  return false;
}
template <class T>
inline constexpr bool always_false = false;
}  // namespace detail

/// The file dtype of a scalar type: float -> F32, float16 -> F16, bfloat16 ->
/// BF16, float8_e4m3fn -> F8_E4M3, float8_e5m2 -> F8_E5M2, float8_e8m0fnu ->
/// F8_E8M0, double -> F64.
template <class T>
constexpr tensor_dtype dtype_of() {
  if constexpr (std::is_same_v<T, float>) return tensor_dtype::F32;
  else if constexpr (std::is_same_v<T, double>) return tensor_dtype::F64;
  else if constexpr (std::is_same_v<T, float16>) return tensor_dtype::F16;
  else if constexpr (std::is_same_v<T, bfloat16>) return tensor_dtype::BF16;
  else if constexpr (std::is_same_v<T, float8_e4m3fn>) return tensor_dtype::F8_E4M3;
  else if constexpr (std::is_same_v<T, float8_e5m2>) return tensor_dtype::F8_E5M2;
  else if constexpr (std::is_same_v<T, float8_e8m0fnu>) return tensor_dtype::F8_E8M0;
  else static_assert(detail::always_false<T>, "scalify::io: no safetensors dtype for this scalar type");
}

/// True for the float dtypes (the ones load_converted() reads).
constexpr bool is_float_dtype(tensor_dtype t) {
  return t == tensor_dtype::F64 || t == tensor_dtype::F32 || t == tensor_dtype::F16 || t == tensor_dtype::BF16 ||
         t == tensor_dtype::F8_E4M3 || t == tensor_dtype::F8_E5M2 || t == tensor_dtype::F8_E8M0;
}

/// One tensor of a file's header.
struct tensor_info {
  std::string name;
  tensor_dtype dtype = tensor_dtype::F32;
  std::vector<int64_t> shape;  ///< as in the file ([] for a scalar)
  uint64_t begin = 0;          ///< byte offsets into the data buffer
  uint64_t end = 0;

  /// Elements: the product of the shape (1 for []).
  int64_t elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;  // every partial product was checked when the header was parsed
    return n;
  }
  /// The matrix shape a load gives: [] -> 1 x 1, [n] -> 1 x n, [d0..dk] -> (d0*..*dk-1) x dk.
  Eigen::Index rows() const {
    if (shape.size() < 2) return 1;
    int64_t r = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) r *= shape[i];
    return static_cast<Eigen::Index>(r);
  }
  Eigen::Index cols() const { return shape.empty() ? 1 : static_cast<Eigen::Index>(shape.back()); }
  /// "[2, 3]"
  std::string shape_string() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

/// Limits of what a reader accepts (a bad or hostile file cannot make it
/// allocate or work beyond them).
struct read_limits {
  uint64_t max_header_bytes = uint64_t{16} << 20;  ///< the JSON header (real checkpoints: well under 1 MiB)
  size_t max_rank = 16;                            ///< dimensions of one shape
  size_t max_name_bytes = 4096;                    ///< a tensor name or metadata key
};

/// A parsed header: the tensors sorted by name, the metadata, and where the
/// data buffer starts in the file.
struct safetensors_header {
  std::vector<tensor_info> tensors;  ///< sorted by name
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  ///< 8 + header length
  uint64_t data_bytes = 0;  ///< size of the data buffer

  /// The tensor called `name`, or null.
  const tensor_info* find(std::string_view name) const {
    auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                               [](const tensor_info& t, std::string_view n) { return t.name < n; });
    return it != tensors.end() && it->name == name ? &*it : nullptr;
  }
};

namespace detail {

/// "scalify::io: 'file': what"
[[noreturn]] inline void bad_file(std::string_view file, const std::string& what) {
  throw format_error("scalify::io: '" + std::string(file) + "': " + what);
}

/// nlohmann's SAX interface over a safetensors header: only the accepted
/// grammar is kept, anything else stops the parse with a message.
///   { name: {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint]},
///     "__metadata__": {str: str, ...}, ... }
class header_handler {
 public:
  using json = nlohmann::json;
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit header_handler(const read_limits& limits) : limits_(limits) {}

  std::string error;  ///< set when the parse stops
  std::vector<tensor_info> tensors;
  std::map<std::string, std::string> metadata;

  bool null() { return fail("unexpected null"); }
  bool boolean(bool) { return fail("unexpected boolean"); }
  bool number_integer(number_integer_t v) {
    if (v < 0) return fail("negative number " + std::to_string(v));
    return number_unsigned(static_cast<number_unsigned_t>(v));
  }
  bool number_unsigned(number_unsigned_t v) {
    if (state_ == state::shape) {
      if (current_.shape.size() >= limits_.max_rank) {
        return fail("more than " + std::to_string(limits_.max_rank) + " dimensions");
      }
      if (v > static_cast<number_unsigned_t>(INT64_MAX)) return fail("dimension " + std::to_string(v) + " too large");
      current_.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (state_ == state::offsets) {
      if (offsets_ >= 2) return fail("\"data_offsets\" has more than 2 numbers");
      (offsets_ == 0 ? current_.begin : current_.end) = v;
      ++offsets_;
      return true;
    }
    return fail("unexpected number");
  }
  bool number_float(number_float_t, const string_t& s) { return fail("unexpected number " + s + " (not an integer)"); }
  bool string(string_t& s) {
    if (state_ == state::tensor && field_ == "dtype") {
      if (!detail::parse_dtype(s, current_.dtype)) return fail("unknown dtype \"" + s + "\"");
      seen_ |= 1;
      return true;
    }
    if (state_ == state::metadata) {
      metadata.emplace(std::move(key_), std::move(s));
      return true;
    }
    return fail("unexpected string");
  }
  bool binary(binary_t&) { return fail("unexpected binary value"); }
  bool start_object(std::size_t) {
    switch (state_) {
      case state::start: state_ = state::root; return true;
      case state::root:
        if (key_ == "__metadata__") {
          state_ = state::metadata;
          return true;
        }
        state_ = state::tensor;
        current_ = tensor_info{};
        current_.name = key_;
        seen_ = 0;
        return true;
      default: return fail("unexpected object");
    }
  }
  bool key(string_t& k) {
    if (k.size() > limits_.max_name_bytes) {
      return fail("a name of " + std::to_string(k.size()) + " bytes (more than " +
                  std::to_string(limits_.max_name_bytes) + ")");
    }
    if (state_ == state::root) {
      if (!names_.insert(k).second) return fail("\"" + k + "\" appears twice");
      key_ = std::move(k);
      return true;
    }
    if (state_ == state::metadata) {
      if (metadata.count(k) != 0) return fail("metadata key \"" + k + "\" appears twice");
      key_ = std::move(k);
      return true;
    }
    if (state_ == state::tensor) {
      const int bit = k == "dtype" ? 1 : k == "shape" ? 2 : k == "data_offsets" ? 4 : 0;
      if (bit == 0) return fail_tensor("unknown field \"" + k + "\"");
      if (seen_ & bit) return fail_tensor("field \"" + k + "\" appears twice");
      field_ = std::move(k);
      return true;
    }
    return fail("unexpected key");
  }
  bool end_object() {
    switch (state_) {
      case state::tensor:
        if (seen_ != 7) return fail_tensor("needs \"dtype\", \"shape\" and \"data_offsets\"");
        tensors.push_back(std::move(current_));
        state_ = state::root;
        return true;
      case state::metadata: state_ = state::root; return true;
      case state::root: state_ = state::done; return true;
      default: return fail("unexpected end of object");
    }
  }
  bool start_array(std::size_t) {
    if (state_ == state::tensor && field_ == "shape") {
      state_ = state::shape;
      seen_ |= 2;
      return true;
    }
    if (state_ == state::tensor && field_ == "data_offsets") {
      state_ = state::offsets;
      offsets_ = 0;
      seen_ |= 4;
      return true;
    }
    return fail("unexpected array");
  }
  bool end_array() {
    if (state_ == state::shape) {
      state_ = state::tensor;
      return true;
    }
    if (state_ == state::offsets) {
      if (offsets_ != 2) return fail_tensor("\"data_offsets\" needs 2 numbers");
      state_ = state::tensor;
      return true;
    }
    return fail("unexpected end of array");
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& e) {
    if (error.empty()) error = std::string("invalid JSON: ") + e.what();
    return false;
  }

 private:
  enum class state { start, root, tensor, shape, offsets, metadata, done };

  bool fail(const std::string& what) {
    if (!error.empty()) return false;
    if (state_ == state::tensor || state_ == state::shape || state_ == state::offsets) return fail_tensor(what);
    if (state_ == state::metadata) {
      error = "header: __metadata__ value of \"" + key_ + "\": " + what + " (values must be strings)";
      return false;
    }
    error = "header: " + what;
    return false;
  }
  bool fail_tensor(const std::string& what) {
    if (error.empty()) error = "tensor '" + current_.name + "': " + what;
    return false;
  }

  read_limits limits_;
  state state_ = state::start;
  std::string key_, field_;
  tensor_info current_;
  int seen_ = 0;
  int offsets_ = 0;
  std::set<std::string> names_;
};

/// a * b into out if it fits uint64_t.
inline bool mul_u64(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > UINT64_MAX / a) return false;
  out = a * b;
  return true;
}

/// The element count of `shape` (dimensions >= 0) into `elements`, and null
/// if every partial product of its dimensions, left to right, is at most
/// PTRDIFF_MAX / 8: then tensor_info::elements() and rows() and any byte
/// length compute without overflow, even when a later dimension is 0. Else
/// what is wrong: "overflows" (beyond uint64_t) or "is too large". The
/// reader and the writer both judge shapes with it.
inline const char* shape_problem(const std::vector<int64_t>& shape, uint64_t& elements) {
  elements = 1;
  for (int64_t d : shape) {
    if (!mul_u64(elements, static_cast<uint64_t>(d), elements)) return "overflows";
    if (elements > static_cast<uint64_t>(PTRDIFF_MAX) / 8) return "is too large";
  }
  return nullptr;
}

}  // namespace detail

/// Parses and checks the safetensors file image `bytes` (the whole file);
/// `file` names it in errors. Throws format_error for anything the file
/// comment lists.
///
/// **Example**: `auto h = scalify::io::parse_safetensors(bytes, "model.safetensors");`
inline safetensors_header parse_safetensors(std::span<const unsigned char> bytes, std::string_view file,
                                            const read_limits& limits = {}) {
  if (bytes.size() < 8) {
    detail::bad_file(file, "too short for a safetensors file (" + std::to_string(bytes.size()) +
                               " bytes; the header length alone takes 8)");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[static_cast<size_t>(i)];
  if (n > limits.max_header_bytes) {
    detail::bad_file(file, "header of " + std::to_string(n) + " bytes, more than the limit of " +
                               std::to_string(limits.max_header_bytes) + " (read_limits::max_header_bytes)");
  }
  if (n > bytes.size() - 8) {
    detail::bad_file(file, "the header length " + std::to_string(n) + " runs past the end of the file (" +
                               std::to_string(bytes.size()) + " bytes)");
  }
  if (n < 2) detail::bad_file(file, "empty header (" + std::to_string(n) + " bytes)");
  const auto* json_begin = bytes.data() + 8;
  detail::header_handler handler(limits);
  nlohmann::json::sax_parse(json_begin, json_begin + n, &handler, nlohmann::json::input_format_t::json,
                            /*strict=*/true);
  if (!handler.error.empty()) detail::bad_file(file, handler.error);

  safetensors_header h;
  h.data_start = 8 + n;
  h.data_bytes = bytes.size() - h.data_start;
  h.metadata = std::move(handler.metadata);
  h.tensors = std::move(handler.tensors);
  for (const auto& t : h.tensors) {
    const auto where = [&](const std::string& what) { detail::bad_file(file, "tensor '" + t.name + "': " + what); };
    uint64_t elements = 0;
    if (const char* problem = detail::shape_problem(t.shape, elements)) {
      where("shape " + t.shape_string() + " " + problem);
    }
    const uint64_t length = elements * dtype_size(t.dtype);  // <= PTRDIFF_MAX: elements <= PTRDIFF_MAX / 8
    if (t.begin > t.end) where("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] decrease");
    if (t.end - t.begin != length) {
      where("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] hold " +
            std::to_string(t.end - t.begin) + " bytes, but shape " + t.shape_string() + " of " +
            dtype_name(t.dtype) + " needs " + std::to_string(length));
    }
    if (t.end > h.data_bytes) {
      where("data_offsets end " + std::to_string(t.end) + " is past the end of the data (" +
            std::to_string(h.data_bytes) + " bytes)");
    }
  }
  // Exact cover of the data buffer: sorted by offsets, each starts where the last ended.
  std::vector<const tensor_info*> by_offset;
  by_offset.reserve(h.tensors.size());
  for (const auto& t : h.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const tensor_info* a, const tensor_info* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t at = 0;
  const tensor_info* previous = nullptr;
  for (const tensor_info* t : by_offset) {
    if (t->begin != at) {
      detail::bad_file(file, "tensor '" + t->name + "' starts at byte " + std::to_string(t->begin) + " of the data, " +
                                 (t->begin > at ? "leaving a gap after " : "overlapping ") +
                                 (previous ? "tensor '" + previous->name + "'" : std::string("the start")) +
                                 " (which ends at " + std::to_string(at) + ")");
    }
    at = t->end;
    if (t->end > t->begin) previous = t;
  }
  if (at != h.data_bytes) {
    detail::bad_file(file, "the tensors cover " + std::to_string(at) + " bytes of the data buffer, which has " +
                               std::to_string(h.data_bytes) + " (bytes after the last tensor)");
  }
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
  return h;
}

namespace detail {

/// A file's bytes: memory-mapped read-only where the OS has mmap, else read;
/// or bytes handed over in memory.
class file_bytes {
 public:
  explicit file_bytes(std::vector<unsigned char> bytes) : buffer_(std::move(bytes)) {
    data_ = buffer_.data();
    size_ = buffer_.size();
  }
  explicit file_bytes(const std::string& path) {
#if SCALIFY_IO_MMAP
    // O_NONBLOCK: open() of a FIFO would wait for a writer before the
    // S_ISREG check below refuses it; a regular file ignores the flag.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) bad_file(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      bad_file(path, std::string("cannot stat: ") + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      bad_file(path, "not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        bad_file(path, std::string("cannot map: ") + std::strerror(e));
      }
      data_ = static_cast<const unsigned char*>(p);
      mapped_ = true;
    }
    ::close(fd);
#else
    std::ifstream f(path, std::ios::binary);
    if (!f) bad_file(path, "cannot open");
    buffer_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    data_ = buffer_.data();
    size_ = buffer_.size();
#endif
  }
  ~file_bytes() {
#if SCALIFY_IO_MMAP
    if (mapped_) ::munmap(const_cast<unsigned char*>(data_), size_);
#endif
  }
  file_bytes(const file_bytes&) = delete;
  file_bytes& operator=(const file_bytes&) = delete;

  std::span<const unsigned char> bytes() const { return {data_, size_}; }

 private:
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<unsigned char> buffer_;  // the bytes when not mapped
};

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Calls f.template operator()<T>() with the scalar type of a float dtype.
template <class F>
void with_float_dtype(tensor_dtype t, F&& f) {
  switch (t) {
    case tensor_dtype::F64: f.template operator()<double>(); return;
    case tensor_dtype::F32: f.template operator()<float>(); return;
    case tensor_dtype::F16: f.template operator()<float16>(); return;
    case tensor_dtype::BF16: f.template operator()<bfloat16>(); return;
    case tensor_dtype::F8_E4M3: f.template operator()<float8_e4m3fn>(); return;
    case tensor_dtype::F8_E5M2: f.template operator()<float8_e5m2>(); return;
    case tensor_dtype::F8_E8M0: f.template operator()<float8_e8m0fnu>(); return;
    default: throw std::invalid_argument(std::string("scalify::io: ") + dtype_name(t) + " is not a float dtype");
  }
}

}  // namespace detail

/// The view view<T>() returns: T data read in place from the mapped file.
template <class T>
using ScaledView = ScaledArray<Eigen::Map<const detail::row_matrix<T>>, float>;

/// A safetensors file, mapped read-only, its header checked on open. Loads
/// copy tensors into ScaledMatrix storage; views read them in place and stay
/// valid while the safetensors_file (or a copy of it: copies share the
/// mapping) lives. The file must not be changed while it is open.
///
/// **Example**:
/// ```
/// auto f = scalify::io::safetensors_file::open("model.safetensors");
/// ScaledMatrix<float8_e4m3fn> w = f.load<float8_e4m3fn>("fc1.w");      // copy, scale from fc1.w_scale
/// auto wv = f.view<float8_e4m3fn>("fc1.w");                            // no copy
/// ScaledMatrix<float> y = scalify::matmul(x8, wv);
/// ```
class safetensors_file {
 public:
  /// Maps and checks `path`. Throws format_error naming the file: cannot be
  /// opened, or any problem of the header (see the file comment).
  static safetensors_file open(const std::string& path, const read_limits& limits = {}) {
    safetensors_file f;
    f.path_ = path;
    f.bytes_ = std::make_shared<detail::file_bytes>(path);
    f.header_ = parse_safetensors(f.bytes_->bytes(), path, limits);
    return f;
  }
  /// The same from a file image in memory (e.g. received over a network);
  /// `name` stands for the path in messages. Throws format_error as open().
  static safetensors_file from_memory(std::vector<unsigned char> bytes, const std::string& name,
                                      const read_limits& limits = {}) {
    safetensors_file f;
    f.path_ = name;
    f.bytes_ = std::make_shared<detail::file_bytes>(std::move(bytes));
    f.header_ = parse_safetensors(f.bytes_->bytes(), name, limits);
    return f;
  }

  const std::string& path() const { return path_; }
  /// Every tensor, sorted by name.
  const std::vector<tensor_info>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const safetensors_header& header() const { return header_; }
  /// The tensor called `name`, or null.
  const tensor_info* find(std::string_view name) const { return header_.find(name); }
  /// The tensor called `name`; format_error naming the file if there is none.
  const tensor_info& at(std::string_view name) const {
    const tensor_info* t = find(name);
    if (t == nullptr) detail::bad_file(path_, "no tensor '" + std::string(name) + "'");
    return *t;
  }
  /// The raw bytes of a tensor of this file. Throws std::invalid_argument
  /// if `t`'s offsets do not lie within this file's data buffer (a
  /// tensor_info of another file, or made by hand).
  std::span<const unsigned char> bytes(const tensor_info& t) const {
    SCALIFY_CHECK(t.begin <= t.end && t.end <= header_.data_bytes, std::invalid_argument,
                  "scalify::io::safetensors_file::bytes: tensor '" + t.name + "' (data_offsets [" +
                      std::to_string(t.begin) + ", " + std::to_string(t.end) + "]) is not within the " +
                      std::to_string(header_.data_bytes) + " bytes of data of '" + path_ + "'");
    return bytes_->bytes().subspan(static_cast<size_t>(header_.data_start + t.begin),
                                   static_cast<size_t>(t.end - t.begin));
  }
  /// The metadata value of `key`, or `fallback`.
  std::string metadata(const std::string& key, const std::string& fallback) const {
    auto it = header_.metadata.find(key);
    return it == header_.metadata.end() ? fallback : it->second;
  }

  /// The per-tensor scale of `name`: `name_scale` (any float dtype, one
  /// element, finite and >= 0, exactly representable in Scale), or 1 when
  /// there is none. Throws format_error otherwise.
  template <class Scale = float>
  Scale scale_of(std::string_view name) const {
    const std::string scale_name = std::string(name) + "_scale";
    const tensor_info* s = find(scale_name);
    if (s == nullptr) return Scale(1.0f);
    const auto fail = [&](const std::string& what) { detail::bad_file(path_, "scale '" + scale_name + "': " + what); };
    if (!is_float_dtype(s->dtype)) fail(std::string("dtype ") + dtype_name(s->dtype) + " is not a float dtype");
    if (s->elements() != 1) {
      fail("shape " + s->shape_string() + " has " + std::to_string(s->elements()) +
           " elements; only per-tensor scales (one element) are supported");
    }
    double v = 0.0;
    detail::with_float_dtype(s->dtype, [&]<class T>() {
      T x;
      std::memcpy(static_cast<void*>(&x), bytes(*s).data(), sizeof(T));
      if constexpr (std::is_same_v<T, double>) {
        v = x;
      } else {
        v = static_cast<double>(static_cast<float>(x));
      }
    });
    if (!(v >= 0.0) || v > std::numeric_limits<double>::max()) {
      fail("value " + scalify::detail::number_string(v) + " is not a finite scale >= 0");
    }
    if constexpr (std::is_same_v<Scale, double>) {
      return v;
    } else {
      if (v > static_cast<double>(std::numeric_limits<float>::max())) {  // only an F64 scale can be
        fail("value " + scalify::detail::number_string(v) + " is not representable in " +
             scalify::detail::type_name<Scale>());
      }
      const Scale out = Scale(static_cast<float>(v));
      if (static_cast<double>(static_cast<float>(out)) != v) {
        fail("value " + scalify::detail::number_string(v) + " is not exactly representable as a " +
             scalify::detail::type_name<Scale>() + " scale");
      }
      return out;
    }
  }

  /// Copies tensor `name` (dtype exactly T's) into a ScaledMatrix<T, Scale>
  /// with its scale (scale_of). Throws format_error if there is no such
  /// tensor, its dtype differs (load_converted() converts) or its scale is bad.
  template <class T, class Scale = float>
  ScaledMatrix<T, Scale> load(std::string_view name) const {
    const tensor_info& t = checked(name, dtype_of<T>(), "load_converted");
    detail::row_matrix<T> data(t.rows(), t.cols());
    if (data.size() > 0) std::memcpy(static_cast<void*>(data.data()), bytes(t).data(), bytes(t).size());
    return ScaledMatrix<T, Scale>(std::move(data), scale_of<Scale>(name));
  }

  /// Tensor `name` of any float dtype rounded into T with `options`, with
  /// its scale: narrower dtypes widen exactly to float first, F64 rounds
  /// once, straight from the double (into float: nearest even, saturating
  /// if `options` say so; stochastic rounding of F64 into float throws
  /// std::invalid_argument, as convert() does). The explicit converting
  /// load: load() refuses a dtype that is not T.
  template <class T, class Scale = float>
  ScaledMatrix<T, Scale> load_converted(std::string_view name, const convert_options& options = {}) const {
    const tensor_info& t = at(name);
    if (t.dtype == dtype_of<T>()) return load<T, Scale>(name);
    if (!is_float_dtype(t.dtype)) {
      detail::bad_file(path_, "tensor '" + t.name + "': dtype " + dtype_name(t.dtype) + " is not a float dtype");
    }
    detail::row_matrix<T> data(t.rows(), t.cols());
    const auto n = static_cast<size_t>(data.size());
    detail::with_float_dtype(t.dtype, [&]<class U>() {
      std::vector<U> source(n);
      if (n > 0) std::memcpy(static_cast<void*>(source.data()), bytes(t).data(), bytes(t).size());
      if constexpr (std::is_same_v<T, double> || std::is_same_v<U, double>) {
        convert(std::span<const U>(source), std::span<T>(data.data(), n), options);  // one rounding (or exact)
      } else {
        std::vector<float> wide(n);
        for (size_t i = 0; i < n; ++i) wide[i] = static_cast<float>(source[i]);  // exact
        if constexpr (std::is_same_v<T, float>) {
          std::copy(wide.begin(), wide.end(), data.data());
        } else {
          convert(std::span<const float>(wide), std::span<T>(data.data(), n), options);
        }
      }
    });
    return ScaledMatrix<T, Scale>(std::move(data), scale_of<Scale>(name));
  }

  /// Loads tensor `name` into `dst`, whose shape it must have (an empty,
  /// 0 x 0 `dst` takes the file's): load(), or load_converted() with
  /// `options` if `convert`. Throws format_error naming the tensor and both
  /// shapes otherwise; `dst` is then unchanged.
  ///
  /// **Example**: `f.load_into("fc1.w", layer.w);  // same format and shape, or an error`
  template <class T, class Scale>
  void load_into(std::string_view name, ScaledMatrix<T, Scale>& dst, bool convert = false,
                 const convert_options& options = {}) const {
    const tensor_info& t = at(name);
    const bool empty_dst = dst.rows() == 0 && dst.cols() == 0;
    if (!empty_dst && (t.rows() != dst.rows() || t.cols() != dst.cols())) {
      detail::bad_file(path_, "tensor '" + t.name + "' has shape " + t.shape_string() + " " +
                                  scalify::detail::shape_string(t.rows(), t.cols()) + ", the destination is " +
                                  scalify::detail::shape_string(dst.rows(), dst.cols()));
    }
    dst = convert ? load_converted<T, Scale>(name, options) : load<T, Scale>(name);
  }

  /// Tensor `name` (dtype exactly T's) read in place: no copy, valid while
  /// this file object (or a copy) lives. Throws format_error as load(), and
  /// when the data is not aligned for T in the file (a writer that did not
  /// align its tensors; load() copies it instead).
  template <class T>
  ScaledView<T> view(std::string_view name) const {
    const tensor_info& t = checked(name, dtype_of<T>(), "load_converted");
    const unsigned char* p = bytes(t).data();
    if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) {
      detail::bad_file(path_, "tensor '" + t.name + "' is not aligned for a view of " + scalify::detail::type_name<T>() +
                                  " (file offset " + std::to_string(header_.data_start + t.begin) +
                                  "); load() copies it");
    }
    Eigen::Map<const detail::row_matrix<T>> map(reinterpret_cast<const T*>(p), t.rows(), t.cols());
    return ScaledView<T>(std::move(map), scale_of<float>(name));
  }

 private:
  safetensors_file() = default;

  const tensor_info& checked(std::string_view name, tensor_dtype want, const char* converting) const {
    const tensor_info& t = at(name);
    if (t.dtype != want) {
      detail::bad_file(path_, "tensor '" + t.name + "' is " + dtype_name(t.dtype) + ", not " + dtype_name(want) +
                                  " (use " + converting + "() to convert)");
    }
    if (t.rows() > 0 && t.cols() > 0 && t.rows() > PTRDIFF_MAX / t.cols()) {
      detail::bad_file(path_, "tensor '" + t.name + "' is too large");
    }
    return t;
  }

  std::string path_;
  std::shared_ptr<const detail::file_bytes> bytes_;
  safetensors_header header_;
};

/// Builds a safetensors file: tensors and metadata are copied in as they
/// are added; write() lays them out aligned (by descending element size, then
/// name) and replaces the file atomically (a temporary file renamed over it,
/// so a failed write leaves an existing file as it was). It refuses, with
/// std::invalid_argument before anything is written, whatever a reader with
/// the default read_limits would refuse, so it never replaces a file with
/// one that cannot be loaded.
///
/// **Example**:
/// ```
/// scalify::io::safetensors_writer w;
/// w.add("fc1.w", w8);               // F8_E4M3 data + fc1.w_scale (F32)
/// w.set_metadata("step", "1200");
/// w.write("model.safetensors");
/// ```
class safetensors_writer {
 public:
  /// Adds `x`'s data as tensor `name` (dtype of its scalar type; shape
  /// [rows, cols], or `shape` if given, which must have as many elements)
  /// and its scale as `name_scale` (shape [], F32; F8_E8M0 for an E8M0
  /// scale; F64 for a double scale). Throws std::invalid_argument for an
  /// empty, "__metadata__", non-UTF-8, too long (read_limits::max_name_bytes)
  /// or already used name (the data's or the scale's), a scale that is not
  /// finite and >= 0 (e.g. x / 0.0f), or a bad shape (shape_error: not
  /// `x`'s element count, more than read_limits::max_rank dimensions, a
  /// partial product of the dimensions beyond PTRDIFF_MAX / 8); nothing is
  /// added then.
  template <class D, class S>
  void add(const std::string& name, const ScaledArray<D, S>& x, std::optional<std::vector<int64_t>> shape = {}) {
    using T = typename D::Scalar;
    const std::string scale_name = name + "_scale";
    check_new_name(name);
    check_new_name(scale_name);
    std::vector<int64_t> dims = checked_shape(name, x.rows(), x.cols(), std::move(shape));
    using ScaleT = std::conditional_t<std::is_same_v<S, float8_e8m0fnu>, float8_e8m0fnu,
                                      std::conditional_t<std::is_same_v<S, double>, double, float>>;
    const ScaleT s = static_cast<ScaleT>(x.scale());
    const double sv = static_cast<double>(static_cast<std::conditional_t<std::is_same_v<S, double>, double, float>>(s));
    SCALIFY_CHECK(sv >= 0.0 && sv <= std::numeric_limits<double>::max(), std::invalid_argument,
                  "scalify::io::safetensors_writer: tensor '" + name + "' has scale " +
                      scalify::detail::number_string(sv) + ", not a finite scale >= 0 (a reader refuses it)");
    const detail::row_matrix<T> data = x.data();  // row-major, evaluated
    entry e{name, dtype_of<T>(), std::move(dims), {}};
    e.bytes.resize(static_cast<size_t>(data.size()) * sizeof(T));
    if (!e.bytes.empty()) std::memcpy(e.bytes.data(), static_cast<const void*>(data.data()), e.bytes.size());
    entry se{scale_name, dtype_of<ScaleT>(), {}, std::vector<unsigned char>(sizeof(ScaleT))};
    std::memcpy(se.bytes.data(), static_cast<const void*>(&s), sizeof(ScaleT));
    entries_.push_back(std::move(e));
    entries_.push_back(std::move(se));
  }

  /// Sets metadata `key` to `value` (strings; replaced if set before).
  /// Throws std::invalid_argument for a key or value that is not UTF-8 or a
  /// key longer than read_limits::max_name_bytes.
  void set_metadata(const std::string& key, const std::string& value) {
    check_length(key, "metadata key");
    check_utf8(key, "metadata key");
    check_utf8(value, "metadata value of '" + key + "'");
    metadata_[key] = value;
  }

  /// The whole file as bytes. Throws std::invalid_argument if the header
  /// would be longer than read_limits::max_header_bytes.
  std::vector<unsigned char> serialize() const {
    std::vector<const entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
      const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
      return sa != sb ? sa > sb : a->name < b->name;
    });
    nlohmann::json header = nlohmann::json::object();
    std::map<std::string, std::string> metadata = metadata_;
    metadata.emplace("scalify.version", SCALIFY_VERSION);
    metadata.emplace("format", "pt");  // what other readers (e.g. transformers) expect
    header["__metadata__"] = metadata;
    uint64_t at = 0;
    for (const entry* e : order) {
      header[e->name] = {{"dtype", dtype_name(e->dtype)},
                         {"shape", e->shape},
                         {"data_offsets", {at, at + e->bytes.size()}}};
      at += e->bytes.size();
    }
    std::string text = header.dump();
    while ((8 + text.size()) % 8 != 0) text += ' ';  // the data starts 8-byte aligned
    SCALIFY_CHECK(text.size() <= read_limits{}.max_header_bytes, std::invalid_argument,
                  "scalify::io::safetensors_writer: a header of " + std::to_string(text.size()) +
                      " bytes, more than readers take (read_limits::max_header_bytes, " +
                      std::to_string(read_limits{}.max_header_bytes) + ")");
    std::vector<unsigned char> out;
    out.reserve(8 + text.size() + at);
    const uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(n >> (8 * i)));
    out.insert(out.end(), text.begin(), text.end());
    for (const entry* e : order) out.insert(out.end(), e->bytes.begin(), e->bytes.end());
    return out;
  }

  /// Writes the file: into a temporary file of its own beside `path`
  /// (`path`.tmp-<pid>-<n>, n counting this process's writes, created
  /// anew: never an existing file or link of that name), flushed to the disk,
  /// then renamed over `path`, and the directory flushed (POSIX). So threads
  /// and processes writing the same path each put a whole file there, and a
  /// crash leaves the old file or the new one, never a part. Throws
  /// std::invalid_argument as serialize() (before anything is written),
  /// std::runtime_error naming the path if it cannot be written (an
  /// existing file at `path` is then unchanged).
  void write(const std::string& path) const {
    const std::vector<unsigned char> bytes = serialize();
    const auto fail = [&](int e) {
      throw std::runtime_error("scalify::io: cannot write '" + path + "': " + std::strerror(e));
    };
#if SCALIFY_IO_MMAP
    static std::atomic<uint64_t> writes{0};
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" +
                            std::to_string(writes.fetch_add(1, std::memory_order_relaxed));
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) fail(errno);
    int e = 0;  // the first error
    for (size_t done = 0; e == 0 && done < bytes.size();) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n == 0) {
        e = EIO;
      } else if (errno != EINTR) {
        e = errno;
      }
    }
    if (e == 0 && ::fsync(fd) != 0) e = errno;
    if (::close(fd) != 0 && e == 0) e = errno;
    if (e == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) e = errno;
    if (e != 0) {
      ::unlink(tmp.c_str());
      fail(e);
    }
    // The rename itself, on the disk: flush the directory (best effort:
    // some file systems refuse fsync on a directory).
    const size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
#else
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) fail(errno);
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    const bool closed = std::fclose(f) == 0;
    if (!written || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int e = errno;
      std::remove(tmp.c_str());
      fail(e);
    }
#endif
  }

  /// Names added so far (data and scales).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

 private:
  struct entry {
    std::string name;
    tensor_dtype dtype;
    std::vector<int64_t> shape;
    std::vector<unsigned char> bytes;
  };

  static void check_utf8(const std::string& s, const std::string& what) {
    try {
      (void)nlohmann::json(s).dump();
    } catch (const nlohmann::json::exception&) {
      throw std::invalid_argument("scalify::io::safetensors_writer: " + what + " is not valid UTF-8");
    }
  }
  /// A name or metadata key of at most read_limits::max_name_bytes (the name cut short in the message).
  static void check_length(const std::string& name, const char* what) {
    const size_t limit = read_limits{}.max_name_bytes;
    SCALIFY_CHECK(name.size() <= limit, std::invalid_argument,
                  std::string("scalify::io::safetensors_writer: ") + what + " '" + name.substr(0, 40) + "...' of " +
                      std::to_string(name.size()) + " bytes, more than readers take (read_limits::max_name_bytes, " +
                      std::to_string(limit) + ")");
  }
  void check_new_name(const std::string& name) const {
    check_length(name, "tensor name");
    SCALIFY_CHECK(!name.empty() && name != "__metadata__", std::invalid_argument,
                  "scalify::io::safetensors_writer: invalid tensor name '" + name + "'");
    check_utf8(name, "tensor name '" + name + "'");
    for (const auto& e : entries_) {
      SCALIFY_CHECK(e.name != name, std::invalid_argument,
                    "scalify::io::safetensors_writer: tensor '" + name + "' added twice");
    }
  }
  static std::vector<int64_t> checked_shape(const std::string& name, Eigen::Index rows, Eigen::Index cols,
                                            std::optional<std::vector<int64_t>> shape) {
    if (!shape) return {static_cast<int64_t>(rows), static_cast<int64_t>(cols)};
    const size_t max_rank = read_limits{}.max_rank;
    SCALIFY_CHECK(shape->size() <= max_rank, shape_error,
                  "scalify::io::safetensors_writer: shape given for '" + name + "' has " +
                      std::to_string(shape->size()) + " dimensions, more than readers take (read_limits::max_rank, " +
                      std::to_string(max_rank) + ")");
    uint64_t n = 0;
    const char* problem = std::any_of(shape->begin(), shape->end(), [](int64_t d) { return d < 0; })
                              ? "has a negative dimension"
                              : detail::shape_problem(*shape, n);
    SCALIFY_CHECK(problem == nullptr, shape_error,
                  "scalify::io::safetensors_writer: shape given for '" + name + "' " + (problem ? problem : ""));
    SCALIFY_CHECK(n == static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols), shape_error,
                  "scalify::io::safetensors_writer: shape given for '" + name + "' does not have the " +
                      std::to_string(rows * cols) + " elements of its " + scalify::detail::shape_string(rows, cols) +
                      " data");
    return *std::move(shape);
  }

  std::vector<entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace scalify::io

#endif  // SCALIFY_IO_SAFETENSORS_HPP_
