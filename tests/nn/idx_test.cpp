// The IDX reader (nn/idx.hpp): good files, gzip or not, and every kind of bad
// file crafted in a temporary directory gives a format_error naming the file
// and the problem, and no large allocation.
//
// Allocations. This program replaces the global operator new: it records the
// largest single request and refuses (std::bad_alloc) any request over 1 GiB,
// so a reader that trusts a lying header fails here at once, with an escaped
// bad_alloc, instead of touching gigabytes. Tests read the record through
// largest_new_during(). Eigen's matrices use malloc, not operator new: they
// are only allocated after the sizes were checked against the data read.
#include <catch2/catch.hpp>
#include <signal.h>    // signal, SIGPIPE (a FIFO reader that stops early)
#include <sys/stat.h>  // mkfifo
#include <unistd.h>    // getpid
#include <zlib.h>      // gzopen, gzwrite: writes the .gz files the reader must read

#include <algorithm>   // std::max
#include <atomic>      // std::atomic
#include <cstdint>     // uint8_t, uint32_t, uint64_t
#include <cstdio>      // std::fopen, std::fwrite
#include <cstdlib>     // std::malloc, std::free
#include <filesystem>  // std::filesystem
#include <fstream>     // std::ofstream, std::ifstream
#include <new>         // std::bad_alloc, std::nothrow_t
#include <string>      // std::string
#include <thread>      // std::jthread (FIFO writer)
#include <vector>      // std::vector

#include "scalify/nn/idx.hpp"
#include "support/temp_dir.hpp"  // TempDir

namespace fs = std::filesystem;
namespace nn = scalify::nn;
using Bytes = std::vector<uint8_t>;

// ------------------------------------------------------------------------------
// The allocation guard (see the top of the file)

namespace {

constexpr std::size_t kNewLimit = std::size_t{1} << 30;
std::atomic<std::size_t> g_largest_new{0};

void* guarded_new(std::size_t n) {
  std::size_t seen = g_largest_new.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_new.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (n > kNewLimit) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}

}  // namespace

void* operator new(std::size_t n) { return guarded_new(n); }
void* operator new[](std::size_t n) { return guarded_new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return guarded_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

/// The largest single operator new request while fn() runs (a format_error
/// from fn is expected and swallowed; any other exception propagates).
template <class F>
std::size_t largest_new_during(F fn) {
  g_largest_new.store(0);
  try {
    fn();
  } catch (const scalify::format_error&) {
  }
  return g_largest_new.load();
}

// ------------------------------------------------------------------------------
// Files

using scalify_test::TempDir;

void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

/// An IDX header for `dims` (type 0x08 unless given), without data.
Bytes header(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (auto d : dims) put_u32(b, d);
  return b;
}

/// A complete IDX file: the header, then data bytes 0, 1, 2, ... (mod 256).
Bytes idx(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  Bytes b = header(dims, type);
  size_t n = 1;
  for (auto d : dims) n *= d;
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(i % 256));
  return b;
}

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

/// gzip (one member per part) through zlib's own writer.
void write_gz(const std::string& path, const std::vector<Bytes>& parts) {
  std::ofstream(path, std::ios::binary);  // truncate
  for (const Bytes& b : parts) {
    gzFile f = gzopen(path.c_str(), "ab");  // each gzopen "ab" starts a new member
    REQUIRE(f != nullptr);
    if (!b.empty()) REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
    REQUIRE(gzclose(f) == Z_OK);
  }
}
void write_gz(const std::string& path, const Bytes& b) { write_gz(path, std::vector<Bytes>{b}); }

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

Bytes gz_bytes(const TempDir& dir, const Bytes& payload) {
  write_gz(dir.file("tmp.gz"), payload);
  return read_raw(dir.file("tmp.gz"));
}

