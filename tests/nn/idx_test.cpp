// The IDX reader (nn/idx.hpp): good files, gzip or not, and every kind of bad
// file crafted in a temporary directory gives a format_error naming the file.
#include <catch2/catch.hpp>
#include <unistd.h>  // getpid
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "scalify/nn/idx.hpp"

namespace fs = std::filesystem;
namespace nn = scalify::nn;
using Bytes = std::vector<uint8_t>;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("scalify_idx_test_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

Bytes idx(std::vector<uint32_t> dims, uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  size_t n = 1;
  for (auto d : dims) {
    put_u32(b, d);
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(i % 256));
  return b;
}

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  gzclose(f);
}

Bytes read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
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

}  // namespace

TEST_CASE("idx: reads uncompressed and gzip files alike", "[nn][idx]") {
  TempDir dir;
  const Bytes images = idx({3, 2, 4}), labels = idx({3});
  write_raw(dir.file("im"), images);
  write_raw(dir.file("lb"), labels);
  write_gz(dir.file("im.gz"), images);
  write_gz(dir.file("lb.gz"), labels);
  for (const auto& [im, lb] : {std::pair{"im", "lb"}, std::pair{"im.gz", "lb.gz"}}) {
    const nn::idx_dataset d = nn::load_idx_dataset(dir.file(im), dir.file(lb));
    CHECK(d.size() == 3);
    CHECK(d.height == 2);
    CHECK(d.width == 4);
    CHECK(d.images.cols() == 8);
    CHECK(d.images(1, 3) == Approx(11.0 / 255.0));
    CHECK(d.labels == std::vector<int>{0, 1, 2});
  }
  const nn::idx_array a = nn::read_idx(dir.file("im.gz"));
  CHECK(a.dims == std::vector<uint32_t>{3, 2, 4});
  CHECK(a.data.size() == 24);
}

TEST_CASE("idx: bad files give a format_error naming the file and the problem", "[nn][idx]") {
  TempDir dir;
  const std::string missing = dir.file("nope-idx1-ubyte.gz");
  CHECK_THAT(error_of([&] { nn::read_idx(missing); }), Catch::Contains(missing) && Catch::Contains("cannot open"));

  auto check_bad = [&](const std::string& name, const Bytes& b, const std::string& what) {
    for (bool gz : {false, true}) {
      const std::string path = dir.file(name + (gz ? ".gz" : ""));
      gz ? write_gz(path, b) : write_raw(path, b);
      INFO(path);
      CHECK_THAT(error_of([&] { nn::read_idx(path); }), Catch::Contains(path) && Catch::Contains(what));
    }
  };
  Bytes b = idx({4});
  b[1] = 7;
  check_bad("magic", b, "bad magic number");
  check_bad("type", idx({4}, 0x0D), "element type 0x0d");
  check_bad("header", Bytes{0, 0}, "truncated header");
  check_bad("dims0", Bytes{0, 0, 8, 0}, "0 dimensions");
  check_bad("dimmissing", Bytes{0, 0, 8, 2, 0, 0, 0, 5}, "dimension 1 missing");
  b = idx({10, 3, 3});
  b.resize(b.size() - 5);
  check_bad("truncated", b, "truncated: 85 data bytes");
  b = idx({4});
  b.push_back(1);
  check_bad("trailing", b, "unexpected bytes after");
  check_bad("empty", Bytes{}, "truncated header (0 of 4 bytes)");
  Bytes huge = {0, 0, 8, 3};
  put_u32(huge, 0xFFFFFFFF);
  put_u32(huge, 0xFFFFFFFF);
  put_u32(huge, 2);
  check_bad("huge", huge, "sizes too large");
}

TEST_CASE("idx: corrupted and truncated gzip streams are errors, not crashes", "[nn][idx]") {
  TempDir dir;
  Bytes payload = idx({200, 8, 8});
  write_gz(dir.file("good.gz"), payload);
  Bytes gz = read_raw(dir.file("good.gz"));
  REQUIRE(gz.size() > 40);

  Bytes cut(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2));
  write_raw(dir.file("cut.gz"), cut);
  const std::string cut_msg = error_of([&] { nn::read_idx(dir.file("cut.gz")); });
  CHECK_THAT(cut_msg, Catch::Contains(dir.file("cut.gz")));

  Bytes garbled = gz;
  for (size_t i = 20; i < garbled.size() - 8; i += 3) garbled[i] ^= 0x5A;
  write_raw(dir.file("garbled.gz"), garbled);
  CHECK_THAT(error_of([&] { nn::read_idx(dir.file("garbled.gz")); }), Catch::Contains(dir.file("garbled.gz")));
}

TEST_CASE("idx: dataset checks dimensions and counts", "[nn][idx]") {
  TempDir dir;
  write_raw(dir.file("im3"), idx({3, 2, 2}));
  write_raw(dir.file("im2"), idx({3, 4}));
  write_raw(dir.file("lb3"), idx({3}));
  write_raw(dir.file("lb4"), idx({4}));
  write_raw(dir.file("lb2d"), idx({3, 1}));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im3"), dir.file("lb4")); }),
             Catch::Contains("has 3 images") && Catch::Contains("has 4 labels"));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im2"), dir.file("lb3")); }),
             Catch::Contains(dir.file("im2")) && Catch::Contains("3 dimensions"));
  CHECK_THAT(error_of([&] { nn::load_idx_dataset(dir.file("im3"), dir.file("lb2d")); }),
             Catch::Contains(dir.file("lb2d")) && Catch::Contains("1 dimension"));
  CHECK_THAT(error_of([&] { nn::load_fashion_mnist(dir.path.string()); }),
             Catch::Contains("train-images-idx3-ubyte") && Catch::Contains("dataset-fashion-mnist"));
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
