// scalify/io/safetensors.hpp: round trips of every storage format and shape,
// bit for bit; files crafted byte by byte here (an independent writer of the
// format) read correctly, and every check of a hostile file gives a
// format_error naming the file, the tensor and the problem; writer errors.
//
// The [.numpy] cases exchange files with tests/io/safetensors_ref.py (python3 +
// numpy, an independent reader and writer); ctest runs them where numpy is.
#include <fcntl.h>     // open (a FIFO)
#include <sys/stat.h>  // mkfifo
#include <unistd.h>    // getpid, close

#include <catch2/catch.hpp>

#include <chrono>      // std::chrono::seconds
#include <cmath>       // std::isnan, std::ldexp
#include <cstdint>     // uint8_t, uint64_t
#include <cstdio>      // std::snprintf
#include <cstdlib>     // std::getenv, std::strtod
#include <cstring>     // std::memcmp, std::memcpy
#include <filesystem>  // std::filesystem
#include <fstream>     // std::ifstream, std::ofstream
#include <functional>  // std::cref
#include <future>      // std::async
#include <iterator>    // std::istreambuf_iterator
#include <random>      // std::mt19937_64
#include <sstream>     // std::istringstream
#include <string>      // std::string
#include <type_traits> // std::is_same_v, std::is_integral_v
#include <vector>      // std::vector

#include "scalify/io/safetensors.hpp"
#include "scalify/ops/matmul.hpp"
#include "support/temp_dir.hpp"  // TempDir
#include "support/narrow_types.hpp"  // code_of, from_code, ref_format
#include "support/reference.hpp"     // ref::decode

namespace fs = std::filesystem;
namespace io = scalify::io;
using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify::ScaledMatrix;
using Bytes = std::vector<unsigned char>;

namespace {

using scalify_test::TempDir;

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

/// A file from its parts: 8-byte little-endian `length` (the header's size
/// unless given), the header text, the data.
Bytes craft(const std::string& header, const Bytes& data = {}, uint64_t length = UINT64_MAX) {
  if (length == UINT64_MAX) length = header.size();
  Bytes b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<unsigned char>(length >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

/// The format_error message of parsing `b`, or "" if it parses.
std::string parse_error(const Bytes& b, const io::read_limits& limits = {}) {
  try {
    (void)io::parse_safetensors(b, "crafted.safetensors", limits);
  } catch (const scalify::format_error& e) {
    return e.what();
  }
  return "";
}

template <class T>
ScaledMatrix<T> random_codes(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& gen) {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> d(rows, cols);
  for (Eigen::Index i = 0; i < d.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      d.data()[i] = Eigen::numext::bit_cast<float>(static_cast<uint32_t>(gen()));  // any bits, NaNs included
    } else {
      d.data()[i] = scalify_test::from_code<T>(static_cast<uint32_t>(gen()) & (sizeof(T) == 1 ? 0xFFu : 0xFFFFu));
    }
  }
  return ScaledMatrix<T>(std::move(d), 0.125f);
}

template <class T>
bool same_bits(const T* a, const T* b, Eigen::Index n) {
  return n == 0 || std::memcmp(static_cast<const void*>(a), static_cast<const void*>(b), sizeof(T) * n) == 0;
}

}  // namespace

// ------------------------------------------------------------------------------
// Round trips

TEMPLATE_TEST_CASE("every format and shape round-trips bit for bit, by load and by view", "[io]", float, float16,
                   bfloat16, float8_e4m3fn, float8_e5m2) {
  TempDir dir("scalify_safetensors_test");
  std::mt19937_64 gen(7);
  const std::vector<std::pair<Eigen::Index, Eigen::Index>> shapes = {{0, 0}, {0, 5}, {3, 0}, {1, 1},
                                                                      {3, 7}, {64, 33}, {16, 16}};
  io::safetensors_writer w;
  std::vector<ScaledMatrix<TestType>> xs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    ScaledMatrix<TestType> x;
    if constexpr (sizeof(TestType) == 1) {
      if (shapes[i] == std::pair<Eigen::Index, Eigen::Index>{16, 16}) {  // all 256 codes
        x = random_codes<TestType>(16, 16, gen);
        for (int c = 0; c < 256; ++c) x.data().data()[c] = scalify_test::from_code<TestType>(static_cast<uint32_t>(c));
      }
    }
    if (x.size() == 0) x = random_codes<TestType>(shapes[i].first, shapes[i].second, gen);
    x.set_scale(std::ldexp(1.0f, static_cast<int>(i) * 7 - 20));
    w.add("t" + std::to_string(i), x);
    xs.push_back(std::move(x));
  }
  w.set_metadata("note", "round trip \xc3\xa9");  // UTF-8
  const std::string path = dir.file("rt.safetensors");
  w.write(path);

  const auto f = io::safetensors_file::open(path);
  CHECK(f.tensors().size() == 2 * shapes.size());
  CHECK(f.metadata("note", "") == "round trip \xc3\xa9");
  CHECK(f.metadata("scalify.version", "") == SCALIFY_VERSION);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string name = "t" + std::to_string(i);
    INFO(name);
    const auto& info = f.at(name);
    CHECK(info.dtype == io::dtype_of<TestType>());
    CHECK(info.shape == std::vector<int64_t>{shapes[i].first, shapes[i].second});
    CHECK(f.at(name + "_scale").dtype == io::tensor_dtype::F32);
    CHECK(f.at(name + "_scale").shape.empty());
    const auto y = f.load<TestType>(name);
    REQUIRE(y.rows() == xs[i].rows());
    REQUIRE(y.cols() == xs[i].cols());
    CHECK(y.scale() == xs[i].scale());
    CHECK(same_bits(y.data().data(), xs[i].data().data(), y.size()));
    const auto v = f.view<TestType>(name);  // the writer aligns every tensor
    CHECK(v.scale() == xs[i].scale());
    CHECK(v.rows() == xs[i].rows());
    CHECK(same_bits(v.data().data(), xs[i].data().data(), v.size()));
  }
}

