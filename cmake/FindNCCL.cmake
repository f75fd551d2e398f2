# FindNCCL — finds NCCL (nccl.h, libnccl) and defines the imported target
# NCCL::nccl. Used by the build (top-level CMakeLists.txt) and installed
# beside stepgraphConfig.cmake, which finds NCCL again with it for users of
# a CUDA build: the static stepgraph::collectives links NCCL privately, so a
# program linking it needs libnccl too.
#
# Hints: NCCL_ROOT (CMake's <Package>_ROOT), the CUDA toolkit's directories
# when CUDAToolkit was found first. Result: NCCL_FOUND, NCCL_INCLUDE_DIR,
# NCCL_LIBRARY, NCCL_VERSION (from nccl.h, when it says).
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)

if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _sg_nccl_version_lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(part MAJOR MINOR PATCH)
    string(REGEX MATCH "NCCL_${part} +([0-9]+)" _sg_match "${_sg_nccl_version_lines}")
    set(_sg_nccl_${part} "${CMAKE_MATCH_1}")
  endforeach()
  if(NOT _sg_nccl_MAJOR STREQUAL "")
    set(NCCL_VERSION "${_sg_nccl_MAJOR}.${_sg_nccl_MINOR}.${_sg_nccl_PATCH}")
  endif()
  unset(_sg_nccl_version_lines)
  unset(_sg_match)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR VERSION_VAR NCCL_VERSION)
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)

if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl UNKNOWN IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES
    IMPORTED_LOCATION "${NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
