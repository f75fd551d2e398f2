# Install rules and the CMake package (included by the top-level
# CMakeLists.txt after every module has been added).
#
# Note [The installed package]
# `cmake --install <build> --prefix P` puts under P:
#   include/stepgraph/<module>/...      the public headers of every module
#   lib/libstepgraph_<module>.a         the libraries (.so with BUILD_SHARED_LIBS)
#   lib/cmake/stepgraph/                stepgraphConfig.cmake, its version file
#                                       (SameMajorVersion), stepgraphTargets*.cmake,
#                                       and FindNCCL.cmake in a build with NCCL
#   bin/stepgraph                       the program (tools/)
# A separate project then says `find_package(stepgraph REQUIRED)` and links
# stepgraph::core, ::topology, ::graphs, ::runtime, ::collectives (and
# ::torch once the adapter exists) — the names the build tree's ALIAS
# targets give add_subdirectory users. docs/embedding.md shows both ways.
#
# What must hold for the export to be valid (CMake says "target requires
# target X that is not in any export set" otherwise):
#   - include directories are $<BUILD_INTERFACE:...>/$<INSTALL_INTERFACE:...>;
#   - helper INTERFACE targets (sg_warnings) are linked as
#     $<BUILD_INTERFACE:sg_warnings>, even PRIVATE: a static library's
#     private links stay in its exported interface as $<LINK_ONLY:...>;
#   - third-party dependencies are imported targets that stepgraphConfig.cmake
#     finds again (cmake/stepgraphConfig.cmake.in), NCCL included (NCCL::nccl
#     from cmake/FindNCCL.cmake).
# A new module follows the same three rules and adds its name to the list
# below; tests/package (ctest -L package) installs, then builds and runs a
# consumer of the installed package and of the source tree.
include(CMakePackageConfigHelpers)

set(STEPGRAPH_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/stepgraph
    CACHE STRING "Where stepgraphConfig.cmake is installed, relative to the prefix")

# The modules, in dependency order; a module this build lacks is skipped.
# torch: the libtorch adapter (target stepgraph_torch, headers under
# torch/include), exported when it is built. c: the C ABI (target stepgraph_c,
# a shared library; its header is under capi/include, installed below).
set(_sg_modules core topology graphs runtime collectives torch c)
set(_sg_exported "")
foreach(module IN LISTS _sg_modules)
  if(NOT TARGET stepgraph_${module})
    continue()
  endif()
  set_target_properties(stepgraph_${module} PROPERTIES EXPORT_NAME ${module})
  list(APPEND _sg_exported stepgraph_${module})
  if(IS_DIRECTORY ${PROJECT_SOURCE_DIR}/${module}/include/stepgraph)
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${module}/include/stepgraph
            DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endif()
endforeach()

if(TARGET stepgraph_c)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/capi/include/stepgraph DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()

install(TARGETS ${_sg_exported} EXPORT stepgraphTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT stepgraphTargets NAMESPACE stepgraph:: DESTINATION ${STEPGRAPH_INSTALL_CMAKEDIR})

# The program. Its shared dependencies outside the system's paths (the CUDA
# runtime under /usr/local/cuda, a libstepgraph_*.so) stay found after
# install: the install RPATH keeps the link directories and lib/.
if(TARGET stepgraph)
  set_target_properties(stepgraph PROPERTIES
    INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}"
    INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS stepgraph RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# What the configuration file must find again (cmake/stepgraphConfig.cmake.in).
set(_sg_config_with_cuda ${STEPGRAPH_WITH_CUDA})
set(_sg_config_have_nccl OFF)
if(STEPGRAPH_HAVE_NCCL)
  set(_sg_config_have_nccl ON)
endif()
set(_sg_config_with_mpi ${STEPGRAPH_WITH_MPI})
set(_sg_config_with_torch OFF)
if(TARGET stepgraph_torch)
  set(_sg_config_with_torch ON)
endif()
set(_sg_config_have_httplib OFF)  # the metrics server's cpp-httplib (runtime/CMakeLists.txt)
if(STEPGRAPH_HAVE_HTTPLIB)
  set(_sg_config_have_httplib ON)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/stepgraphConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/stepgraphConfig.cmake
                              INSTALL_DESTINATION ${STEPGRAPH_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/stepgraphConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
set(_sg_config_files ${PROJECT_BINARY_DIR}/stepgraphConfig.cmake ${PROJECT_BINARY_DIR}/stepgraphConfigVersion.cmake)
if(_sg_config_have_nccl)
  list(APPEND _sg_config_files ${CMAKE_CURRENT_LIST_DIR}/FindNCCL.cmake)
endif()
install(FILES ${_sg_config_files} DESTINATION ${STEPGRAPH_INSTALL_CMAKEDIR})