/// The message of the format_error `fn` throws (fails the test if it throws nothing else).
template <class F>
std::string error_of(F fn) {
  try {
    fn();
  } catch (const scalify::format_error& e) {
    return e.what();
  }
  FAIL("no scalify::format_error thrown");
  return "";
}

/// The product of the sizes: its value modulo 2^64, and whether it reached 2^64.
struct size_product {
  uint64_t wrapped = 1;
  bool overflow = false;
};
size_product product(const std::vector<uint32_t>& dims) {
  size_product p;
  for (auto d : dims) p.overflow |= __builtin_mul_overflow(p.wrapped, uint64_t{d}, &p.wrapped);
  for (auto d : dims) p.overflow &= d != 0;  // a zero size: 0, whatever the others
  return p;
}

/// A read_idx result must be self-consistent whatever the file.
void check_consistent(const nn::idx_array& a) {
  REQUIRE(!a.dims.empty());
  const size_product p = product(a.dims);
  CHECK(!p.overflow);
  CHECK(p.wrapped == a.data.size());
}

}  // namespace

// ------------------------------------------------------------------------------
// Good files

TEST_CASE("idx: reads uncompressed and gzip files alike", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const Bytes images = idx({3, 2, 4}), labels = idx({3});
  write_raw(dir.file("im"), images);
  write_raw(dir.file("lb"), labels);
  write_gz(dir.file("im.gz"), images);
  write_gz(dir.file("lb.gz"), labels);
  // Concatenated gzip members read as one stream (as gzip -d does), empty ones included.
  write_gz(dir.file("im2.gz"), {Bytes(images.begin(), images.begin() + 7), Bytes{},
                                Bytes(images.begin() + 7, images.end())});
  for (const auto& [im, lb] : {std::pair{"im", "lb"}, std::pair{"im.gz", "lb.gz"}, std::pair{"im2.gz", "lb"}}) {
    INFO(im);
    const nn::idx_dataset d = nn::load_idx_dataset(dir.file(im), dir.file(lb));
    CHECK(d.size() == 3);
    CHECK(d.height == 2);
    CHECK(d.width == 4);
    CHECK(d.images.cols() == 8);
    CHECK(d.images(1, 3) == Approx(11.0 / 255.0));
    CHECK(d.images(2, 7) == Approx(23.0 / 255.0));
    CHECK(d.labels == std::vector<int>{0, 1, 2});
  }
  const nn::idx_array a = nn::read_idx(dir.file("im.gz"));
  CHECK(a.dims == std::vector<uint32_t>{3, 2, 4});
  CHECK(a.data == Bytes(images.begin() + 16, images.end()));
}

TEST_CASE("idx: empty arrays and 4 dimensions", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  // A zero size makes the product 0 whatever the others: nothing to read, dims kept.
  const std::vector<uint32_t> dims = {0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF};
  write_raw(dir.file("zero"), header(dims));
  const nn::idx_array a = nn::read_idx(dir.file("zero"));
  CHECK(a.dims == dims);
  CHECK(a.data.empty());
  // The zero last: the product of the others (2^32 - 1)^3 must not be refused first.
  const std::vector<uint32_t> dims_last = {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0};
  write_raw(dir.file("zero_last"), header(dims_last));
  CHECK(nn::read_idx(dir.file("zero_last")).dims == dims_last);
  write_gz(dir.file("zero_gz.gz"), header({5000, 5000, 5000, 0}));
  CHECK(nn::read_idx(dir.file("zero_gz.gz")).data.empty());
  write_raw(dir.file("four"), idx({2, 3, 1, 5}));
  const nn::idx_array b = nn::read_idx(dir.file("four"));
  CHECK(b.dims == std::vector<uint32_t>{2, 3, 1, 5});
  CHECK(b.data.size() == 30);
  CHECK(b.data[29] == 29);
}

