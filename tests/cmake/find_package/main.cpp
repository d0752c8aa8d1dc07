// Consumer test: a program built against an installed scalify.
#include <scalify/scalify.hpp>

#ifdef CONSUMER_WITH_FMT
#include <fmt/format.h>             // fmt::format
#include <scalify/formats/fmt.hpp>  // fmt::formatter<float8_*>
#endif

int main() {
  scalify::float8_e4m3fn x(1.5f);
  if (static_cast<float>(x) != 1.5f) return 1;
  // A GEMM: through the package's scalify::compiled library where linked.
  const scalify::float8_e4m3fn a[6] = {x, x, x, x, x, x};
  float c[4] = {};
  scalify::gemm(scalify::row_major_view(a, 2, 3), scalify::col_major_view(a, 3, 2), scalify::row_major_view(c, 2, 2));
  if (c[3] != 6.75f) return 3;
#ifdef CONSUMER_WITH_FMT
  if (fmt::format("{}", x) != "1.5") return 2;
#endif
  return 0;
}
