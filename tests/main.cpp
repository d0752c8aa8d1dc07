// Catch2's main(), compiled once into scalify_test_main (tests/CMakeLists.txt)
// and linked into every test program.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