TEST_CASE("idx: a FIFO (size unknown up front) reads like a file", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  ::signal(SIGPIPE, SIG_IGN);  // the reader may stop before the writer is done
  auto through_fifo = [&](const std::string& name, const Bytes& b, auto read) {
    const std::string path = dir.file(name);
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    std::jthread writer([&] {  // joined even if read() throws (it has opened the FIFO by then)
      if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(b.data(), 1, b.size(), f);
        std::fclose(f);
      }
    });
    return read(path);
  };
  const Bytes good = idx({5, 3});
  const nn::idx_array a = through_fifo("good", good, [](const std::string& p) { return nn::read_idx(p); });
  CHECK(a.dims == std::vector<uint32_t>{5, 3});
  CHECK(a.data == Bytes(good.begin() + 12, good.end()));
  // A header that claims 2^34 bytes with 100 present: the buffer grows with the data only.
  Bytes lying = header({131072, 131072});
  lying.resize(lying.size() + 100, 7);
  std::string msg;
  const std::size_t largest = through_fifo("lying", lying, [&](const std::string& p) {
    return largest_new_during([&] { msg = error_of([&] { nn::read_idx(p); }); });
  });
  CHECK_THAT(msg, Catch::Contains(dir.file("lying")) && Catch::Contains("truncated: 100 data bytes") &&
                      Catch::Contains("(131072 x 131072) needs 17179869184"));
  CHECK(largest <= (std::size_t{1} << 17));
  Bytes trailing = idx({4});
  trailing.push_back(9);
  const std::string t = through_fifo("trailing", trailing, [](const std::string& p) {
    return error_of([&] { nn::read_idx(p); });
  });
  CHECK_THAT(t, Catch::Contains("unexpected bytes after the 4 data bytes of (4)"));
}

// ------------------------------------------------------------------------------
// Bad files: the IDX layer (each case plain and gzip-compressed)

TEST_CASE("idx: bad files give a format_error naming the file and the problem", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const std::string missing = dir.file("nope-idx1-ubyte.gz");
  CHECK_THAT(error_of([&] { nn::read_idx(missing); }),
             Catch::Contains(missing) && Catch::Contains("cannot open") && Catch::Contains("No such file"));
  CHECK_THAT(error_of([&] { nn::read_idx(dir.path.string()); }),
             Catch::Contains(dir.path.string()) && Catch::Contains("is a directory"));

  auto check_bad = [&](const std::string& name, const Bytes& b, const std::string& what) {
    for (bool gz : {false, true}) {
      const std::string path = dir.file(name + (gz ? ".gz" : ""));
      gz ? write_gz(path, b) : write_raw(path, b);
      INFO(path);
      CHECK_THAT(error_of([&] { nn::read_idx(path); }),
                 Catch::Contains("'" + path + "' is not a valid IDX file: ") && Catch::Contains(what));
    }
  };
  Bytes b = idx({4});
  b[1] = 7;
  check_bad("magic", b, "bad magic number 0x00070801");
  check_bad("type", idx({4}, 0x0D), "element type 0x0d is not supported");
  check_bad("header", Bytes{0, 0}, "truncated header (2 of 4 bytes)");
  check_bad("empty", Bytes{}, "truncated header (0 of 4 bytes)");
  check_bad("dims0", Bytes{0, 0, 8, 0}, "0 dimensions (expected 1 to 4)");
  check_bad("dims5", idx({1, 1, 1, 1, 1}), "5 dimensions (expected 1 to 4)");
  check_bad("dimmissing", Bytes{0, 0, 8, 2, 0, 0, 0, 5},
            "truncated header: 2 dimensions need 8 bytes of sizes, the data ends after 4");
  check_bad("dimpartial", Bytes{0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 1, 0},
            "truncated header: 3 dimensions need 12 bytes of sizes, the data ends after 9");
  b = idx({10, 3, 3});
  b.resize(b.size() - 5);
  check_bad("truncated", b, "truncated: 85 data bytes, (10 x 3 x 3) needs 90");
  b = header({7});
  check_bad("nodata", b, "truncated: 0 data bytes, (7) needs 7");
  b = idx({4});
  b.push_back(1);
  b.push_back(2);
  check_bad("trailing", b, "after the 4 data bytes of (4)");
  CHECK_THAT(error_of([&] { nn::read_idx(dir.file("trailing")); }), Catch::Contains("unexpected 2 bytes after"));
  CHECK_THAT(error_of([&] { nn::read_idx(dir.file("trailing.gz")); }), Catch::Contains("unexpected bytes after"));
  b.pop_back();
  write_raw(dir.file("trailing1"), b);
  CHECK_THAT(error_of([&] { nn::read_idx(dir.file("trailing1")); }), Catch::Contains("unexpected 1 byte after"));
}

