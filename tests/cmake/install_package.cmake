# ctest "cmake.install": configure this source tree on its own (tests, benchmarks
# and examples off), install it into PREFIX, and check the installed files.
# The find_package consumer test then builds against PREFIX.
#
#   cmake -DSOURCE_DIR=... -DBINARY_DIR=... -DPREFIX=... -DGENERATOR=... -P install_package.cmake
cmake_minimum_required(VERSION 3.21)  # script mode: policies (IN_LIST)
foreach(var SOURCE_DIR BINARY_DIR PREFIX GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_package.cmake: ${var} is not set")
  endif()
endforeach()

file(REMOVE_RECURSE "${BINARY_DIR}" "${PREFIX}")

set(options
  -DCMAKE_BUILD_TYPE=Release
  -DSCALIFY_INSTALL=ON
  -DSCALIFY_BUILD_TESTS=OFF
  -DSCALIFY_BUILD_BENCHMARKS=OFF
  -DSCALIFY_BUILD_EXAMPLES=OFF
  "-DCMAKE_INSTALL_PREFIX=${PREFIX}")
foreach(var MAKE_PROGRAM CXX_COMPILER Eigen3_DIR fmt_DIR)
  if(DEFINED ${var} AND NOT "${${var}}" STREQUAL "" AND NOT "${${var}}" MATCHES "NOTFOUND$")
    if(var STREQUAL "MAKE_PROGRAM" OR var STREQUAL "CXX_COMPILER")
      list(APPEND options "-DCMAKE_${var}=${${var}}")
    else()
      list(APPEND options "-D${var}=${${var}}")
    endif()
  endif()
endforeach()
if(DEFINED PREFIX_PATH AND NOT PREFIX_PATH STREQUAL "")
  string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
  list(APPEND options "-DCMAKE_PREFIX_PATH=${prefix_path}")
endif()

message(STATUS "Configuring ${SOURCE_DIR} into ${BINARY_DIR}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}" -G "${GENERATOR}" ${options}
  COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "Building ${BINARY_DIR} (the scalify::compiled library)")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BINARY_DIR}"
  COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "Installing into ${PREFIX}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BINARY_DIR}"
  COMMAND_ERROR_IS_FATAL ANY)

foreach(file
    include/scalify/scalify.hpp
    include/scalify/version.hpp
    share/cmake/scalify/scalifyConfig.cmake
    share/cmake/scalify/scalifyConfigVersion.cmake
    share/cmake/scalify/scalifyTargets.cmake
    share/cmake/scalify/scalifyCompiledTargets.cmake
    share/doc/scalify/README.md
    share/doc/scalify/docs/index.md)
  if(NOT EXISTS "${PREFIX}/${file}")
    message(FATAL_ERROR "install_package.cmake: ${PREFIX}/${file} was not installed")
  endif()
endforeach()
message(STATUS "scalify installed into ${PREFIX}")
