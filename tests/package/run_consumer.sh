#!/usr/bin/env bash
# tests/package/run_consumer.sh — stepgraph as a separate project meets it
# (Note [The installed package], cmake/StepgraphPackage.cmake).
#
#   run_consumer.sh find_package   BUILD_DIR SOURCE_DIR CMAKE GENERATOR MAKE_PROGRAM CXX BUILD_TYPE
#   run_consumer.sh add_subdirectory BUILD_DIR SOURCE_DIR CMAKE GENERATOR MAKE_PROGRAM CXX BUILD_TYPE [CMAKE_ARGS...]
# (BUILD_TYPE "-": none.)
#
# find_package: installs BUILD_DIR into a temporary prefix (cmake --install),
# moves the prefix elsewhere (the package must be relocatable), checks its
# layout, configures and builds tests/package/consumer against it with the
# same compiler and generator, runs the consumer (it captures and replays a
# step of its own and checks it against a serial computation) and the
# installed `stepgraph --help`.
# add_subdirectory: configures the consumer over SOURCE_DIR itself (tests and
# benchmarks must default to off there) with CMAKE_ARGS and compiles the
# consumer's main.cpp; with STEPGRAPH_PACKAGE_SUBDIRECTORY=full in the
# environment it also builds the libraries in that tree, links and runs the
# consumer (minutes: the libraries are compiled again).
# Every step is bounded (timeout); the temporary directories go on exit.
set -euo pipefail

if [[ $# -lt 8 ]]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
mode=$1 build=$2 src=$3 cmake=$4 generator=$5 make_program=$6 cxx=$7 build_type=$8
shift 8
[[ $build_type == - ]] && build_type=  # no CMAKE_BUILD_TYPE

work=$(mktemp -d "${TMPDIR:-/tmp}/stepgraph-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# run SECONDS LOG COMMAND...: the command's output goes to LOG, shown on failure.
run() {
  local seconds=$1 log=$2
  shift 2
  local start=$SECONDS
  if ! timeout --kill-after=10 "$seconds" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$* (exit status above; limit ${seconds}s)"
  fi
  echo "ok ($((SECONDS - start)) s): $*"
}

consumer_args=(-S "$src/tests/package/consumer" -B "$work/consumer" -G "$generator"
  -DCMAKE_MAKE_PROGRAM="$make_program" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE="$build_type")

case $mode in
  find_package)
    run 120 "$work/install.log" "$cmake" --install "$build" --prefix "$work/stage"
    mv "$work/stage" "$work/prefix"
    prefix=$work/prefix
    for f in lib/cmake/stepgraph/stepgraphConfig.cmake lib/cmake/stepgraph/stepgraphConfigVersion.cmake \
      lib/cmake/stepgraph/stepgraphTargets.cmake bin/stepgraph include/stepgraph/core/error.h \
      include/stepgraph/topology include/stepgraph/graphs include/stepgraph/runtime/backend.h \
      include/stepgraph/collectives/communicator.h; do
      [[ -e $prefix/$f ]] || fail "the install has no $f"
    done
    if grep -rlF -e "$src" -e "$build" "$prefix/lib/cmake"; then
      fail "the installed CMake files above name the source or build tree"
    fi
    run 120 "$work/configure.log" "$cmake" "${consumer_args[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    grep -qF "from $prefix/lib/cmake/stepgraph" "$work/configure.log" ||
      fail "find_package(stepgraph) did not take the package just installed: $(grep 'stepgraph' "$work/configure.log")"
    run 300 "$work/build.log" "$cmake" --build "$work/consumer"
    run 60 "$work/run.log" "$work/consumer/sg_consumer"
    cat "$work/run.log"
    run 30 "$work/help.log" "$prefix/bin/stepgraph" --help
    grep -q "Usage" "$work/help.log" || fail "stepgraph --help printed no usage: $(cat "$work/help.log")"
    ;;
  add_subdirectory)
    run 180 "$work/configure.log" "$cmake" "${consumer_args[@]}" -DSG_CONSUMER_STEPGRAPH_SOURCE="$src" "$@"
    if [[ ${STEPGRAPH_PACKAGE_SUBDIRECTORY:-compile} == full ]]; then
      # Builds the libraries afresh in this tree: 7:20 measured on 2 busy cores.
      run 1200 "$work/build.log" "$cmake" --build "$work/consumer" --target sg_consumer
      run 60 "$work/run.log" "$work/consumer/sg_consumer"
      cat "$work/run.log"
    else
      # Only the consumer's own object: the ALIAS targets' include
      # directories, definitions and C++20 reach it. Linking them is what
      # the build's own programs do already.
      object=main.cpp.o
      [[ $generator == Ninja* ]] && object=CMakeFiles/sg_consumer.dir/main.cpp.o
      run 300 "$work/build.log" "$cmake" --build "$work/consumer" --target "$object"
      echo "add_subdirectory: configured, consumer compiled (STEPGRAPH_PACKAGE_SUBDIRECTORY=full also links and runs it)"
    fi
    ;;
  *)
    fail "unknown mode '$mode' (find_package or add_subdirectory)"
    ;;
esac