TEST_CASE("idx: a header claiming more data than the file holds allocates nothing big", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  // 12 bytes that claim 131072 x 131072 = 2^34 bytes (at the limit): used to
  // allocate and zero 16 GiB before reading anything.
  const Bytes small = header({131072, 131072});
  REQUIRE(small.size() == 12);
  for (bool gz : {false, true}) {
    const std::string path = dir.file(gz ? "claims.gz" : "claims");
    gz ? write_gz(path, small) : write_raw(path, small);
    std::string msg;
    const std::size_t largest = largest_new_during([&] { msg = error_of([&] { nn::read_idx(path); }); });
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("truncated: 0 data bytes, (131072 x 131072) needs " +
                                                             std::to_string(uint64_t{1} << 34)));
    CHECK(largest < (std::size_t{1} << 20));
  }
  // 1 MiB of data behind a header that claims 2^33 bytes, gzip: the buffer
  // grows with the data, to at most twice what there is.
  Bytes mib = header({2, 1u << 16, 1u << 16});
  mib.resize(mib.size() + (std::size_t{1} << 20), 0x55);
  write_gz(dir.file("mib.gz"), mib);
  std::string msg;
  const std::size_t largest = largest_new_during([&] { msg = error_of([&] { nn::read_idx(dir.file("mib.gz")); }); });
  CHECK_THAT(msg, Catch::Contains("truncated: 1048576 data bytes, (2 x 65536 x 65536) needs 8589934592"));
  CHECK(largest <= (std::size_t{2} << 20));
  CHECK(largest >= (std::size_t{1} << 20));  // the guard does see the data buffer
  // The same file uncompressed: its size is checked before anything is allocated.
  write_raw(dir.file("mib"), mib);
  CHECK(largest_new_during([&] { nn::read_idx(dir.file("mib")); }) < (std::size_t{1} << 17));
}

TEST_CASE("idx: sizes whose product is over 16 GiB or wraps past 2^64 are refused, sizes printed in full",
          "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  struct bad_sizes {
    std::vector<uint32_t> dims;
    bool wraps;  // the product modulo 2^64 is small: the file holds that many data bytes
  };
  const bad_sizes cases[] = {
      {{2, 2147549185u, 4294836226u}, true},             // 2^64 + 4: wraps to 4
      {{4, 1u << 31, 1u << 31}, true},                   // 2^64: wraps to 0
      {{1u << 16, 1u << 16, 1u << 16, 1u << 16}, true},  // 2^64
      {{0xFFFFFFFF, 0xFFFFFFFF, 2}, false},              // ~2^65
      {{131072, 131073}, false},                         // 2^34 + 2^17: just over the limit
  };
  for (const auto& c : cases) {
    const size_product p = product(c.dims);
    REQUIRE((p.overflow || p.wrapped > nn::kIdxMaxBytes));
    const uint64_t wrapped = p.wrapped;
    REQUIRE((p.overflow && wrapped <= 4) == c.wraps);  // the crafted wrap-around is real
    Bytes b = header(c.dims);
    if (c.wraps) b.resize(b.size() + wrapped, 1);
    std::string dims = "(";
    for (size_t i = 0; i < c.dims.size(); ++i) dims += (i ? " x " : "") + std::to_string(c.dims[i]);
    dims += ")";
    for (bool gz : {false, true}) {
      const std::string path = dir.file(gz ? "big.gz" : "big");
      gz ? write_gz(path, b) : write_raw(path, b);
      INFO(path << " " << dims);
      CHECK_THAT(error_of([&] { nn::read_idx(path); }),
                 Catch::Contains(path) && Catch::Contains("sizes too large: " + dims + " is more than the limit of " +
                                                          std::to_string(uint64_t{1} << 34) + " bytes"));
    }
  }
}