TEST_CASE("E8M0 scales and data, column-major data and shapes given to add()", "[io]") {
  TempDir dir("scalify_safetensors_test");
  std::mt19937_64 gen(3);
  io::safetensors_writer w;
  // An E8M0 scale: written as F8_E8M0, read back as E8M0 or float.
  ScaledMatrix<float8_e4m3fn, float8_e8m0fnu> x(random_codes<float8_e4m3fn>(5, 4, gen).data(),
                                                float8_e8m0fnu(0x1p-9f));
  w.add("x", x);
  // Every E8M0 code as data (NaN included).
  Eigen::Matrix<float8_e8m0fnu, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> e(2, 128);
  for (int c = 0; c < 256; ++c) e.data()[c] = float8_e8m0fnu::from_bits(static_cast<uint8_t>(c));
  w.add("e", ScaledMatrix<float8_e8m0fnu>(e, 1.0f));
  // Column-major storage is written row-major.
  Eigen::MatrixXf cm(3, 2);
  cm << 1, 2, 3, 4, 5, 6;
  w.add("cm", scalify::ScaledArray<Eigen::MatrixXf>(cm, 0.5f));
  // A bias as [n]; a rank-3 shape.
  w.add("b", ScaledMatrix<float>(Eigen::RowVectorXf::LinSpaced(6, 0, 5), 1.0f), std::vector<int64_t>{6});
  w.add("r3", ScaledMatrix<float16>(random_codes<float16>(6, 4, gen)), std::vector<int64_t>{2, 3, 4});
  const std::string path = dir.file("misc.safetensors");
  w.write(path);
  const auto f = io::safetensors_file::open(path);

  CHECK(f.at("x_scale").dtype == io::tensor_dtype::F8_E8M0);
  const auto x8 = f.load<float8_e4m3fn, float8_e8m0fnu>("x");
  CHECK(static_cast<float>(x8.scale()) == 0x1p-9f);
  CHECK(same_bits(x8.data().data(), x.data().data(), 20));
  CHECK(f.load<float8_e4m3fn>("x").scale() == 0x1p-9f);  // into a float scale: exact
  const auto e8 = f.load<float8_e8m0fnu>("e");
  for (int c = 0; c < 256; ++c) CHECK(e8.data().data()[c].bits() == c);
  const auto c = f.load<float>("cm");
  CHECK(c.data()(2, 1) == 6.0f);
  CHECK(c.data()(1, 0) == 3.0f);
  CHECK(f.at("b").shape == std::vector<int64_t>{6});
  const auto b = f.load<float>("b");
  CHECK((b.rows() == 1 && b.cols() == 6 && b.data()(0, 5) == 5.0f));
  const auto r3 = f.load<float16>("r3");
  CHECK((r3.rows() == 6 && r3.cols() == 4));
  // A float scale that E8M0 cannot hold exactly: a clear error.
  io::safetensors_writer w2;
  w2.add("y", ScaledMatrix<float>(Eigen::MatrixXf::Ones(1, 1), 3.0f));
  w2.write(dir.file("y.safetensors"));
  CHECK_THROWS_WITH((io::safetensors_file::open(dir.file("y.safetensors")).load<float, float8_e8m0fnu>("y")),
                    Catch::Contains("y_scale") && Catch::Contains("not exactly representable"));
}

TEST_CASE("load_converted rounds any float dtype, load refuses another dtype", "[io]") {
  TempDir dir("scalify_safetensors_test");
  std::mt19937_64 gen(5);
  io::safetensors_writer w;
  auto x = random_codes<float8_e5m2>(4, 9, gen);
  for (Eigen::Index i = 0; i < x.size(); ++i) {  // finite codes only: compared by value below
    if (!std::isfinite(static_cast<float>(x.data().data()[i]))) x.data().data()[i] = float8_e5m2(1.0f);
  }
  w.add("x", x);
  w.write(dir.file("c.safetensors"));
  const auto f = io::safetensors_file::open(dir.file("c.safetensors"));
  CHECK_THROWS_WITH(f.load<float8_e4m3fn>("x"), Catch::Contains("c.safetensors") && Catch::Contains("'x' is F8_E5M2, not F8_E4M3") &&
                                                    Catch::Contains("load_converted"));
  CHECK_THROWS_WITH(f.view<float16>("x"), Catch::Contains("'x' is F8_E5M2, not F16"));
  CHECK_THROWS_WITH(f.load<float>("nope"), Catch::Contains("no tensor 'nope'"));
  // load_into: the destination's format and shape, or an error that leaves it alone.
  ScaledMatrix<float8_e5m2> into(Eigen::Matrix<float8_e5m2, -1, -1, Eigen::RowMajor>(4, 9), 2.0f);
  f.load_into("x", into);
  CHECK(same_bits(into.data().data(), x.data().data(), into.size()));
  ScaledMatrix<float8_e5m2> wrong(Eigen::Matrix<float8_e5m2, -1, -1, Eigen::RowMajor>(9, 4), 2.0f);
  CHECK_THROWS_WITH(f.load_into("x", wrong), Catch::Contains("'x' has shape [4, 9] (4 x 9), the destination is (9 x 4)"));
  CHECK(wrong.scale() == 2.0f);
  ScaledMatrix<float16> h16;
  CHECK_THROWS_WITH(f.load_into("x", h16), Catch::Contains("use load_converted"));
  f.load_into("x", h16, /*convert=*/true);
  CHECK(h16.rows() == 4);
  // e5m2 -> float16 and float: exact; -> e4m3fn: rounded (nearest even), as scalify's cast.
  const auto h = f.load_converted<float16>("x");
  const auto g = f.load_converted<float>("x");
  const auto q = f.load_converted<float8_e4m3fn>("x", {.saturate = true});
  CHECK(h.scale() == x.scale());
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const float v = static_cast<float>(x.data().data()[i]);
    CHECK(static_cast<float>(h.data().data()[i]) == v);
    CHECK(g.data().data()[i] == v);
    CHECK(scalify_test::code_of(q.data().data()[i]) ==
          scalify_test::code_of(scalify::saturate_cast<float8_e4m3fn>(v)));
  }
}

