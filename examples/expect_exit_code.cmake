# Runs PROGRAM with ARGS (a '|'-separated list) and fails unless it exits with
# EXPECTED, its stderr matches MATCH (if given) and its stdout matches
# OUT_MATCH and OUT_MATCH2 (if given), neither output matches NOT_MATCH (if
# given), and the file CHECK_FILE (if given; removed first) was written and
# matches FILE_MATCH (if given). Used by examples/CMakeLists.txt to check
# the command line: --help on stdout with exit 0, bad arguments with a message
# on stderr and exit 2.
string(REPLACE "|" ";" _args "${ARGS}")
if(DEFINED CHECK_FILE)
  file(REMOVE "${CHECK_FILE}")  # written by this run, not an earlier one
endif()
execute_process(COMMAND "${PROGRAM}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc STREQUAL "${EXPECTED}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: exit code '${_rc}', expected ${EXPECTED}\nstdout:\n${_out}\nstderr:\n${_err}")
endif()
if(DEFINED MATCH AND NOT _err MATCHES "${MATCH}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: stderr does not match '${MATCH}':\n${_err}")
endif()
foreach(_var OUT_MATCH OUT_MATCH2)
  if(DEFINED ${_var} AND NOT _out MATCHES "${${_var}}")
    message(FATAL_ERROR "${PROGRAM} ${ARGS}: stdout does not match '${${_var}}':\n${_out}")
  endif()
endforeach()
if(DEFINED NOT_MATCH AND ("${_out}" MATCHES "${NOT_MATCH}" OR "${_err}" MATCHES "${NOT_MATCH}"))
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: the output matches '${NOT_MATCH}':\nstdout:\n${_out}\nstderr:\n${_err}")
endif()
if(DEFINED CHECK_FILE AND NOT EXISTS "${CHECK_FILE}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: did not write ${CHECK_FILE}")
endif()
if(DEFINED FILE_MATCH)
  file(READ "${CHECK_FILE}" _file)
  if(NOT _file MATCHES "${FILE_MATCH}")
    message(FATAL_ERROR "${PROGRAM} ${ARGS}: ${CHECK_FILE} does not match '${FILE_MATCH}':\n${_file}")
  endif()
endif()