// ------------------------------------------------------------------------------
// Bad files: the gzip layer

TEST_CASE("idx: truncated gzip streams, at every length, are errors", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const Bytes payload = idx({6, 5});
  const Bytes gz = gz_bytes(dir, payload);
  REQUIRE(gz.size() > 18);  // 10-byte header, deflate data, 8-byte trailer (CRC-32, length)
  const std::string path = dir.file("cut.gz");
  for (size_t len = 0; len < gz.size(); ++len) {
    write_raw(path, Bytes(gz.begin(), gz.begin() + static_cast<long>(len)));
    INFO("first " << len << " of " << gz.size() << " bytes");
    const std::string msg = error_of([&] { nn::read_idx(path); });
    CHECK_THAT(msg, Catch::Contains(path));
    if (len < 2) {
      CHECK_THAT(msg, Catch::Contains("truncated header (" + std::to_string(len) + " of 4 bytes)"));
    } else if (len < 10) {
      CHECK_THAT(msg, Catch::Contains("gzip stream truncated: the file ends after " + std::to_string(len) +
                                      " bytes, inside the gzip header"));
    } else {
      // Including the trailer cut off (len >= gz.size() - 8): the data is all
      // there but the stream has no end.
      CHECK_THAT(msg, Catch::Contains("gzip stream truncated: the file ends after " + std::to_string(len) +
                                      " bytes, inside the compressed data"));
    }
  }
  // The second member cut: the first one's data is all there.
  Bytes two = gz_bytes(dir, Bytes(payload.begin(), payload.begin() + 20));
  const Bytes rest = gz_bytes(dir, Bytes(payload.begin() + 20, payload.end()));
  two.insert(two.end(), rest.begin(), rest.end() - 3);
  write_raw(path, two);
  CHECK_THAT(error_of([&] { nn::read_idx(path); }), Catch::Contains("gzip stream truncated"));
}

TEST_CASE("idx: bytes after the gzip stream are errors", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const Bytes payload = idx({4, 4});
  const Bytes gz = gz_bytes(dir, payload);
  const std::string path = dir.file("after.gz");
  for (const Bytes& garbage : {Bytes{'x', 'y', 'z'}, Bytes{0}, Bytes{0x1f}, Bytes(1000, 0), Bytes{0x1f, 0x8c}}) {
    Bytes b = gz;
    b.insert(b.end(), garbage.begin(), garbage.end());
    write_raw(path, b);
    INFO(garbage.size() << " bytes of garbage");
    CHECK_THAT(error_of([&] { nn::read_idx(path); }),
               Catch::Contains(path) && Catch::Contains(std::to_string(garbage.size()) +
                                                        (garbage.size() == 1 ? " byte" : " bytes") +
                                                        " after the end of the gzip stream at byte " +
                                                        std::to_string(gz.size())));
  }
  // Another member that decompresses to more data: the IDX layer's trailing bytes.
  write_gz(path, {payload, Bytes{1, 2, 3}});
  CHECK_THAT(error_of([&] { nn::read_idx(path); }), Catch::Contains("unexpected bytes after the 16 data bytes"));
  // Another member with a bad header.
  Bytes b = gz;
  b.insert(b.end(), {0x1f, 0x8b, 0x07, 0, 0, 0, 0, 0, 0, 3});
  write_raw(path, b);
  CHECK_THAT(error_of([&] { nn::read_idx(path); }),
             Catch::Contains("bad gzip header (zlib: unknown compression method)"));
}

