# Runs PROGRAM with ARGS (a '|'-separated list) and fails unless it exits with
# EXPECTED and prints MATCH on stderr. Used by examples/CMakeLists.txt to check
# that bad arguments give a usage message and exit code 2.
string(REPLACE "|" ";" _args "${ARGS}")
execute_process(COMMAND "${PROGRAM}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc STREQUAL "${EXPECTED}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: exit code '${_rc}', expected ${EXPECTED}\n${_err}")
endif()
if(NOT _err MATCHES "${MATCH}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: stderr does not match '${MATCH}':\n${_err}")
endif()
