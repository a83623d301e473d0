# tests/cli: the client library, qlayer-cli and the Python client.
# Included from tests/CMakeLists.txt after qlayer_test_folder(cli ...).
if(NOT TARGET qlayer_cli_tests)
  return()
endif()
if(TARGET qlayer_cli_lib)
  target_link_libraries(qlayer_cli_tests PRIVATE qlayer_cli_lib)
endif()
# The service tests' float64 MoE family reference (moe_cli_test checks
# qlayer-cli moe --router-logits with it, not with the CLI's own reference).
target_sources(qlayer_cli_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/service/moe_reference_util.cc)
# The end-to-end tests run the real programs: build them with the tests.
foreach(program qlayer-cli qlayer-server qlayer-quantize)
  if(TARGET ${program})
    add_dependencies(qlayer_cli_tests ${program})
  endif()
endforeach()

# The Python client against a live server (Debian's /usr/bin/python3 with
# python3-grpcio and python3-numpy); registered once the programs exist.
if(TARGET qlayer-server AND TARGET qlayer-quantize AND EXISTS /usr/bin/python3)
  add_test(NAME python_client_test
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/cli/python_client_test.py)
  set_tests_properties(python_client_test PROPERTIES
    TIMEOUT 120
    ENVIRONMENT "QLAYER_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python;QLAYER_PROTO_DESCRIPTORS=${PROJECT_BINARY_DIR}/client/python/qlayer_v1.desc")
  if(TARGET qlayer_python_descriptors)
    add_dependencies(qlayer_cli_tests qlayer_python_descriptors)
  endif()
endif()