TEST_CASE("idx: bad gzip headers, corrupted data and trailers are named as such", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const Bytes payload = idx({200, 8, 8});
  const Bytes gz = gz_bytes(dir, payload);
  REQUIRE(gz.size() > 40);
  const std::string path = dir.file("bad.gz");
  auto error_with = [&](size_t at, uint8_t value) {
    Bytes b = gz;
    b[at] = value;
    write_raw(path, b);
    return error_of([&] { nn::read_idx(path); });
  };
  CHECK_THAT(error_with(2, 7),
             Catch::Contains(path) && Catch::Contains("bad gzip header (zlib: unknown compression method)"));
  CHECK_THAT(error_with(3, 0xE0), Catch::Contains("bad gzip header (zlib: unknown header flags set)"));
  // FHCRC with a header CRC that cannot match.
  CHECK_THAT(error_with(3, 0x02), Catch::Contains("bad gzip header (zlib: header crc mismatch)"));
  // The trailer: CRC-32 of the data (4 bytes), then its length mod 2^32.
  CHECK_THAT(error_with(gz.size() - 8, gz[gz.size() - 8] ^ 1), Catch::Contains("the CRC-32 does not match the data"));
  CHECK_THAT(error_with(gz.size() - 4, gz[gz.size() - 4] ^ 1), Catch::Contains("the length does not match the data"));
  // A block type 3 (reserved) right after the header.
  CHECK_THAT(error_with(10, 0x07), Catch::Contains("corrupted gzip data before compressed byte") &&
                                       Catch::Contains("(zlib: invalid block type)"));
  Bytes garbled = gz;
  for (size_t i = 20; i < garbled.size() - 8; i += 3) garbled[i] ^= 0x5A;
  write_raw(path, garbled);
  CHECK_THAT(error_of([&] { nn::read_idx(path); }), Catch::Contains(path) && Catch::Contains("gzip"));
}

TEST_CASE("idx: every prefix and every bit flip of small files is a clean error or a consistent array",
          "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  const std::string path = dir.file("flip");
  int errors = 0, reads = 0;
  for (bool gz : {false, true}) {
    const Bytes good = gz ? gz_bytes(dir, idx({3, 2, 2})) : idx({3, 2, 2});
    for (size_t i = 0; i <= good.size(); ++i) {
      write_raw(path, Bytes(good.begin(), good.begin() + static_cast<long>(i)));
      if (i < good.size()) CHECK_THAT(error_of([&] { nn::read_idx(path); }), Catch::Contains(path));
    }
    for (size_t i = 0; i < good.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        Bytes b = good;
        b[i] ^= static_cast<uint8_t>(1u << bit);
        write_raw(path, b);
        INFO((gz ? "gzip" : "plain") << ", byte " << i << " bit " << bit);
        try {
          check_consistent(nn::read_idx(path));
          ++reads;
        } catch (const scalify::format_error& e) {
          CHECK_THAT(std::string(e.what()), Catch::Contains(path));
          ++errors;
        }
      }
    }
  }
  CHECK(errors > 0);
  CHECK(reads > 0);  // flips in the plain data bytes read fine
}

// ------------------------------------------------------------------------------
// Datasets

