// Consumer test: a program that builds scalify with add_subdirectory.
#include <scalify/scalify.hpp>

int main() {
  scalify::float8_e4m3fn x(1.5f);
  return static_cast<float>(x) == 1.5f ? 0 : 1;
}
