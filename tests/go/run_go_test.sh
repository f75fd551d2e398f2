#!/usr/bin/env bash
# The Go client of the C ABI (examples/go), built and run against this build
# tree's libstepgraph_c.so and header (ctest go_client, label go).
#   run_go_test.sh <examples/go> <work dir> <include dirs (:)> <library dirs (:)>
# Builds with `go build` / `go vet` / `go test` (module with no requirements:
# nothing is downloaded; GOCACHE and GOPATH inside the build tree, nothing
# written to $HOME or the source tree), then runs the package tests and the
# program under GODEBUG=cgocheck=1 (the default) and cgocheck=2 (every store
# checked): any cgo pointer-rule violation aborts the run. Exit 77 (ctest
# SKIP_RETURN_CODE) with the reason when no Go toolchain is installed.
set -euo pipefail
src=$1 work=$2 includes=$3 libdirs=$4
if ! command -v go >/dev/null 2>&1; then
  echo "SKIP: no Go toolchain (go) on PATH; scripts/setup.sh installs Debian's golang-go"
  exit 77
fi
mkdir -p "$work"
export GOCACHE="$work/gocache" GOPATH="$work/gopath" GOFLAGS="" GO111MODULE=on GOPROXY=off GOWORK=off CGO_ENABLED=1
cflags="" ldflags=""
IFS=: read -ra inc <<<"$includes"
for d in "${inc[@]}"; do cflags+=" -I$d"; done
IFS=: read -ra lib <<<"$libdirs"
for d in "${lib[@]}"; do ldflags+=" -L$d -Wl,-rpath,$d"; done
export CGO_CFLAGS="$cflags" CGO_LDFLAGS="$ldflags"
cd "$src"
step() {  # step <seconds> <what> <command...>: bounded, timed, named on failure
  local limit=$1 what=$2
  shift 2
  local t0=$SECONDS
  if ! timeout "$limit" "$@"; then
    echo "go_client: FAILED: $what (exit status above; limit ${limit} s)"
    exit 1
  fi
  echo "go_client: $what: ok ($((SECONDS - t0)) s)"
}
go version
step 400 "go build" go build -o "$work/mlptrain" ./cmd/mlptrain
step 200 "go vet" go vet ./...
step 200 "go test (cgocheck=1)" env GODEBUG=cgocheck=1 go test -count=1 ./stepgraph
step 200 "go test (cgocheck=2)" env GODEBUG=cgocheck=2 go test -count=1 ./stepgraph
step 120 "mlptrain (cgocheck=1)" env GODEBUG=cgocheck=1 "$work/mlptrain"
step 120 "mlptrain (cgocheck=2)" env GODEBUG=cgocheck=2 "$work/mlptrain"