TEST_CASE("idx: dataset checks dimensions and counts", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  write_raw(dir.file("im3"), idx({3, 2, 2}));
  write_raw(dir.file("im2"), idx({3, 4}));
  write_raw(dir.file("lb3"), idx({3}));
  write_raw(dir.file("lb4"), idx({4}));
  write_raw(dir.file("lb2d"), idx({3, 1}));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im3"), dir.file("lb4")); }),
             Catch::Contains("'" + dir.file("im3") + "' has 3 images") &&
                 Catch::Contains("'" + dir.file("lb4") + "' has 4 labels"));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im2"), dir.file("lb3")); }),
             Catch::Contains(dir.file("im2")) &&
                 Catch::Contains("images must have 3 dimensions (N, H, W), got (3 x 4)"));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im3"), dir.file("lb2d")); }),
             Catch::Contains(dir.file("lb2d")) && Catch::Contains("labels must have 1 dimension (N), got (3 x 1)"));
  CHECK_THAT(error_of([&] { nn::load_fashion_mnist(dir.path.string()); }),
             Catch::Contains("train-images-idx3-ubyte") && Catch::Contains("dataset-fashion-mnist"));
}

TEST_CASE("idx: dataset image sizes are checked against the limit and Eigen::Index", "[nn][idx]") {
  TempDir dir("scalify_idx_test");
  write_raw(dir.file("lb0"), header({0}));
  write_raw(dir.file("lb4"), idx({4}));
  // (0 x (2^32-1) x (2^32-1)): read_idx accepts an empty array, but H * W
  // (~1.8e19) overflows Eigen::Index: used to hit signed overflow, then an
  // Eigen assertion (or, with -DNDEBUG, "images 0 x -8589934591").
  write_raw(dir.file("wide0"), header({0, 0xFFFFFFFF, 0xFFFFFFFF}));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("wide0"), dir.file("lb0")); }),
             Catch::Contains(dir.file("wide0")) &&
                 Catch::Contains("an image of 4294967295 x 4294967295 pixels is over the limit of 17179869184"));
  // One pixel over the limit, and at it (an empty set of 2^34-pixel images).
  write_raw(dir.file("over0"), header({0, 131072, 131073}));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("over0"), dir.file("lb0")); }),
             Catch::Contains("an image of 131072 x 131073 pixels is over the limit"));
  write_raw(dir.file("at0"), header({0, 131072, 131072}));
  const nn::idx_dataset at = nn::load_idx_dataset(dir.file("at0"), dir.file("lb0"));
  CHECK(at.size() == 0);
  CHECK(at.images.cols() == Eigen::Index{1} << 34);
  CHECK(at.height * at.width == at.images.cols());
  // (4 x 2^31 x 2^31) wraps to 0 bytes in 64 bits: used to give bad_alloc.
  write_raw(dir.file("wrap4"), header({4, 1u << 31, 1u << 31}));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("wrap4"), dir.file("lb4")); }),
             Catch::Contains(dir.file("wrap4")) && Catch::Contains("sizes too large"));
  // Images with no pixels: consistent, if useless.
  write_raw(dir.file("flat"), header({4, 0, 28}));
  const nn::idx_dataset flat = nn::load_idx_dataset(dir.file("flat"), dir.file("lb4"));
  CHECK(flat.size() == 4);
  CHECK(flat.images.cols() == 0);
  CHECK(flat.labels == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("idx: the Debian Fashion-MNIST test set, when installed", "[nn][idx]") {
  const std::string dir = nn::kFashionMnistDir;
  const std::string images = dir + "/t10k-images-idx3-ubyte.gz", labels = dir + "/t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(images) || !fs::exists(labels)) {
    WARN("dataset-fashion-mnist is not installed: skipped");
    return;
  }
  const nn::idx_dataset d = nn::load_idx_dataset(images, labels);
  CHECK(d.size() == 10000);
  CHECK(d.height == 28);
  CHECK(d.width == 28);
  CHECK(d.images.maxCoeff() <= 1.0f);
  std::vector<int> counts(10, 0);
  for (int l : d.labels) {
    REQUIRE(l >= 0);
    REQUIRE(l < 10);
    ++counts[static_cast<size_t>(l)];
  }
  for (int c : counts) CHECK(c == 1000);  // the test set is balanced
}
