/* tests/capi/mlp_step.c — the demo MLP's training step described through the
 * C ABI (stepgraph/c/stepgraph.h), in C11: the demo's kernels registered by
 * name, and the step of stepgraph::demo::enqueue_mlp_step as buffers and
 * launches. Shared by capi_test.c, bench/bm_capi.cpp and the Go client's
 * check (examples/go describes the same step in Go). */
#include <stddef.h>

#include <stepgraph/c/stepgraph.h>

#include "mlp_shim.h"

#define acc sgt_acc

/* Stops at the first failing call; its status is returned, sg_last_error()
 * says why. */
#define TRY(call)              \
  do {                         \
    s = (call);                \
    if (s != SG_OK) goto fail; \
  } while (0)

sg_access sgt_acc(const char* buffer, size_t offset, size_t bytes, sg_access_mode mode) {
  sg_access a;
  a.buffer = buffer;
  a.offset = offset;
  a.bytes = bytes;
  a.mode = mode;
  return a;
}

/* The demo's host kernels under the names the step uses; user_data is `d`,
 * which must outlive every executor made from the step. */
sg_status sgt_mlp_register_kernels(const sgt_mlp_dims* d) {
  void* u = (void*)d;
  sg_status s = SG_OK;
  TRY(sg_kernel_register("mlp.forward_hidden", sgt_forward_hidden, NULL, u));
  TRY(sg_kernel_register("mlp.forward_output", sgt_forward_output, NULL, u));
  TRY(sg_kernel_register("mlp.mse_loss", sgt_mse_loss, NULL, u));
  TRY(sg_kernel_register("mlp.grad_output", sgt_grad_output, NULL, u));
  TRY(sg_kernel_register("mlp.backward_hidden", sgt_backward_hidden, NULL, u));
  TRY(sg_kernel_register("mlp.grad_hidden", sgt_grad_hidden, NULL, u));
  TRY(sg_kernel_register("mlp.sgd_update", sgt_sgd_update, NULL, u));
fail:
  return s;
}

/* [C example: the MLP step] — the step of stepgraph::demo::enqueue_mlp_step,
 * described as data: buffers by role, then seven launches with their
 * declared accesses (the kernels' arguments, in order). */
sg_status sgt_mlp_step_desc(const sgt_mlp_dims* d, sg_step_desc** out) {
  const size_t f = sizeof(float), batch = (size_t)d->batch, hidden = (size_t)d->hidden;
  const size_t np = sgt_mlp_param_count(d), bh = batch * hidden;
  const size_t b1 = sgt_mlp_b1_offset(d), w2 = sgt_mlp_w2_offset(d);
  sg_step_desc* desc = NULL;
  sg_status s = sg_step_desc_create(&desc);
  if (s != SG_OK) return s;
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_INPUT, "x", batch * (size_t)d->inputs * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_INPUT, "y", batch * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_OUTPUT, "loss", f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_STATE, "params", np * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_SCRATCH, "grads", np * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_SCRATCH, "act", bh * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_SCRATCH, "dact", bh * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_SCRATCH, "out", batch * f));
  TRY(sg_step_desc_add_buffer(desc, SG_ROLE_SCRATCH, "dout", batch * f));

  const sg_access fh[] = {acc("x", 0, 0, SG_ACCESS_READ), acc("params", 0, b1 * f + hidden * f, SG_ACCESS_READ),
                          acc("act", 0, 0, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.forward_hidden", NULL, fh, 3, bh));
  const sg_access fo[] = {acc("act", 0, 0, SG_ACCESS_READ), acc("params", w2 * f, (hidden + 1) * f, SG_ACCESS_READ),
                          acc("y", 0, 0, SG_ACCESS_READ), acc("out", 0, 0, SG_ACCESS_WRITE),
                          acc("dout", 0, 0, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.forward_output", NULL, fo, 5, batch));
  const sg_access ml[] = {acc("out", 0, 0, SG_ACCESS_READ), acc("y", 0, 0, SG_ACCESS_READ),
                          acc("loss", 0, 0, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.mse_loss", NULL, ml, 3, 1));
  const sg_access go[] = {acc("act", 0, 0, SG_ACCESS_READ), acc("dout", 0, 0, SG_ACCESS_READ),
                          acc("grads", w2 * f, (hidden + 1) * f, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.grad_output", NULL, go, 3, hidden + 1));
  const sg_access bw[] = {acc("act", 0, 0, SG_ACCESS_READ), acc("dout", 0, 0, SG_ACCESS_READ),
                          acc("params", w2 * f, hidden * f, SG_ACCESS_READ), acc("dact", 0, 0, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.backward_hidden", NULL, bw, 4, bh));
  const sg_access gh[] = {acc("x", 0, 0, SG_ACCESS_READ), acc("dact", 0, 0, SG_ACCESS_READ),
                          acc("grads", 0, w2 * f, SG_ACCESS_WRITE)};
  TRY(sg_step_desc_add_launch(desc, "mlp.grad_hidden", NULL, gh, 3, w2));
  /* The learning rate is read from the executor's scalars at replay time. */
  const sg_access up[] = {
      acc("params", 0, np * f, SG_ACCESS_READ_WRITE), acc("grads", 0, np * f, SG_ACCESS_READ),
      acc(SG_SCALARS_BUFFER, offsetof(sg_step_scalars, learning_rate), sizeof(float), SG_ACCESS_READ)};
  TRY(sg_step_desc_add_launch(desc, "mlp.sgd_update", NULL, up, 3, np));
  *out = desc;
  return SG_OK;
fail:
  (void)sg_step_desc_release(desc);
  return s;
}

sg_status sgt_mlp_unregister_kernels(void) {
  static const char* const names[] = {"mlp.forward_hidden",  "mlp.forward_output", "mlp.mse_loss",  "mlp.grad_output",
                                      "mlp.backward_hidden", "mlp.grad_hidden",    "mlp.sgd_update"};
  sg_status first = SG_OK;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
    const sg_status s = sg_kernel_unregister(names[i]);
    if (first == SG_OK) first = s;
  }
  return first;
}
