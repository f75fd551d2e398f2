// The C side of the error callback (stepgraph.go, Note [Errors into Go]):
// the executor calls sg_go_on_error on its own thread with the user_data it
// was given, which is a cgo.Handle's integer value, never a Go pointer.
// Kept in its own file: a cgo preamble of a file with //export may only
// declare C functions.
#include <stdint.h>

#include "_cgo_export.h"

static void sg_go_on_error(const sg_step_error* error, void* user_data) {
  sgGoOnError((sg_step_error*)error, (uintptr_t)user_data);
}

void sg_go_set_error_callback(sg_executor_options* options, uintptr_t key) {
  options->on_error = sg_go_on_error;
  options->on_error_user_data = (void*)key;
}
