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
