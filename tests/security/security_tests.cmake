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

# The Python client with TLS, a client certificate and a token (Debian's
# /usr/bin/python3 with python3-grpcio and python3-numpy).
if(TARGET qlayer-server AND TARGET qlayer-quantize AND EXISTS /usr/bin/python3)
  add_test(NAME python_security_test
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/security/python_security_test.py)
  set_tests_properties(python_security_test PROPERTIES
    TIMEOUT 120
    ENVIRONMENT "QLAYER_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python;QLAYER_PROTO_DESCRIPTORS=${PROJECT_BINARY_DIR}/client/python/qlayer_v1.desc")
  if(TARGET qlayer_python_descriptors)
    add_dependencies(qlayer_security_tests qlayer_python_descriptors)
  endif()
endif()
