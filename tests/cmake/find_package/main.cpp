// Consumer test: a program built against an installed scalify.
#include <scalify/scalify.hpp>

#ifdef CONSUMER_WITH_FMT
#include <fmt/format.h>             // fmt::format
#include <scalify/formats/fmt.hpp>  // fmt::formatter<float8_*>
#endif

int main() {
  scalify::float8_e4m3fn x(1.5f);
  if (static_cast<float>(x) != 1.5f) return 1;
#ifdef CONSUMER_WITH_FMT
  if (fmt::format("{}", x) != "1.5") return 2;
#endif
  return 0;
}