TEST_CASE("a view multiplies as its loaded copy does", "[io]") {
  TempDir dir("scalify_safetensors_test");
  std::mt19937_64 gen(11);
  auto w8 = random_codes<float8_e4m3fn>(48, 24, gen);
  for (Eigen::Index i = 0; i < w8.size(); ++i) {
    if (std::isnan(static_cast<float>(w8.data().data()[i]))) w8.data().data()[i] = float8_e4m3fn(0.5f);
  }
  w8.set_scale(0x1p-6f);
  io::safetensors_writer w;
  w.add("fc.w", w8);
  w.write(dir.file("m.safetensors"));
  const auto f = io::safetensors_file::open(dir.file("m.safetensors"));
  ScaledMatrix<float8_e4m3fn> x(random_codes<float8_e4m3fn>(5, 48, gen).data().unaryExpr([](float8_e4m3fn c) {
    return std::isnan(static_cast<float>(c)) ? float8_e4m3fn(1.0f) : c;
  }), 2.0f);
  const ScaledMatrix<float> by_view = scalify::matmul(x, f.view<float8_e4m3fn>("fc.w"));
  const ScaledMatrix<float> by_copy = scalify::matmul(x, f.load<float8_e4m3fn>("fc.w"));
  const ScaledMatrix<float> by_original = scalify::matmul(x, w8);
  CHECK(by_view.scale() == by_original.scale());
  CHECK(same_bits(by_view.data().data(), by_original.data().data(), by_view.size()));
  CHECK(same_bits(by_copy.data().data(), by_original.data().data(), by_copy.size()));
  // The view survives the file object it came from through a copy of it.
  const auto copy = f;
  CHECK(copy.view<float8_e4m3fn>("fc.w").data()(3, 4).bits() == w8.data()(3, 4).bits());
}

// ------------------------------------------------------------------------------
// Files from an independent writer: crafted here byte by byte

TEST_CASE("hand-made files: unscaled tensors, scales of other dtypes, unaligned data", "[io]") {
  TempDir dir("scalify_safetensors_test");
  // Three F16 values (1, -2, 0.5), no scale; then one F32 scale for "s" of dtype
  // BF16, and the "__metadata__" first; keys in no particular order.
  const Bytes data = {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38,  // F16 1, -2, 0.5
                      0x00, 0x40,                          // BF16 2.0: s's data
                      0x80, 0x3e};                         // BF16 0.25: s_scale
  const std::string header =
      R"({"s_scale":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},"__metadata__":{"k":"v"},)"
      R"("h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"s":{"shape":[1,1],"dtype":"BF16","data_offsets":[6,8]}})";
  write_bytes(dir.file("hand.safetensors"), craft(header, data));
  const auto f = io::safetensors_file::open(dir.file("hand.safetensors"));
  CHECK(f.metadata("k", "") == "v");
  const auto h = f.load<float16>("h");
  CHECK(h.scale() == 1.0f);
  CHECK((h.rows() == 1 && h.cols() == 3));
  CHECK(static_cast<float>(h.data()(0, 1)) == -2.0f);
  const auto s = f.load<bfloat16>("s");
  CHECK(s.scale() == 0.25f);
  CHECK(static_cast<float>(s.data()(0, 0)) == 2.0f);
  // 8 + header length is odd here: the F16 data is not 2-byte aligned in the map.
  if ((8 + header.size()) % 2 == 1) {
    CHECK_THROWS_WITH(f.view<float16>("h"), Catch::Contains("not aligned") && Catch::Contains("load() copies"));
  } else {
    CHECK(static_cast<float>(f.view<float16>("h").data()(0, 2)) == 0.5f);
  }
}

