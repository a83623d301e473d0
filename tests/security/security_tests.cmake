# tests/security: TLS, mutual TLS, bearer tokens, /metrics auth, limits and
# confined model paths against the real qlayer-server and qlayer-cli.
# Included from tests/CMakeLists.txt after qlayer_test_folder(security ...).
if(NOT TARGET qlayer_security_tests)
  return()
endif()
# The server process, checkpoints and float64 reference of the service tests.
target_sources(qlayer_security_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/service/service_test_util.cc)
target_compile_definitions(qlayer_security_tests PRIVATE
                           QLAYER_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
foreach(program qlayer-server qlayer-quantize qlayer-cli)
  if(TARGET ${program})
    add_dependencies(qlayer_security_tests ${program})
  endif()
endforeach()
