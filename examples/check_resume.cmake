# Checks that a run resumed from a checkpoint ends exactly as an uninterrupted
# one. Runs PROGRAM three times ('|'-separated argument lists):
#   FULL    the whole run, writing JSON_FULL
#   FIRST   the first part, writing a checkpoint with --save
#   RESUME  --resume from it to the end, writing JSON_RESUMED
# then compares, in both JSON files, the fields FIELDS (a ';' list) of the last
# element of the array ARRAY and the top-level fields TOP: they must be equal
# as written (the examples write them with 17 significant digits). Used by
# examples/CMakeLists.txt.
foreach(part FULL FIRST RESUME)
  string(REPLACE "|" ";" _args "${${part}}")
  execute_process(COMMAND "${PROGRAM}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${part} run failed (exit ${_rc}): ${PROGRAM} ${${part}}\nstdout:\n${_out}\nstderr:\n${_err}")
  endif()
  message(STATUS "${part}: ${PROGRAM} ${${part}}\n${_out}")
endforeach()
file(READ "${JSON_FULL}" _full)
file(READ "${JSON_RESUMED}" _resumed)
string(JSON _n_full LENGTH "${_full}" "${ARRAY}")
string(JSON _n_resumed LENGTH "${_resumed}" "${ARRAY}")
math(EXPR _last_full "${_n_full} - 1")
math(EXPR _last_resumed "${_n_resumed} - 1")
set(_compared 0)
foreach(field IN LISTS FIELDS)
  string(JSON _a GET "${_full}" "${ARRAY}" ${_last_full} "${field}")
  string(JSON _b GET "${_resumed}" "${ARRAY}" ${_last_resumed} "${field}")
  if(NOT _a STREQUAL _b)
    message(FATAL_ERROR "${ARRAY}[last].${field}: uninterrupted ${_a}, resumed ${_b}")
  endif()
  message(STATUS "${ARRAY}[last].${field}: ${_a} in both runs")
  math(EXPR _compared "${_compared} + 1")
endforeach()
foreach(field IN LISTS TOP)
  string(JSON _a GET "${_full}" "${field}")
  string(JSON _b GET "${_resumed}" "${field}")
  if(NOT _a STREQUAL _b)
    message(FATAL_ERROR "${field}: uninterrupted ${_a}, resumed ${_b}")
  endif()
  message(STATUS "${field}: ${_a} in both runs")
  math(EXPR _compared "${_compared} + 1")
endforeach()
if(_compared EQUAL 0)
  message(FATAL_ERROR "nothing compared: give FIELDS or TOP")
endif()
