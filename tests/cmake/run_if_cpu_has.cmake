# Runs PROGRAM if this CPU has every flag in CPU_FLAGS (as /proc/cpuinfo
# names them); otherwise prints "SKIPPED: ..." (ctest's SKIP_REGULAR_EXPRESSION
# then reports the test as skipped). For test programs compiled for an
# instruction set the build machine may lack.
#
#   cmake -DPROGRAM=... "-DCPU_FLAGS=avx512f;avx512bw" -P run_if_cpu_has.cmake
cmake_minimum_required(VERSION 3.21)
foreach(var PROGRAM CPU_FLAGS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_if_cpu_has.cmake: ${var} is not set")
  endif()
endforeach()

if(NOT EXISTS /proc/cpuinfo)
  message("SKIPPED: no /proc/cpuinfo to check for ${CPU_FLAGS}")
  return()
endif()
file(STRINGS /proc/cpuinfo flags_line REGEX "^flags" LIMIT_COUNT 1)
string(REGEX REPLACE "^flags[ \t]*:[ \t]*" "" flags "${flags_line}")
string(REPLACE " " ";" flags "${flags}")
set(missing "")
foreach(flag IN LISTS CPU_FLAGS)
  if(NOT flag IN_LIST flags)
    list(APPEND missing ${flag})
  endif()
endforeach()
if(missing)
  message("SKIPPED: this CPU lacks ${missing}")
  return()
endif()

execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} failed: ${result}")
endif()
