# tests/reliability: load and fault tests against the real qlayer-server,
# qlayer-quantize and the C++ client. Included from tests/CMakeLists.txt
# after qlayer_test_folder(reliability ...).
if(NOT TARGET qlayer_reliability_tests)
  return()
endif()
# The server process, checkpoints, float64 references of the service tests.
target_sources(qlayer_reliability_tests PRIVATE
               ${CMAKE_CURRENT_SOURCE_DIR}/service/service_test_util.cc
               ${CMAKE_CURRENT_SOURCE_DIR}/service/moe_reference_util.cc)
foreach(program qlayer-server qlayer-quantize qlayer-cli)
  if(TARGET ${program})
    add_dependencies(qlayer_reliability_tests ${program})
  endif()
endforeach()
# The soak, short: 8 streams x 20 s on the mixed checkpoint (scripts/soak
# runs the long one). The sharded entries skip it.
add_test(NAME qlayer_reliability_soak_short
         COMMAND qlayer_reliability_tests --gtest_filter=Soak.*)
set_tests_properties(qlayer_reliability_soak_short PROPERTIES
  TIMEOUT 180
  ENVIRONMENT "QLAYER_BUILD_DIR=${PROJECT_BINARY_DIR};QLAYER_SOAK_STREAMS=8;QLAYER_SOAK_SECONDS=20")

# The Python client re-sending across a SIGKILL and restart (Debian's
# /usr/bin/python3 with python3-grpcio and python3-numpy).
if(TARGET qlayer-server AND TARGET qlayer-quantize AND EXISTS /usr/bin/python3)
  add_test(NAME python_restart_test
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/reliability/python_restart_test.py)
  set_tests_properties(python_restart_test PROPERTIES
    TIMEOUT 120
    ENVIRONMENT "QLAYER_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python;QLAYER_PROTO_DESCRIPTORS=${PROJECT_BINARY_DIR}/client/python/qlayer_v1.desc")
  if(TARGET qlayer_python_descriptors)
    add_dependencies(qlayer_reliability_tests qlayer_python_descriptors)
  endif()
endif()