TEST_CASE("bad scales: a clear error naming the scale", "[io]") {
  TempDir dir("scalify_safetensors_test");
  const auto one_f32 = [](float v) {
    Bytes b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
  };
  const auto file_with_scale = [&](const std::string& scale_json, const Bytes& scale_bytes) {
    Bytes data = {0x38};  // e4m3 1.0
    data.insert(data.end(), scale_bytes.begin(), scale_bytes.end());
    const std::string header = R"({"w":{"dtype":"F8_E4M3","shape":[1,1],"data_offsets":[0,1]},"w_scale":)" +
                               scale_json + "}";
    write_bytes(dir.file("scale.safetensors"), craft(header, data));
    return io::safetensors_file::open(dir.file("scale.safetensors"));
  };
  const std::string f32_at_1 = R"({"dtype":"F32","shape":[],"data_offsets":[1,5]})";
  CHECK_THROWS_WITH(file_with_scale(f32_at_1, one_f32(NAN)).load<float8_e4m3fn>("w"),
                    Catch::Contains("scale 'w_scale'") && Catch::Contains("not a finite scale"));
  CHECK_THROWS_WITH(file_with_scale(f32_at_1, one_f32(INFINITY)).load<float8_e4m3fn>("w"),
                    Catch::Contains("not a finite scale"));
  CHECK_THROWS_WITH(file_with_scale(f32_at_1, one_f32(-1.0f)).load<float8_e4m3fn>("w"),
                    Catch::Contains("not a finite scale"));
  CHECK(file_with_scale(f32_at_1, one_f32(0.0f)).load<float8_e4m3fn>("w").scale() == 0.0f);  // allowed: all zeros
  CHECK_THROWS_WITH(file_with_scale(R"({"dtype":"F32","shape":[2],"data_offsets":[1,9]})",
                                    Bytes(8, 0))
                        .load<float8_e4m3fn>("w"),
                    Catch::Contains("only per-tensor scales"));
  CHECK_THROWS_WITH(file_with_scale(R"({"dtype":"I32","shape":[],"data_offsets":[1,5]})", Bytes(4, 0))
                        .load<float8_e4m3fn>("w"),
                    Catch::Contains("I32 is not a float dtype"));
}

