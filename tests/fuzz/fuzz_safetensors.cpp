// fuzz_safetensors: libFuzzer target for the safetensors reader
// (scalify/io/safetensors.hpp).
//
// Input: the bytes of a file, read through safetensors_file::from_memory (the
// checks open() runs on a mapped file) and, for every 64th input, through a
// real file and open().
//
// Findings: an exception other than scalify::format_error from the parse or
// a load, a format_error whose message does not name the file, a crash, an
// ASan or UBSan report, or an accepted header that breaks its invariants:
// names unique and sorted; each tensor's byte length = elements x dtype size
// (recomputed here with overflow checks) and inside the data buffer; the
// tensors tile the buffer exactly. For an accepted file every float tensor is
// then loaded (load_converted<float>, load<T> of its own dtype, view<T> when
// aligned), and the loads must agree bit for bit with each other.
#include <unistd.h>  // getpid

#include <algorithm>  // std::sort
#include <cstdint>    // uint8_t, uint64_t
#include <cstdio>     // std::fprintf, std::fopen
#include <cstdlib>    // std::abort
#include <cstring>    // std::memcmp
#include <exception>  // std::exception
#include <string>     // std::string
#include <vector>     // std::vector

#include "scalify/io/safetensors.hpp"

namespace {

namespace io = scalify::io;
const std::string kName = "fuzz.safetensors";

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors finding: %s\n", what.c_str());
  std::abort();
}

void check_invariants(const io::safetensors_header& h) {
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const auto& t = h.tensors[i];
    if (i > 0 && !(h.tensors[i - 1].name < t.name)) finding("names not unique and sorted at '" + t.name + "'");
    unsigned __int128 n = io::dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) finding("negative dimension accepted in '" + t.name + "'");
      n *= static_cast<uint64_t>(d);
      if (n > (static_cast<unsigned __int128>(1) << 64)) n = static_cast<unsigned __int128>(1) << 64;
    }
    if (t.begin > t.end || n != t.end - t.begin) finding("byte length of '" + t.name + "' disagrees with its shape");
    if (t.end > h.data_bytes) finding("'" + t.name + "' ends past the data buffer");
    spans.emplace_back(t.begin, t.end);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& [b, e] : spans) {
    if (b != at) finding("the tensors do not tile the data buffer");
    at = e;
  }
  if (at != h.data_bytes) finding("the tensors do not cover the data buffer");
}

template <class T>
void load_all_ways(const io::safetensors_file& f, const io::tensor_info& t) {
  const auto as_float = f.load_converted<float>(t.name);
  const auto own = f.load<T>(t.name);
  if (own.rows() != t.rows() || own.cols() != t.cols() || as_float.size() != own.size()) finding("load shape");
  if (own.size() > 0 && std::memcmp(static_cast<const void*>(own.data().data()), f.bytes(t).data(),
                                    f.bytes(t).size()) != 0) {
    finding("load<T> of '" + t.name + "' differs from the file's bytes");
  }
  if (reinterpret_cast<uintptr_t>(f.bytes(t).data()) % alignof(T) == 0) {
    const auto v = f.view<T>(t.name);
    if (v.scale() != own.scale() || v.size() != own.size()) finding("view and load disagree on '" + t.name + "'");
  }
}

void exercise(const io::safetensors_file& f) {
  check_invariants(f.header());
  for (const auto& t : f.tensors()) {
    if (!io::is_float_dtype(t.dtype)) {
      (void)f.bytes(t);
      continue;
    }
    if (t.elements() > (int64_t{1} << 20)) continue;  // no more than 4 MiB of floats per tensor
    try {
      scalify::io::detail::with_float_dtype(t.dtype, [&]<class T>() { load_all_ways<T>(f, t); });
    } catch (const scalify::format_error& e) {
      // A bad scale (<name>_scale): must name the file.
      if (std::string(e.what()).find(kName) == std::string::npos) finding(std::string("unnamed: ") + e.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int count = 0;
  const std::vector<unsigned char> bytes(data, data + size);
  try {
    exercise(io::safetensors_file::from_memory(bytes, kName, {.max_header_bytes = 1 << 16}));
  } catch (const scalify::format_error& e) {
    if (std::string(e.what()).find(kName) == std::string::npos) finding(std::string("unnamed: ") + e.what());
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  }
  if (++count % 64 == 0) {  // the mapped path too
    const std::string path = "/tmp/scalify_fuzz_safetensors_" + std::to_string(::getpid());
    std::FILE* out = std::fopen(path.c_str(), "wb");
    if (out == nullptr) finding("cannot write " + path);
    if (size > 0) std::fwrite(data, 1, size, out);
    std::fclose(out);
    try {
      (void)io::safetensors_file::open(path, {.max_header_bytes = 1 << 16});
    } catch (const scalify::format_error&) {
    } catch (const std::exception& e) {
      finding(std::string("unexpected exception from open: ") + e.what());
    }
    std::remove(path.c_str());
  }
  return 0;
}