TEST_CASE("hostile headers: format_error naming the file, the tensor and the problem", "[io]") {
  const Bytes d4(4, 0);
  const std::string ok_t = R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  REQUIRE(parse_error(craft("{" + ok_t + "}", d4)).empty());  // the base case parses

  struct bad {
    const char* what;
    Bytes file;
    const char* message;
  };
  const std::vector<bad> cases = {
      {"too short", Bytes{1, 2, 3}, "too short"},
      {"length past the end", craft("{}", {}, 1000), "runs past the end of the file"},
      {"length huge", craft("{}", {}, UINT64_MAX - 1), "more than the limit"},
      {"empty header", craft("", {}, 0), "empty header"},
      {"not JSON", craft(R"({"__metadata__": {"a": "b",}})", {}), "invalid JSON"},
      {"not UTF-8", craft("{\"\xff\xfe\":{}}", {}), "invalid JSON"},
      {"control character", craft("{\"a\x01\":{}}", {}), "invalid JSON"},
      {"trailing garbage", craft("{} x", {}), "invalid JSON"},
      {"root is an array", craft("[]", {}), "unexpected array"},
      {"root is a string", craft("\"x\"", {}), "unexpected string"},
      {"duplicate tensor", craft("{" + ok_t + "," + ok_t + "}", d4), "\"t\" appears twice"},
      {"unknown dtype", craft(R"({"t":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", d4), "unknown dtype \"F12\""},
      {"negative dimension", craft(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", d4), "negative number"},
      {"fractional dimension", craft(R"({"t":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", d4), "not an integer"},
      {"missing field", craft(R"({"t":{"dtype":"F32","shape":[1]}})", {}), "tensor 't': needs"},
      {"unknown field", craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", d4), "unknown field \"x\""},
      {"repeated field", craft(R"({"t":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", d4), "field \"dtype\" appears twice"},
      {"one offset", craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", d4), "needs 2 numbers"},
      {"three offsets", craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", d4), "more than 2 numbers"},
      {"decreasing offsets", craft(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", d4), "decrease"},
      {"length mismatch", craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", d4), "needs 8"},
      {"past the end", craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d4), "past the end of the data"},
      {"gap", craft(R"({"t":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}})", d4), "leaving a gap after the start"},
      {"overlap", craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}})", d4),
       "overlapping tensor 'a'"},
      {"trailing bytes", craft("{" + ok_t + "}", Bytes(6, 0)), "cover 4 bytes of the data buffer, which has 6"},
      {"shape overflows", craft(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", d4), "overflows"},
      {"shape too large", craft(R"({"t":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", d4), "too large"},
      {"huge shape, small data", craft(R"({"t":{"dtype":"U8","shape":[1000000000000],"data_offsets":[0,4]}})", d4), "needs 1000000000000"},
      {"nested object", craft(R"({"t":{"dtype":{"a":1},"shape":[1],"data_offsets":[0,4]}})", d4), "unexpected object"},
      {"nested array", craft(R"({"t":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", d4), "unexpected array"},
      {"metadata not a string", craft(R"({"__metadata__":{"k":1}})", {}), "__metadata__ value of \"k\""},
      {"metadata nested", craft(R"({"__metadata__":{"k":{}}})", {}), "__metadata__ value of \"k\""},
      {"tensor is a number", craft(R"({"t":5})", {}), "unexpected number"},
      {"null", craft(R"({"t":null})", {}), "unexpected null"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string m = parse_error(c.file);
    CHECK_THAT(m, Catch::Contains("'crafted.safetensors'") && Catch::Contains(c.message));
  }
  // Tensor-specific problems name the tensor.
  CHECK_THAT(parse_error(craft(R"({"w1":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", d4)),
             Catch::Contains("tensor 'w1'"));
  // Limits: header size, rank, name length.
  CHECK_THAT(parse_error(craft("{" + ok_t + "}", d4), {.max_header_bytes = 16}), Catch::Contains("more than the limit of 16"));
  std::string deep = R"({"t":{"dtype":"U8","shape":[)";
  for (int i = 0; i < 17; ++i) deep += i ? ",1" : "1";
  deep += R"(],"data_offsets":[0,1]}})";
  CHECK_THAT(parse_error(craft(deep, Bytes(1, 0))), Catch::Contains("more than 16 dimensions"));
  CHECK_THAT(parse_error(craft("{\"" + std::string(5000, 'a') + "\":{}}", {})), Catch::Contains("5000 bytes"));
  // Deep nesting stops at the first level the grammar does not allow.
  CHECK_THAT(parse_error(craft(std::string(100000, '['), {})), Catch::Contains("unexpected array"));
}

TEST_CASE("open: missing files, directories, empty files", "[io]") {
  TempDir dir("scalify_safetensors_test");
  CHECK_THROWS_WITH(io::safetensors_file::open(dir.file("missing.safetensors")),
                    Catch::Contains("missing.safetensors") && Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(io::safetensors_file::open(dir.path.string()), Catch::Contains("not a regular file"));
  write_bytes(dir.file("empty"), {});
  CHECK_THROWS_WITH(io::safetensors_file::open(dir.file("empty")), Catch::Contains("too short"));
  write_bytes(dir.file("min"), craft("{}"));
  CHECK(io::safetensors_file::open(dir.file("min")).tensors().empty());
}

TEST_CASE("writer errors leave nothing half-done", "[io]") {
  TempDir dir("scalify_safetensors_test");
  io::safetensors_writer w;
  const ScaledMatrix<float> x(Eigen::MatrixXf::Ones(2, 3), 1.0f);
  w.add("x", x);
  CHECK_THROWS_WITH(w.add("x", x), Catch::Contains("'x' added twice"));
  CHECK_THROWS_WITH(w.add("x_scale", x), Catch::Contains("'x_scale' added twice"));
  CHECK_THROWS_WITH(w.add("", x), Catch::Contains("invalid tensor name"));
  CHECK_THROWS_WITH(w.add("__metadata__", x), Catch::Contains("invalid tensor name"));
  CHECK_THROWS_WITH(w.add("bad\xff", x), Catch::Contains("not valid UTF-8"));
  CHECK_THROWS_AS(w.add("y", x, std::vector<int64_t>{5}), scalify::shape_error);
  CHECK_THROWS_AS(w.add("y", x, std::vector<int64_t>{-2, -3}), scalify::shape_error);
  CHECK_THROWS_WITH(w.set_metadata("k", "\xc3"), Catch::Contains("not valid UTF-8"));
  CHECK(w.names() == std::vector<std::string>{"x", "x_scale"});
  // An existing file survives a write that fails.
  const std::string path = dir.file("keep.safetensors");
  w.write(path);
  const Bytes before = read_bytes(path);
  CHECK_THROWS_WITH(w.write(dir.file("no-such-dir/x.safetensors")), Catch::Contains("cannot write"));
  fs::create_directories(dir.path / "occupied");
  CHECK_THROWS_WITH(w.write((dir.path / "occupied").string()), Catch::Contains("cannot write"));
  CHECK(read_bytes(path) == before);
  CHECK(fs::is_directory(dir.path / "occupied"));
}

TEST_CASE("a shape whose partial products pass PTRDIFF_MAX is refused, even with a zero dimension", "[io]") {
  // [2^62, 2, 0] has 0 elements, but rows() multiplies 2^62 * 2 first: the parse must refuse it.
  CHECK_THAT(parse_error(craft(R"({"t":{"dtype":"F32","shape":[4611686018427387904,2,0],"data_offsets":[0,0]}})")),
             Catch::Contains("tensor 't'") && Catch::Contains("is too large"));
  CHECK_THAT(parse_error(craft(R"({"t":{"dtype":"U8","shape":[2,4611686018427387904,0],"data_offsets":[0,0]}})")),
             Catch::Contains("is too large"));
  // A zero first keeps every partial product 0: an empty tensor of 0 x 2^60 (rows 0).
  const auto f = io::safetensors_file::from_memory(
      craft(R"({"t":{"dtype":"F32","shape":[0,1152921504606846976],"data_offsets":[0,0]}})"), "zero.safetensors");
  CHECK(f.at("t").rows() == 0);
  CHECK(f.load<float>("t").size() == 0);
  // The writer refuses such a shape for an empty matrix too.
  io::safetensors_writer w;
  const ScaledMatrix<float> empty(Eigen::MatrixXf(0, 2), 1.0f);
  CHECK_THROWS_AS(w.add("t", empty, std::vector<int64_t>{int64_t{1} << 62, 2, 0}), scalify::shape_error);
  CHECK(w.names().empty());
}

TEST_CASE("load_converted of an F64 tensor rounds once, from the double", "[io]") {
  // Each value lies just above a midpoint of T by 2^-40, which float (24 bits) drops: rounding
  // through float lands on the midpoint and goes to even (down); rounding the double goes up.
  const auto f64_file = [](double v) {
    Bytes d(8);
    std::memcpy(d.data(), &v, 8);
    return io::safetensors_file::from_memory(craft(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", d),
                                             "f64.safetensors");
  };
  const double h = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  CHECK(static_cast<float>(f64_file(h).load_converted<float16>("x").data()(0, 0)) == 0x1.004p+0f);
  const double b = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  CHECK(static_cast<float>(f64_file(b).load_converted<bfloat16>("x").data()(0, 0)) == 0x1.02p+0f);
  const double e = 1.0 + std::ldexp(1.0, -4) + std::ldexp(1.0, -40);
  const float8_e4m3fn e4 = f64_file(e).load_converted<float8_e4m3fn>("x").data()(0, 0);
  CHECK(static_cast<float>(e4) == 0x1.2p+0f);
  CHECK(scalify_test::code_of(e4) == scalify_test::code_of(float8_e4m3fn(e)));
  const double m = 1.0 + std::ldexp(1.0, -3) + std::ldexp(1.0, -40);
  CHECK(static_cast<float>(f64_file(m).load_converted<float8_e5m2>("x").data()(0, 0)) == 1.25f);
  // Toward zero and saturation apply to the double.
  CHECK(static_cast<float>(f64_file(1e300).load_converted<float8_e4m3fn>("x", {.saturate = true}).data()(0, 0)) ==
        448.0f);
  CHECK(static_cast<float>(
            f64_file(h).load_converted<float16>("x", {.round = scalify::rounding::toward_zero}).data()(0, 0)) == 1.0f);
}

TEST_CASE("a double scale beyond float's range reads back as a double, and as a float is refused", "[io]") {
  Eigen::Matrix<float, -1, -1, Eigen::RowMajor> m(1, 2);
  m << 1.0f, 2.0f;
  io::safetensors_writer w;
  w.add("x", ScaledMatrix<float, double>(m, 1e300));
  const auto f = io::safetensors_file::from_memory(w.serialize(), "dbl.safetensors");
  CHECK(f.at("x_scale").dtype == io::tensor_dtype::F64);
  CHECK(f.load<float, double>("x").scale() == 1e300);
  CHECK_THROWS_WITH(f.load<float>("x"), Catch::Contains("scale 'x_scale'") &&
                                            Catch::Contains("value 1e+300 is not representable in float"));
}

TEST_CASE("bytes() refuses a tensor_info that lies outside this file's data", "[io]") {
  io::safetensors_writer w1, w2;
  w1.add("small", ScaledMatrix<float>(Eigen::MatrixXf::Ones(1, 1), 1.0f));
  w2.add("big", ScaledMatrix<float>(Eigen::MatrixXf::Ones(64, 64), 1.0f));
  const auto f1 = io::safetensors_file::from_memory(w1.serialize(), "a.safetensors");
  const auto f2 = io::safetensors_file::from_memory(w2.serialize(), "b.safetensors");
  CHECK_THROWS_AS(f1.bytes(f2.at("big")), std::invalid_argument);
  io::tensor_info backwards = f1.at("small");
  std::swap(backwards.begin, backwards.end);
  CHECK_THROWS_AS(f1.bytes(backwards), std::invalid_argument);
  CHECK(f1.bytes(f1.at("small")).size() == 4);
}

TEST_CASE("the writer refuses, before writing, what its reader would refuse", "[io]") {
  TempDir dir("scalify_safetensors_test");
  const std::string path = dir.file("good.safetensors");
  const ScaledMatrix<float> good(Eigen::MatrixXf::Ones(2, 2), 1.0f);
  {
    io::safetensors_writer w;
    w.add("w", good);
    w.write(path);
  }
  const Bytes before = read_bytes(path);
  const io::read_limits limits;
  io::safetensors_writer w;
  // Scales: not finite (x / 0 gives inf), NaN.
  const ScaledMatrix<float> inf_scaled(scalify::detail::unchecked_scale, Eigen::MatrixXf::Ones(2, 2), INFINITY);
  const ScaledMatrix<float> nan_scaled(scalify::detail::unchecked_scale, Eigen::MatrixXf::Ones(2, 2), NAN);
  CHECK_THROWS_WITH(w.add("w", inf_scaled), Catch::Contains("'w'") && Catch::Contains("not a finite scale >= 0"));
  CHECK_THROWS_AS(w.add("w", nan_scaled), std::invalid_argument);
  // Names: the data's and the scale's, at most read_limits::max_name_bytes.
  CHECK_THROWS_WITH(w.add(std::string(5000, 'n'), good), Catch::Contains("5000 bytes"));
  CHECK_THROWS_AS(w.add(std::string(limits.max_name_bytes - 5, 'n'), good), std::invalid_argument);  // + "_scale"
  // Ranks up to read_limits::max_rank.
  std::vector<int64_t> deep(limits.max_rank + 1, 1);
  deep[0] = 4;
  CHECK_THROWS_WITH(w.add("w", good, deep), Catch::Contains("17 dimensions"));
  // Metadata keys as names; the whole header at most read_limits::max_header_bytes.
  CHECK_THROWS_AS(w.set_metadata(std::string(5000, 'k'), "v"), std::invalid_argument);
  CHECK(w.names().empty());
  w.set_metadata("big", std::string(limits.max_header_bytes, 'v'));
  CHECK_THROWS_WITH(w.write(path), Catch::Contains("max_header_bytes"));
  CHECK_THROWS_AS(w.serialize(), std::invalid_argument);
  CHECK((read_bytes(path) == before));  // (no 16 MiB expansion on failure)
  // At the limits: written and read back.
  io::safetensors_writer edge;
  const std::string long_name(limits.max_name_bytes - 6, 'n');
  edge.add(long_name, good);
  deep.pop_back();
  edge.add("deep", good, deep);
  edge.set_metadata(std::string(limits.max_name_bytes, 'k'), "v");
  edge.write(path);
  const auto f = io::safetensors_file::open(path);
  CHECK(f.load<float>(long_name).size() == 4);
  CHECK(f.at("deep").shape.size() == limits.max_rank);
}

TEST_CASE("open refuses a FIFO at once instead of waiting for a writer", "[io]") {
  TempDir dir("scalify_safetensors_test");
  const std::string path = dir.file("fifo");
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  auto result = std::async(std::launch::async, [&] {
    try {
      (void)io::safetensors_file::open(path);
    } catch (const scalify::format_error& e) {
      return std::string(e.what());
    }
    return std::string("opened");
  });
  const bool prompt = result.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  if (!prompt) {  // release an open() blocked until a writer comes (a blocked reader counts as one)
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  }
  CHECK(prompt);
  CHECK_THAT(result.get(), Catch::Contains("fifo") && Catch::Contains("not a regular file"));
}

TEST_CASE("threads writing the same path each leave a whole file, and no temporary behind", "[io][threads]") {
  // Each write goes through a temporary of its own: two threads saving to one
  // path in turn never interleave their bytes (a shared temporary name did),
  // and every read after a write finds one of the two files, whole.
  TempDir dir("scalify_safetensors_test");
  const std::string path = dir.file("shared.safetensors");
  const auto writer = [&](float value, Eigen::Index cols) {
    io::safetensors_writer w;
    w.add("x", ScaledMatrix<float>(Eigen::MatrixXf::Constant(64, cols, value), 1.0f));
    return w;
  };
  const io::safetensors_writer a = writer(1.0f, 1000), b = writer(2.0f, 3);
  const auto run = [&](const io::safetensors_writer& w) {
    int bad = 0;
    for (int i = 0; i < 100; ++i) {
      try {
        w.write(path);
        const auto f = io::safetensors_file::open(path);
        const ScaledMatrix<float> x = f.load<float>("x");
        const bool whole = (x.cols() == 1000 && (x.data().array() == 1.0f).all()) ||
                           (x.cols() == 3 && (x.data().array() == 2.0f).all());
        bad += !whole;
      } catch (const std::exception&) {
        ++bad;
      }
    }
    return bad;
  };
  auto other = std::async(std::launch::async, run, std::cref(b));
  const int bad_a = run(a);
  const int bad_b = other.get();
  CHECK(bad_a == 0);
  CHECK(bad_b == 0);
  int left = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) left += e.path().filename() != "shared.safetensors";
  CHECK(left == 0);
}

TEST_CASE("write creates its temporary anew: a link at a temporary's name is not followed", "[io]") {
  // A symbolic link where the writer's temporary would go (the pid is
  // predictable) must not redirect the write: the write fails or uses
  // another name, and the link's target keeps its bytes.
  TempDir dir("scalify_safetensors_test");
  const std::string path = dir.file("c.safetensors"), target = dir.file("target");
  { std::ofstream(target) << "keep"; }
  // The next writes' names, whatever the count so far, and the name without
  // the count (which writes used before the count was added).
  const std::string stem = path + ".tmp-" + std::to_string(::getpid());
  fs::create_symlink(target, stem);
  for (int n = 0; n < 64; ++n) fs::create_symlink(target, stem + "-" + std::to_string(n));
  io::safetensors_writer w;
  w.add("x", ScaledMatrix<float>(Eigen::MatrixXf::Ones(2, 2), 1.0f));
  for (int i = 0; i < 3; ++i) {
    try {
      w.write(path);
    } catch (const std::runtime_error&) {
    }
  }
  std::ifstream in(target);
  const std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(kept == "keep");
}

// ------------------------------------------------------------------------------
// Files exchanged with tests/io/safetensors_ref.py (python3 + numpy)

namespace {

struct expected_tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<double> values;
};
struct expected_file {
  std::vector<std::pair<std::string, std::string>> meta;
  std::vector<expected_tensor> tensors;
};

expected_file read_expected(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f);
  expected_file e;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("meta ", 0) == 0) {
      const size_t space = line.find(' ', 5);
      e.meta.emplace_back(line.substr(5, space - 5), space == std::string::npos ? "" : line.substr(space + 1));
      continue;
    }
    REQUIRE(line.rfind("tensor ", 0) == 0);
    std::istringstream in(line.substr(7));
    expected_tensor t;
    size_t ndim = 0;
    in >> t.name >> t.dtype >> ndim;
    int64_t n = 1;
    for (size_t i = 0; i < ndim; ++i) {
      int64_t d = 0;
      in >> d;
      t.shape.push_back(d);
      n *= d;
    }
    std::string values;
    REQUIRE(std::getline(f, values));
    std::istringstream vs(values);
    std::string v;
    while (vs >> v) t.values.push_back(std::strtod(v.c_str(), nullptr));
    REQUIRE(static_cast<int64_t>(t.values.size()) == n);
    e.tensors.push_back(std::move(t));
  }
  return e;
}

/// The values of a tensor of the file, decoded by scalify (load_converted to double through float where exact).
std::vector<double> scalify_values(const io::safetensors_file& f, const io::tensor_info& t) {
  std::vector<double> out;
  const auto bytes = f.bytes(t);
  const auto n = static_cast<size_t>(t.elements());
  auto read = [&]<class T>() {
    for (size_t i = 0; i < n; ++i) {
      T x;
      std::memcpy(static_cast<void*>(&x), bytes.data() + i * sizeof(T), sizeof(T));
      if constexpr (std::is_integral_v<T>) {
        out.push_back(static_cast<double>(x));
      } else if constexpr (std::is_same_v<T, double>) {
        out.push_back(x);
      } else {
        out.push_back(static_cast<double>(static_cast<float>(x)));
      }
    }
  };
  switch (t.dtype) {
    case io::tensor_dtype::F64: read.operator()<double>(); break;
    case io::tensor_dtype::F32: read.operator()<float>(); break;
    case io::tensor_dtype::F16: read.operator()<float16>(); break;
    case io::tensor_dtype::BF16: read.operator()<bfloat16>(); break;
    case io::tensor_dtype::F8_E4M3: read.operator()<float8_e4m3fn>(); break;
    case io::tensor_dtype::F8_E5M2: read.operator()<float8_e5m2>(); break;
    case io::tensor_dtype::F8_E8M0: read.operator()<float8_e8m0fnu>(); break;
    case io::tensor_dtype::I64: read.operator()<int64_t>(); break;
    default: FAIL("dtype not used by the reference script: " << io::dtype_name(t.dtype));
  }
  return out;
}

bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

std::string numpy_dir() {
  const char* d = std::getenv("SCALIFY_NUMPY_DIR");
  REQUIRE(d != nullptr);  // set by ctest (tests/CMakeLists.txt)
  return d;
}

std::string hex(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

}  // namespace

TEST_CASE("files written by numpy read as the numpy side decodes them", "[.numpy]") {
  const std::string dir = numpy_dir();
  const expected_file e = read_expected(dir + "/numpy_written.expected");
  REQUIRE(e.tensors.size() >= 10);
  for (const char* file : {"numpy_written.safetensors", "numpy_unaligned.safetensors"}) {
    INFO(file);
    const auto f = io::safetensors_file::open(dir + "/" + file);
    for (const auto& [k, v] : e.meta) CHECK(f.metadata(k, "<missing>") == v);
    CHECK(f.tensors().size() == e.tensors.size());
    for (const auto& t : e.tensors) {
      INFO(t.name);
      const auto& info = f.at(t.name);
      CHECK(io::dtype_name(info.dtype) == t.dtype);
      CHECK(info.shape == t.shape);
      const std::vector<double> got = scalify_values(f, info);
      REQUIRE(got.size() == t.values.size());
      for (size_t i = 0; i < got.size(); ++i) {
        if (!same_value(got[i], t.values[i])) FAIL_CHECK("element " << i << ": " << got[i] << " vs " << t.values[i]);
      }
    }
    // The scaled tensors load with their scales (F32 [], F32 [1], E8M0 []).
    CHECK(f.load<float8_e4m3fn>("w8").scale() == 0.0078125f);
    CHECK(f.load<float8_e5m2>("g8").scale() == 3.0517578125e-05f);
    CHECK(f.load<float8_e4m3fn>("e8_scale_user").scale() == std::ldexp(1.0f, 120 - 127));
    CHECK(f.load<float16>("h16").scale() == 1.0f);
  }
}

TEST_CASE("files written by scalify for the numpy reader", "[.numpy]") {
  const std::string dir = numpy_dir();
  std::mt19937_64 gen(20261204);
  io::safetensors_writer w;
  std::ofstream expected(dir + "/scalify_written.expected");
  expected << "# written by tests/io/safetensors_test.cpp\nmeta written_by scalify test\n";
  w.set_metadata("written_by", "scalify test");
  const auto emit = [&]<class T, class S>(const std::string& name, const ScaledMatrix<T, S>& x) {
    w.add(name, x);
    expected << "tensor " << name << " " << io::dtype_name(io::dtype_of<T>()) << " 2 " << x.rows() << " " << x.cols()
             << "\n";
    // Values decoded independently of scalify's casts: the reference decoder of the OCP formats.
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      const T c = x.data().data()[i];
      double v;
      if constexpr (std::is_same_v<T, float>) {
        v = c;
      } else {
        v = scalify_test::ref::decode(scalify_test::ref_format<T>, scalify_test::code_of(c));
      }
      expected << (i ? " " : "") << hex(v);
    }
    expected << "\n";
    using ScaleT = std::conditional_t<std::is_same_v<S, float8_e8m0fnu>, float8_e8m0fnu, float>;
    expected << "tensor " << name << "_scale " << io::dtype_name(io::dtype_of<ScaleT>()) << " 0\n"
             << hex(static_cast<double>(static_cast<float>(x.scale()))) << "\n";
  };
  emit("all_e4m3", [&] {
    auto x = random_codes<float8_e4m3fn>(16, 16, gen);
    for (int c = 0; c < 256; ++c) x.data().data()[c] = float8_e4m3fn::from_bits(static_cast<uint8_t>(c));
    return x;
  }());
  emit("all_e5m2", [&] {
    auto x = random_codes<float8_e5m2>(8, 32, gen);
    for (int c = 0; c < 256; ++c) x.data().data()[c] = float8_e5m2::from_bits(static_cast<uint8_t>(c));
    x.set_scale(0x1p-20f);
    return x;
  }());
  emit("h16", random_codes<float16>(7, 3, gen));
  emit("b16", random_codes<bfloat16>(2, 9, gen));
  emit("f32", ScaledMatrix<float>(Eigen::MatrixXf::Random(4, 4), 3.0f));
  emit("empty", ScaledMatrix<float>(Eigen::MatrixXf(0, 3), 1.0f));
  emit("e8", ScaledMatrix<float8_e4m3fn, float8_e8m0fnu>(random_codes<float8_e4m3fn>(3, 3, gen).data(),
                                                          float8_e8m0fnu(0x1p100f)));
  expected.close();
  w.write(dir + "/scalify_written.safetensors");
  // The file reads back here too.
  CHECK(io::safetensors_file::open(dir + "/scalify_written.safetensors").tensors().size() == 14);
}
