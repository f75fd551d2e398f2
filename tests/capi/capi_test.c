/* tests/capi/capi_test.c — the C ABI from C11 (stepgraph/c/stepgraph.h).
 *
 * 1. Trains the demo MLP through the ABI (the demo's host kernels registered
 *    as C kernels, launched in the demo's order with its access lists) and
 *    compares parameters and losses bit for bit with the C++ demo
 *    (stepgraph::demo::train_mlp through mlp_shim.cpp).
 * 2. Drives every error path with bad input: each call must return the
 *    expected status and leave a message in sg_last_error() that names it.
 * Exit status 0 iff everything held. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stepgraph/c/stepgraph.h>

#include "mlp_shim.h"

static int g_failures = 0;

/* The message must start with the called function's name ("sg_x: ..."). */
static void check_status(sg_status got, sg_status want, const char* call, const char* file, int line) {
  if (got != want) {
    fprintf(stderr, "%s:%d: %s returned %s, want %s (last error: %s)\n", file, line, call, sg_status_string(got),
            sg_status_string(want), sg_last_error());
    ++g_failures;
    return;
  }
  if (want == SG_OK) return;
  const char* msg = sg_last_error();
  const size_t fn_len = strcspn(call, "(");
  if (msg == NULL || strlen(msg) <= fn_len + 2 || strncmp(msg, call, fn_len) != 0) {
    fprintf(stderr, "%s:%d: %s: message does not name the call: '%s'\n", file, line, call, msg ? msg : "(null)");
    ++g_failures;
  }
}
#define EXPECT_STATUS(call, want) check_status((call), (want), #call, __FILE__, __LINE__)
#define OK(call) EXPECT_STATUS(call, SG_OK)
#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                       \
    }                                                                     \
  } while (0)

/* ------------------------------------------------------------ the MLP step */

/* acc(): one declared access (sgt_acc, mlp_step.c). */
#define acc sgt_acc

/* [C example: training] — acquire a slot, fill its pinned inputs in place,
 * replay, wait, read the pinned output, release. */
static int train_through_c(const sgt_mlp_dims* d, int steps, int warmup, uint64_t seed, float lr, float* params,
                           float* losses) {
  sg_backend* backend = NULL;
  sg_executor* exec = NULL;
  OK(sg_backend_create("host", 1, &backend));
  sg_step_desc* desc = NULL;
  OK(sgt_mlp_step_desc(d, &desc)); /* mlp_step.c */
  sg_executor_options opts;
  OK(sg_executor_options_init(&opts));
  opts.warmup = warmup;
  OK(sg_executor_create(backend, desc, &opts, &exec));
  OK(sg_step_desc_release(desc));  /* the executor copied it */
  OK(sg_backend_release(backend)); /* the executor keeps the backend alive */
  if (exec == NULL) return -1;

  const size_t np = sgt_mlp_param_count(d);
  OK(sgt_mlp_init_params(d, seed, params) == 0 ? SG_OK : SG_INTERNAL);
  OK(sg_executor_write_state(exec, "params", params, np * sizeof(float)));
  for (int step = 0; step < steps; ++step) {
    OK(sg_executor_set_learning_rate(exec, sgt_mlp_learning_rate(lr, step, steps)));
    sg_inputs* in = NULL;
    if (sg_executor_acquire_inputs(exec, &in) != SG_OK) {
      fprintf(stderr, "acquire failed at step %d: %s\n", step, sg_last_error());
      ++g_failures;
      break;
    }
    void *x = NULL, *y = NULL;
    OK(sg_inputs_ptr(in, "x", &x, NULL));
    OK(sg_inputs_ptr(in, "y", &y, NULL));
    OK(sgt_mlp_make_batch(d, seed, step, (float*)x, (float*)y) == 0 ? SG_OK : SG_INTERNAL);
    sg_replay* r = NULL;
    OK(sg_executor_replay(exec, in, &r)); /* consumes `in` */
    OK(sg_replay_wait(r, -1, NULL));
    const void* loss = NULL;
    OK(sg_replay_output(r, "loss", &loss, NULL));
    if (loss != NULL) memcpy(&losses[step], loss, sizeof(float));
    OK(sg_replay_release(r));
  }
  OK(sg_executor_synchronize(exec));
  OK(sg_executor_read_state(exec, "params", params, np * sizeof(float)));
  OK(sg_executor_release(exec));
  return 0;
}

static void test_mlp_matches_cpp_demo(void) {
  const sgt_mlp_dims d = {64, 16, 32};
  const int steps = 40, warmup = 3;
  const uint64_t seed = 1;
  const float lr = 0.05f;
  const size_t np = sgt_mlp_param_count(&d);
  float* c_params = calloc(np, sizeof(float));
  float* cpp_params = calloc(np, sizeof(float));
  float* c_losses = calloc((size_t)steps, sizeof(float));
  float* cpp_losses = calloc((size_t)steps, sizeof(float));
  OK(sgt_mlp_register_kernels(&d));
  EXPECT(train_through_c(&d, steps, warmup, seed, lr, c_params, c_losses) == 0);
  EXPECT(sgt_mlp_reference(&d, steps, warmup, seed, lr, cpp_params, cpp_losses) == 0);
  EXPECT(memcmp(c_params, cpp_params, np * sizeof(float)) == 0);
  EXPECT(memcmp(c_losses, cpp_losses, (size_t)steps * sizeof(float)) == 0);
  EXPECT(c_losses[steps - 1] < c_losses[0]); /* it trained */
  printf("mlp: %zu params, loss %g -> %g, C ABI vs C++ demo %s\n", np, (double)c_losses[0], (double)c_losses[steps - 1],
         memcmp(c_params, cpp_params, np * sizeof(float)) == 0 ? "bit-identical" : "DIFFERENT");
  free(c_params);
  free(cpp_params);
  free(c_losses);
  free(cpp_losses);
}

/* ---------------------------------------------------------------- errors */

static void test_null_and_released_handles(void) {
  sg_backend* b = NULL;
  sg_buffer* buf = NULL;
  size_t n = 0;
  int i = 0;
  sg_replay* r = NULL;
  sg_inputs* in = NULL;
  sg_executor* e = NULL;
  EXPECT_STATUS(sg_backend_create(NULL, 1, &b), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_backend_create("no-such-backend", 1, &b), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_backend_create("host", 0, &b), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_backend_create("host", 1, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_backend_release(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_backend_device_count(NULL, &i), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_size(NULL, &n), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_release(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_synchronize(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_step_desc_add_buffer(NULL, SG_ROLE_INPUT, "x", 4), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_create(NULL, NULL, NULL, &e), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_acquire_inputs(NULL, &in), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_replay(NULL, NULL, &r), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_set_learning_rate(NULL, 0.1f), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_release(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_inputs_ptr(NULL, "x", NULL, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_inputs_release(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_replay_wait(NULL, 0, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_replay_poll(NULL, &i), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_replay_release(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_kernel_register(NULL, NULL, NULL, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_kernel_register("k.none", NULL, NULL, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_kernel_unregister("k.never-registered"), SG_INVALID_ARGUMENT);
  /* A pointer the library never made, and one of the wrong type. */
  EXPECT_STATUS(sg_buffer_size((const sg_buffer*)&n, &n), SG_INVALID_ARGUMENT);

  OK(sg_backend_create("host", 2, &b));
  OK(sg_backend_device_count(b, &i));
  EXPECT(i == 2);
  EXPECT_STATUS(sg_buffer_size((const sg_buffer*)b, &n), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_alloc_device(b, 0, 0, &buf), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_alloc_device(b, 7, 64, &buf), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_alloc_pinned(b, 0, &buf), SG_INVALID_ARGUMENT);
  OK(sg_buffer_alloc_device(b, 1, 64, &buf));
  void* p = NULL;
  EXPECT_STATUS(sg_buffer_host_ptr(buf, &p), SG_INVALID_STATE); /* device memory has no host address */
  OK(sg_buffer_release(buf));
  /* Use after release, and a second release: a status, not a crash. */
  EXPECT_STATUS(sg_buffer_size(buf, &n), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_buffer_release(buf), SG_INVALID_ARGUMENT);
  /* A released handle whose slot a new handle reuses: the generation differs. */
  sg_buffer* again = NULL;
  OK(sg_buffer_alloc_pinned(b, 32, &again));
  EXPECT(again != buf);
  EXPECT_STATUS(sg_buffer_size(buf, &n), SG_INVALID_ARGUMENT);
  OK(sg_buffer_size(again, &n));
  EXPECT(n == 32);
  OK(sg_buffer_release(again));
  OK(sg_backend_release(b));
  EXPECT_STATUS(sg_backend_device_count(b, &i), SG_INVALID_ARGUMENT);
}

static void test_streams_and_buffers(void) {
  sg_backend* b = NULL;
  sg_buffer *src = NULL, *dev = NULL, *dst = NULL;
  sg_stream* s = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_buffer_alloc_pinned(b, 256, &src));
  OK(sg_buffer_alloc_pinned(b, 256, &dst));
  OK(sg_buffer_alloc_device(b, 0, 256, &dev));
  EXPECT_STATUS(sg_stream_create(b, 3, &s), SG_INVALID_ARGUMENT);
  OK(sg_stream_create(b, 0, &s));
  size_t n = 0;
  OK(sg_buffer_size(src, &n));
  EXPECT(n == 256);
  unsigned char* hs = NULL;
  unsigned char* hd = NULL;
  OK(sg_buffer_host_ptr(src, (void**)&hs));
  OK(sg_buffer_host_ptr(dst, (void**)&hd));
  for (int i = 0; i < 256; ++i) hs[i] = (unsigned char)i;
  OK(sg_stream_copy(s, dev, 0, src, 0, 256));
  OK(sg_stream_memset(s, dev, 16, 16, 0xab));
  OK(sg_stream_copy(s, dst, 0, dev, 0, 256));
  OK(sg_stream_synchronize(s));
  int same = 1;
  for (int i = 0; i < 256; ++i) same &= hd[i] == (i >= 16 && i < 32 ? 0xab : i);
  EXPECT(same);
  /* Events: a second stream waits for the first one's record. */
  sg_event* ev = NULL;
  sg_stream* s2 = NULL;
  int done = 0;
  EXPECT_STATUS(sg_event_create(b, 2, &ev), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_create(NULL, 0, &ev), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_create(b, 0, NULL), SG_INVALID_ARGUMENT);
  OK(sg_event_create(b, 0, &ev));
  OK(sg_event_query(ev, &done)); /* never recorded: complete */
  EXPECT(done == 1);
  OK(sg_stream_create(b, 0, &s2));
  OK(sg_stream_memset(s, dev, 0, 8, 0x11));
  OK(sg_stream_record(s, ev));
  OK(sg_stream_wait_event(s2, ev));
  OK(sg_stream_copy(s2, dst, 0, dev, 0, 8));
  OK(sg_stream_synchronize(s2));
  OK(sg_event_synchronize(ev));
  OK(sg_event_query(ev, &done));
  EXPECT(done == 1 && hd[0] == 0x11 && hd[7] == 0x11);
  EXPECT_STATUS(sg_stream_record(s, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_wait_event(NULL, ev), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_query(ev, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_query(NULL, &done), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_synchronize(NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_event_synchronize((const sg_event*)s2), SG_INVALID_ARGUMENT); /* a stream is no event */
  OK(sg_event_release(ev));
  EXPECT_STATUS(sg_event_release(ev), SG_INVALID_ARGUMENT);
  OK(sg_stream_release(s2));
  EXPECT_STATUS(sg_stream_memset(s, dev, 250, 16, 0), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_copy(s, dst, 0, dev, 128, 256), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_copy(s, dst, 0, NULL, 0, 4), SG_INVALID_ARGUMENT);
  OK(sg_stream_release(s));
  OK(sg_buffer_release(src));
  OK(sg_buffer_release(dst));
  OK(sg_buffer_release(dev));
  OK(sg_backend_release(b));
}

/* A kernel that copies in[0] to out[0], and faults (returns 7) when it is 13
 * — after 100 ms, so that the fault surfaces asynchronously, after
 * sg_executor_replay has returned (see sg_error_callback in the header). */
static int copy_or_fault(void* const* args, size_t nargs, void* user_data) {
  (void)user_data;
  if (nargs != 2) return 1;
  const int v = *(const int*)args[0];
  if (v == 13) {
    const struct timespec t = {0, 100 * 1000 * 1000};
    nanosleep(&t, NULL);
    return 7;
  }
  *(int*)args[1] = v;
  return 0;
}

static int sleep_kernel(void* const* args, size_t nargs, void* user_data) {
  (void)args;
  (void)nargs;
  const struct timespec t = {0, 300 * 1000 * 1000};
  nanosleep(&t, NULL);
  *(int*)user_data = 1;
  return 0;
}

static sg_step_desc* tiny_desc(const char* kernel, const char* node) {
  sg_step_desc* d = NULL;
  OK(sg_step_desc_create(&d));
  OK(sg_step_desc_add_buffer(d, SG_ROLE_INPUT, "in", sizeof(int)));
  OK(sg_step_desc_add_buffer(d, SG_ROLE_OUTPUT, "out", sizeof(int)));
  OK(sg_step_desc_add_buffer(d, SG_ROLE_STATE, "w", 16));
  const sg_access a[] = {acc("in", 0, 0, SG_ACCESS_READ), acc("out", 0, 0, SG_ACCESS_WRITE)};
  OK(sg_step_desc_add_launch(d, kernel, node, a, 2, 1));
  return d;
}

/* ------------------------------------ stream launches, capture and graphs */

/* args[0]: ints (read-write); adds 1 to each of the *(int*)user_data ints. */
static int add_one(void* const* args, size_t nargs, void* user_data) {
  if (nargs != 1) return 1;
  int* v = args[0];
  for (int i = 0; i < *(const int*)user_data; ++i) v[i] += 1;
  return 0;
}
/* args[0] -> args[1]: doubles each of the *(int*)user_data ints. */
static int doubled(void* const* args, size_t nargs, void* user_data) {
  if (nargs != 2) return 1;
  const int* in = args[0];
  int* out = args[1];
  for (int i = 0; i < *(const int*)user_data; ++i) out[i] = 2 * in[i];
  return 0;
}
static int always_faults(void* const* args, size_t nargs, void* user_data) {
  (void)args;
  (void)nargs;
  (void)user_data;
  return 3;
}
/* Calls the ABI from inside a kernel: refused; the status is kept. */
struct reentry {
  sg_backend* backend;
  sg_status status;
  int named_kernel;
};
static int calls_the_abi(void* const* args, size_t nargs, void* user_data) {
  (void)args;
  (void)nargs;
  struct reentry* r = user_data;
  int n = 0;
  r->status = sg_backend_device_count(r->backend, &n);
  r->named_kernel = strstr(sg_last_error(), "inside a C kernel") != NULL;
  return 0;
}

static sg_buffer_access bacc(sg_buffer* b, size_t offset, size_t bytes, sg_access_mode mode) {
  sg_buffer_access a;
  a.buffer = b;
  a.offset = offset;
  a.bytes = bytes;
  a.mode = mode;
  return a;
}

/* [C example: capture] — two streams forked and joined by events inside a
 * capture, the graph instantiated and launched three times; compared with the
 * same arithmetic done here serially. */
static void test_capture_and_graphs(void) {
  enum { kN = 8 };
  static int count = kN;
  sg_backend* b = NULL;
  sg_stream *s1 = NULL, *s2 = NULL;
  sg_event *fork = NULL, *join = NULL;
  sg_buffer *a = NULL, *twice = NULL;
  int *ha = NULL, *ht = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_kernel_register("t.add_one", add_one, NULL, &count));
  OK(sg_kernel_register("t.doubled", doubled, NULL, &count));
  OK(sg_stream_create(b, 0, &s1));
  OK(sg_stream_create(b, 0, &s2));
  OK(sg_event_create(b, 0, &fork));
  OK(sg_event_create(b, 0, &join));
  OK(sg_buffer_alloc_pinned(b, kN * sizeof(int), &a));
  OK(sg_buffer_alloc_pinned(b, kN * sizeof(int), &twice));
  OK(sg_buffer_host_ptr(a, (void**)&ha));
  OK(sg_buffer_host_ptr(twice, (void**)&ht));
  if (ha == NULL || ht == NULL) return;
  int expect_a[kN], expect_t[kN];
  for (int i = 0; i < kN; ++i) ha[i] = expect_a[i] = 10 * i;
  memset(ht, 0, kN * sizeof(int));

  /* Eagerly: the launch runs. */
  const sg_buffer_access rw_a[] = {bacc(a, 0, 0, SG_ACCESS_READ_WRITE)};
  OK(sg_stream_launch(s1, "t.add_one", "eager add", rw_a, 1, kN));
  OK(sg_stream_synchronize(s1));
  for (int i = 0; i < kN; ++i) expect_a[i] += 1;
  EXPECT(memcmp(ha, expect_a, sizeof expect_a) == 0);

  /* Captured: s1 adds one, s2 (forked by `fork`) doubles into `twice`, s1
   * joins s2 back through `join`. Nothing runs while capturing. */
  sg_capture_status cs = SG_CAPTURE_INVALIDATED;
  OK(sg_stream_begin_capture(s1, SG_CAPTURE_THREAD_LOCAL));
  OK(sg_stream_capture_status(s1, &cs));
  EXPECT(cs == SG_CAPTURE_ACTIVE);
  EXPECT_STATUS(sg_stream_begin_capture(s1, SG_CAPTURE_THREAD_LOCAL), SG_INVALID_STATE); /* already capturing */
  EXPECT_STATUS(sg_stream_release(s1), SG_INVALID_STATE);                                /* end it first */
  OK(sg_stream_launch(s1, "t.add_one", "add", rw_a, 1, kN));
  OK(sg_stream_record(s1, fork));
  OK(sg_stream_wait_event(s2, fork));
  const sg_buffer_access dbl[] = {bacc(a, 0, 0, SG_ACCESS_READ), bacc(twice, 0, 0, SG_ACCESS_WRITE)};
  OK(sg_stream_launch(s2, "t.doubled", NULL, dbl, 2, kN));
  OK(sg_stream_record(s2, join));
  OK(sg_stream_wait_event(s1, join));
  sg_graph* g = NULL;
  OK(sg_stream_end_capture(s1, &g));
  OK(sg_stream_capture_status(s1, &cs));
  EXPECT(cs == SG_CAPTURE_NONE);
  EXPECT(memcmp(ha, expect_a, sizeof expect_a) == 0 && ht[kN - 1] == 0); /* nothing ran */
  size_t nodes = 0;
  OK(sg_graph_node_count(g, &nodes));
  EXPECT(nodes == 2); /* the two launches; records and waits are edges */
  sg_graph_exec* x = NULL;
  OK(sg_graph_instantiate(g, &x));
  OK(sg_graph_release(g)); /* the executable does not need its graph */
  OK(sg_graph_exec_node_count(x, &nodes));
  EXPECT(nodes == 2);
  for (int r = 0; r < 3; ++r) OK(sg_graph_exec_launch(x, r == 1 ? s2 : s1)); /* runs never overlap */
  OK(sg_stream_synchronize(s1));
  OK(sg_stream_synchronize(s2));
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < kN; ++i) {
      expect_a[i] += 1;
      expect_t[i] = 2 * expect_a[i];
    }
  EXPECT(memcmp(ha, expect_a, sizeof expect_a) == 0);
  EXPECT(memcmp(ht, expect_t, sizeof expect_t) == 0);
  /* The graph keeps its buffers alive: release the handles, launch again. */
  OK(sg_buffer_release(twice));
  OK(sg_graph_exec_launch(x, s1));
  OK(sg_stream_synchronize(s1));
  EXPECT(ha[0] == expect_a[0] + 1);

  /* A refused call invalidates the capture; ending it fails and leaves the
   * stream usable. */
  OK(sg_stream_begin_capture(s1, SG_CAPTURE_GLOBAL));
  EXPECT_STATUS(sg_stream_synchronize(s1), SG_INVALID_STATE);
  OK(sg_stream_capture_status(s1, &cs));
  EXPECT(cs == SG_CAPTURE_INVALIDATED);
  g = NULL;
  EXPECT_STATUS(sg_stream_end_capture(s1, &g), SG_INVALID_STATE);
  EXPECT(g == NULL);
  OK(sg_stream_capture_status(s1, &cs));
  EXPECT(cs == SG_CAPTURE_NONE);
  /* A fork not joined back: ending fails. */
  OK(sg_stream_begin_capture(s1, SG_CAPTURE_RELAXED));
  OK(sg_stream_record(s1, fork));
  OK(sg_stream_wait_event(s2, fork));
  OK(sg_stream_launch(s2, "t.add_one", NULL, rw_a, 1, kN));
  EXPECT_STATUS(sg_stream_end_capture(s1, &g), SG_INVALID_STATE);
  EXPECT(g == NULL);
  OK(sg_stream_launch(s1, "t.add_one", NULL, rw_a, 1, kN)); /* usable again, eagerly */
  OK(sg_stream_synchronize(s1));
  OK(sg_stream_synchronize(s2));
  EXPECT(ha[0] == expect_a[0] + 2);

  /* Bad input to the new calls. */
  EXPECT_STATUS(sg_stream_begin_capture(s1, (sg_capture_mode)9), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_end_capture(s1, &g), SG_INVALID_STATE); /* not capturing */
  EXPECT_STATUS(sg_stream_launch(s1, "t.nope", NULL, rw_a, 1, kN), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_stream_launch(s1, "t.add_one", NULL, NULL, 1, kN), SG_INVALID_ARGUMENT);
  const sg_buffer_access past_end[] = {bacc(a, 4, kN * sizeof(int), SG_ACCESS_READ_WRITE)};
  EXPECT_STATUS(sg_stream_launch(s1, "t.add_one", NULL, past_end, 1, kN), SG_INVALID_ARGUMENT);
  const sg_buffer_access dead[] = {bacc(twice, 0, 0, SG_ACCESS_WRITE)}; /* released above */
  EXPECT_STATUS(sg_stream_launch(s1, "t.add_one", NULL, dead, 1, kN), SG_INVALID_ARGUMENT);
  const sg_buffer_access bad_mode[] = {bacc(a, 0, 0, (sg_access_mode)5)};
  EXPECT_STATUS(sg_stream_launch(s1, "t.add_one", NULL, bad_mode, 1, kN), SG_INVALID_ARGUMENT);
  /* A kernel with only a device address (a __global__ function on cuda) has
   * nothing to run on the host backend. */
  OK(sg_kernel_register("t.device_only", NULL, (const void*)&count, NULL));
  EXPECT_STATUS(sg_stream_launch(s1, "t.device_only", NULL, rw_a, 1, kN), SG_INVALID_ARGUMENT);
  OK(sg_kernel_unregister("t.device_only"));
  EXPECT_STATUS(sg_graph_exec_launch((const sg_graph_exec*)s1, s1), SG_INVALID_ARGUMENT); /* a stream is no exec */
  OK(sg_graph_exec_release(x));
  EXPECT_STATUS(sg_graph_exec_launch(x, s1), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_graph_exec_release(x), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_graph_release(g), SG_INVALID_ARGUMENT);
  OK(sg_stream_synchronize(s1));
  EXPECT(ha[0] == expect_a[0] + 2); /* the refused launches enqueued nothing */

  /* Device memory of another device: refused. */
  sg_backend* b2 = NULL;
  sg_stream* on0 = NULL;
  sg_buffer* dev1 = NULL;
  OK(sg_backend_create("host", 2, &b2));
  OK(sg_stream_create(b2, 0, &on0));
  OK(sg_buffer_alloc_device(b2, 1, 64, &dev1));
  const sg_buffer_access other_device[] = {bacc(dev1, 0, 0, SG_ACCESS_READ_WRITE)};
  EXPECT_STATUS(sg_stream_launch(on0, "t.add_one", NULL, other_device, 1, 1), SG_INVALID_ARGUMENT);
  OK(sg_buffer_release(dev1));
  OK(sg_stream_release(on0));
  OK(sg_backend_release(b2));

  OK(sg_event_release(fork));
  OK(sg_event_release(join));
  OK(sg_buffer_release(a));
  OK(sg_stream_release(s1));
  OK(sg_stream_release(s2));
  OK(sg_kernel_unregister("t.add_one"));
  OK(sg_kernel_unregister("t.doubled"));
  OK(sg_backend_release(b));
}

/* A direct launch whose kernel faults: sticky for the device, reported by
 * the synchronize with the node's name; a kernel calling the ABI is refused. */
static void test_direct_launch_fault_and_reentry(void) {
  sg_backend* b = NULL;
  sg_stream* s = NULL;
  sg_buffer* buf = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_stream_create(b, 0, &s));
  OK(sg_buffer_alloc_pinned(b, 16, &buf));
  struct reentry re;
  re.backend = b;
  re.status = SG_OK;
  re.named_kernel = 0;
  OK(sg_kernel_register("t.reenters", calls_the_abi, NULL, &re));
  OK(sg_kernel_register("t.faults", always_faults, NULL, NULL));
  const sg_buffer_access w[] = {bacc(buf, 0, 0, SG_ACCESS_WRITE)};
  OK(sg_stream_launch(s, "t.reenters", NULL, w, 1, 1));
  OK(sg_stream_synchronize(s));
  EXPECT(re.status == SG_INVALID_STATE && re.named_kernel);
  OK(sg_stream_launch(s, "t.faults", "faulty node", w, 1, 1));
  EXPECT_STATUS(sg_stream_synchronize(s), SG_DEVICE_FAULT);
  EXPECT(strstr(sg_last_error(), "faulty node") != NULL);
  EXPECT_STATUS(sg_stream_launch(s, "t.reenters", NULL, w, 1, 1), SG_DEVICE_FAULT); /* sticky */
  OK(sg_kernel_unregister("t.reenters"));
  OK(sg_kernel_unregister("t.faults"));
  OK(sg_buffer_release(buf));
  OK(sg_stream_release(s));
  OK(sg_backend_release(b));
}

static void test_step_description_errors(void) {
  sg_backend* b = NULL;
  sg_executor* e = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_kernel_register("t.copy", copy_or_fault, NULL, NULL));
  EXPECT_STATUS(sg_kernel_register("t.copy", copy_or_fault, NULL, NULL), SG_INVALID_ARGUMENT);

  sg_step_desc* d = tiny_desc("t.copy", "copy");
  EXPECT_STATUS(sg_step_desc_add_buffer(d, SG_ROLE_SCRATCH, "in", 4), SG_INVALID_ARGUMENT); /* duplicate */
  EXPECT_STATUS(sg_step_desc_add_buffer(d, SG_ROLE_SCRATCH, "z", 0), SG_INVALID_ARGUMENT);  /* zero bytes */
  EXPECT_STATUS(sg_step_desc_add_buffer(d, SG_ROLE_SCRATCH, SG_SCALARS_BUFFER, 4), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_step_desc_add_buffer(d, (sg_buffer_role)9, "q", 4), SG_INVALID_ARGUMENT); /* bad role */
  EXPECT_STATUS(sg_step_desc_add_launch(d, "t.copy", NULL, NULL, 2, 1), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_create(b, d, NULL, NULL), SG_INVALID_ARGUMENT);
  OK(sg_step_desc_release(d));

  d = tiny_desc("t.no-such-kernel", NULL); /* an unknown kernel name */
  EXPECT_STATUS(sg_executor_create(b, d, NULL, &e), SG_INVALID_ARGUMENT);
  OK(sg_step_desc_release(d));
  d = tiny_desc("t.copy", NULL);
  const sg_access unknown[] = {acc("nope", 0, 0, SG_ACCESS_READ)}; /* an unknown buffer name */
  OK(sg_step_desc_add_launch(d, "t.copy", "bad", unknown, 1, 1));
  EXPECT_STATUS(sg_executor_create(b, d, NULL, &e), SG_INVALID_ARGUMENT);
  OK(sg_step_desc_release(d));
  d = tiny_desc("t.copy", NULL);
  const sg_access past_end[] = {acc("w", 8, 16, SG_ACCESS_READ)}; /* a range past the buffer's end */
  OK(sg_step_desc_add_launch(d, "t.copy", "bad", past_end, 1, 1));
  EXPECT_STATUS(sg_executor_create(b, d, NULL, &e), SG_INVALID_ARGUMENT);
  OK(sg_step_desc_release(d));
  EXPECT(e == NULL);

  /* Wrong sizes and unknown names on a working executor. */
  d = tiny_desc("t.copy", NULL);
  sg_executor_options o;
  OK(sg_executor_options_init(&o));
  o.warmup = 0;
  o.max_in_flight = 1;
  o.on_busy = SG_ON_BUSY_FAIL;
  OK(sg_executor_create(b, d, &o, &e));
  OK(sg_step_desc_release(d));
  char w[16] = {0};
  EXPECT_STATUS(sg_executor_write_state(e, "w", w, 8), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_read_state(e, "w", w, 32), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_write_state(e, "nope", w, 16), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_write_state(e, "w", NULL, 16), SG_INVALID_ARGUMENT);
  OK(sg_executor_write_state(e, "w", w, 16));
  sg_inputs* in = NULL;
  sg_inputs* in2 = NULL;
  void* p = NULL;
  OK(sg_executor_acquire_inputs(e, &in));
  EXPECT_STATUS(sg_executor_acquire_inputs(e, &in2), SG_INVALID_STATE); /* one slot, fail when busy */
  EXPECT_STATUS(sg_inputs_ptr(in, "nope", &p, NULL), SG_INVALID_ARGUMENT);
  OK(sg_inputs_ptr(in, "in", &p, NULL));
  *(int*)p = 42;
  sg_replay* r = NULL;
  OK(sg_executor_replay(e, in, &r));
  EXPECT_STATUS(sg_inputs_release(in), SG_INVALID_ARGUMENT); /* consumed by the replay */
  OK(sg_replay_wait(r, 10000, NULL));
  const void* out = NULL;
  EXPECT_STATUS(sg_replay_output(r, "nope", &out, NULL), SG_INVALID_ARGUMENT);
  OK(sg_replay_output(r, "out", &out, NULL));
  EXPECT(out != NULL && *(const int*)out == 42);
  OK(sg_replay_release(r));
  EXPECT_STATUS(sg_replay_release(r), SG_INVALID_ARGUMENT);
  OK(sg_executor_close(e));
  EXPECT_STATUS(sg_executor_acquire_inputs(e, &in), SG_INVALID_STATE);
  OK(sg_executor_release(e));
  OK(sg_kernel_unregister("t.copy"));
  OK(sg_backend_release(b));
}

static void test_wait_timeout(void) {
  static int ran = 0;
  sg_backend* b = NULL;
  sg_executor* e = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_kernel_register("t.sleep", sleep_kernel, NULL, &ran));
  sg_step_desc* d = tiny_desc("t.sleep", NULL);
  sg_executor_options o;
  OK(sg_executor_options_init(&o));
  o.mode = SG_MODE_EAGER;
  OK(sg_executor_create(b, d, &o, &e));
  OK(sg_step_desc_release(d));
  sg_inputs* in = NULL;
  sg_replay* r = NULL;
  OK(sg_executor_acquire_inputs(e, &in));
  OK(sg_executor_replay(e, in, &r));
  sg_replay_status st = SG_REPLAY_DONE;
  int done = 1;
  EXPECT_STATUS(sg_replay_wait(r, 1, &st), SG_TIMEOUT);
  EXPECT(st == SG_REPLAY_QUEUED || st == SG_REPLAY_RUNNING);
  OK(sg_replay_poll(r, &done));
  EXPECT(done == 0);
  OK(sg_replay_wait(r, -1, &st));
  EXPECT(st == SG_REPLAY_DONE && ran == 1);
  OK(sg_replay_release(r));
  OK(sg_executor_release(e));
  OK(sg_kernel_unregister("t.sleep"));
  OK(sg_backend_release(b));
}

struct fault_log {
  int calls;
  int64_t step;
  char node[64];
  int kind;
  int on_main_thread;
  pthread_t main_thread;
  sg_executor* executor;
  sg_status reentry; /* what calling the executor from the callback returned */
};

/* [C example: the error callback] — runs on the executor's thread. */
static void on_error(const sg_step_error* err, void* user_data) {
  struct fault_log* log = user_data;
  ++log->calls;
  log->step = err->step;
  log->kind = (int)err->kind;
  snprintf(log->node, sizeof log->node, "%s", err->node ? err->node : "(null)");
  log->on_main_thread = pthread_equal(pthread_self(), log->main_thread) != 0;
  log->reentry = sg_executor_synchronize(log->executor); /* refused: SG_INVALID_STATE */
}

static sg_status run_step(sg_executor* e, int value, sg_replay_status* st) {
  sg_inputs* in = NULL;
  sg_replay* r = NULL;
  void* p = NULL;
  sg_status s = sg_executor_acquire_inputs(e, &in);
  if (s != SG_OK) return s;
  OK(sg_inputs_ptr(in, "in", &p, NULL));
  *(int*)p = value;
  s = sg_executor_replay(e, in, &r);
  if (s != SG_OK) return s;
  s = sg_replay_wait(r, 10000, st);
  const sg_status saved = s;
  if (s == SG_DEVICE_FAULT) {
    int has = 0;
    sg_step_error err;
    OK(sg_replay_error(r, &has, &err));
    EXPECT(has == 1 && err.step == 2 && err.node != NULL && strcmp(err.node, "fault_node") == 0);
    EXPECT(err.kind == SG_ERROR_DEVICE_FAULT && err.message != NULL && err.message[0] != '\0');
  }
  OK(sg_replay_release(r));
  return saved;
}

static void test_faulting_kernel(void) {
  struct fault_log log;
  memset(&log, 0, sizeof log);
  log.main_thread = pthread_self();
  sg_backend* b = NULL;
  sg_executor* e = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_kernel_register("t.fault", copy_or_fault, NULL, NULL));
  sg_step_desc* d = tiny_desc("t.fault", "fault_node");
  sg_executor_options o;
  OK(sg_executor_options_init(&o));
  o.warmup = 1;
  o.on_error = on_error;
  o.on_error_user_data = &log;
  OK(sg_executor_create(b, d, &o, &e));
  log.executor = e;
  OK(sg_step_desc_release(d));
  sg_replay_status st = SG_REPLAY_QUEUED;
  OK(run_step(e, 1, &st)); /* step 0: warm-up */
  OK(run_step(e, 2, &st)); /* step 1: capture and replay */
  /* step 2: the replayed kernel faults; sg_replay_wait says so */
  EXPECT(run_step(e, 13, &st) == SG_DEVICE_FAULT);
  EXPECT(strncmp(sg_last_error(), "sg_replay_wait: ", 16) == 0 && strstr(sg_last_error(), "fault_node") != NULL);
  EXPECT(st == SG_REPLAY_FAILED);
  /* The executor is failed by the time the replay's handle completes. */
  sg_executor_state state = SG_EXECUTOR_READY;
  OK(sg_executor_get_state(e, &state));
  EXPECT(state == SG_EXECUTOR_FAILED);
  /* Sticky: every later call is SG_INVALID_STATE naming the step. */
  sg_inputs* in = NULL;
  EXPECT_STATUS(sg_executor_acquire_inputs(e, &in), SG_INVALID_STATE);
  EXPECT(strstr(sg_last_error(), "step 2") != NULL);
  if (in != NULL) OK(sg_inputs_release(in));
  EXPECT_STATUS(sg_executor_replay(e, NULL, NULL), SG_INVALID_ARGUMENT);
  EXPECT_STATUS(sg_executor_prepare(e), SG_INVALID_STATE);
  int failed = 0;
  sg_step_error err;
  OK(sg_executor_failure(e, &failed, &err));
  EXPECT(failed == 1 && err.step == 2 && err.node != NULL && strcmp(err.node, "fault_node") == 0);
  OK(sg_executor_release(e)); /* joins the executor's thread: the callback has run by now */
  EXPECT(log.calls == 1);
  EXPECT(log.step == 2 && strcmp(log.node, "fault_node") == 0 && log.kind == SG_ERROR_DEVICE_FAULT);
  EXPECT(log.on_main_thread == 0);
  EXPECT(log.reentry == SG_INVALID_STATE);
  OK(sg_kernel_unregister("t.fault"));
  OK(sg_backend_release(b));
}

/* Every entry point that takes a handle, with NULL for it, and with NULL
 * for its out-parameter on a live handle: a status and a message, no crash. */
static void test_every_entry_point_rejects_null(void) {
  void* p = NULL;
  const void* cp = NULL;
  size_t n = 0;
  int i = 0;
  int64_t step = 0;
  const char* name = NULL;
  sg_buffer* buf = NULL;
  sg_stream* st = NULL;
  sg_step_desc* d = NULL;
  sg_executor* e = NULL;
  sg_inputs* in = NULL;
  sg_replay* r = NULL;
  sg_executor_state es;
  sg_replay_status rs;
  sg_step_error err;
  sg_graph* g = NULL;
  sg_graph_exec* x = NULL;
  sg_capture_status cs;
  const sg_status want = SG_INVALID_ARGUMENT;
  EXPECT_STATUS(sg_backend_name(NULL, &name), want);
  EXPECT_STATUS(sg_buffer_alloc_device(NULL, 0, 4, &buf), want);
  EXPECT_STATUS(sg_buffer_alloc_pinned(NULL, 4, &buf), want);
  EXPECT_STATUS(sg_buffer_host_ptr(NULL, &p), want);
  EXPECT_STATUS(sg_stream_create(NULL, 0, &st), want);
  EXPECT_STATUS(sg_stream_memset(NULL, NULL, 0, 4, 0), want);
  EXPECT_STATUS(sg_stream_copy(NULL, NULL, 0, NULL, 0, 4), want);
  EXPECT_STATUS(sg_stream_release(NULL), want);
  EXPECT_STATUS(sg_stream_launch(NULL, "k", NULL, NULL, 0, 1), want);
  EXPECT_STATUS(sg_stream_begin_capture(NULL, SG_CAPTURE_THREAD_LOCAL), want);
  EXPECT_STATUS(sg_stream_end_capture(NULL, &g), want);
  EXPECT_STATUS(sg_stream_capture_status(NULL, &cs), want);
  EXPECT_STATUS(sg_graph_node_count(NULL, &n), want);
  EXPECT_STATUS(sg_graph_instantiate(NULL, &x), want);
  EXPECT_STATUS(sg_graph_release(NULL), want);
  EXPECT_STATUS(sg_graph_exec_launch(NULL, NULL), want);
  EXPECT_STATUS(sg_graph_exec_node_count(NULL, &n), want);
  EXPECT_STATUS(sg_graph_exec_release(NULL), want);
  EXPECT_STATUS(sg_kernel_unregister(NULL), want);
  EXPECT_STATUS(sg_step_desc_create(NULL), want);
  EXPECT_STATUS(sg_step_desc_add_launch(NULL, "k", NULL, NULL, 0, 1), want);
  EXPECT_STATUS(sg_step_desc_add_memset(NULL, "b", 0, 0, 0, NULL), want);
  EXPECT_STATUS(sg_step_desc_release(NULL), want);
  EXPECT_STATUS(sg_executor_options_init(NULL), want);
  EXPECT_STATUS(sg_executor_prepare(NULL), want);
  EXPECT_STATUS(sg_executor_synchronize(NULL), want);
  EXPECT_STATUS(sg_executor_write_state(NULL, "w", &n, sizeof n), want);
  EXPECT_STATUS(sg_executor_read_state(NULL, "w", &n, sizeof n), want);
  EXPECT_STATUS(sg_executor_get_state(NULL, &es), want);
  EXPECT_STATUS(sg_executor_failure(NULL, &i, &err), want);
  EXPECT_STATUS(sg_executor_close(NULL), want);
  EXPECT_STATUS(sg_replay_step(NULL, &step), want);
  EXPECT_STATUS(sg_replay_status_get(NULL, &rs), want);
  EXPECT_STATUS(sg_replay_error(NULL, &i, &err), want);
  EXPECT_STATUS(sg_replay_output(NULL, "out", &cp, &n), want);

  /* Live handles, NULL out-parameters or names. */
  sg_backend* b = NULL;
  OK(sg_backend_create("host", 1, &b));
  EXPECT_STATUS(sg_backend_name(b, NULL), want);
  EXPECT_STATUS(sg_backend_device_count(b, NULL), want);
  EXPECT_STATUS(sg_buffer_alloc_device(b, 0, 4, NULL), want);
  EXPECT_STATUS(sg_buffer_alloc_pinned(b, 4, NULL), want);
  EXPECT_STATUS(sg_stream_create(b, 0, NULL), want);
  OK(sg_stream_create(b, 0, &st));
  EXPECT_STATUS(sg_stream_launch(st, NULL, NULL, NULL, 0, 1), want);
  EXPECT_STATUS(sg_stream_capture_status(st, NULL), want);
  OK(sg_stream_begin_capture(st, SG_CAPTURE_THREAD_LOCAL));
  EXPECT_STATUS(sg_stream_end_capture(st, NULL), want); /* the capture goes on */
  OK(sg_stream_end_capture(st, &g));
  EXPECT_STATUS(sg_graph_node_count(g, NULL), want);
  EXPECT_STATUS(sg_graph_instantiate(g, NULL), want);
  OK(sg_graph_instantiate(g, &x));
  EXPECT_STATUS(sg_graph_exec_node_count(x, NULL), want);
  EXPECT_STATUS(sg_graph_exec_launch(x, NULL), want);
  OK(sg_graph_exec_launch(x, st)); /* an empty graph */
  OK(sg_stream_synchronize(st));
  OK(sg_graph_exec_release(x));
  OK(sg_graph_release(g));
  OK(sg_stream_release(st));
  OK(sg_backend_name(b, &name));
  EXPECT(name != NULL && strcmp(name, "host") == 0);
  OK(sg_buffer_alloc_pinned(b, 16, &buf));
  EXPECT_STATUS(sg_buffer_host_ptr(buf, NULL), want);
  EXPECT_STATUS(sg_buffer_size(buf, NULL), want);
  OK(sg_buffer_release(buf));
  OK(sg_kernel_register("t.null", copy_or_fault, NULL, NULL));
  d = tiny_desc("t.null", NULL);
  EXPECT_STATUS(sg_step_desc_add_buffer(d, SG_ROLE_INPUT, NULL, 4), want);
  EXPECT_STATUS(sg_step_desc_add_launch(d, NULL, NULL, NULL, 0, 1), want);
  EXPECT_STATUS(sg_step_desc_add_memset(d, NULL, 0, 0, 0, NULL), want);
  EXPECT_STATUS(sg_executor_create(b, NULL, NULL, &e), want);
  sg_executor_options o;
  OK(sg_executor_options_init(&o));
  o.warmup = 0;
  o.mode = (sg_execution_mode)7;
  EXPECT_STATUS(sg_executor_create(b, d, &o, &e), want);
  o.mode = SG_MODE_GRAPH;
  o.max_in_flight = 0;
  EXPECT_STATUS(sg_executor_create(b, d, &o, &e), want);
  o.max_in_flight = 1;
  OK(sg_executor_create(b, d, &o, &e));
  OK(sg_step_desc_release(d));
  EXPECT_STATUS(sg_executor_acquire_inputs(e, NULL), want);
  EXPECT_STATUS(sg_executor_get_state(e, NULL), want);
  EXPECT_STATUS(sg_executor_failure(e, NULL, &err), want);
  EXPECT_STATUS(sg_executor_write_state(e, NULL, &n, sizeof n), want);
  EXPECT_STATUS(sg_executor_read_state(e, "w", NULL, 16), want);
  OK(sg_executor_get_state(e, &es));
  EXPECT(es == SG_EXECUTOR_CREATED);
  OK(sg_executor_failure(e, &i, &err));
  EXPECT(i == 0);
  OK(sg_executor_prepare(e));
  OK(sg_executor_acquire_inputs(e, &in));
  EXPECT_STATUS(sg_inputs_ptr(in, NULL, &p, &n), want);
  EXPECT_STATUS(sg_inputs_ptr(in, "in", NULL, &n), want);
  OK(sg_inputs_ptr(in, "in", &p, &n));
  EXPECT(n == sizeof(int));
  *(int*)p = 5;
  EXPECT_STATUS(sg_executor_replay(e, in, NULL), want); /* consumes `in` even so */
  EXPECT_STATUS(sg_inputs_release(in), want);
  OK(sg_executor_acquire_inputs(e, &in)); /* the slot came back */
  OK(sg_executor_replay(e, in, &r));
  EXPECT_STATUS(sg_replay_step(r, NULL), want);
  EXPECT_STATUS(sg_replay_status_get(r, NULL), want);
  EXPECT_STATUS(sg_replay_poll(r, NULL), want);
  EXPECT_STATUS(sg_replay_error(r, NULL, &err), want);
  EXPECT_STATUS(sg_replay_output(r, NULL, &cp, &n), want);
  EXPECT_STATUS(sg_replay_output(r, "out", NULL, &n), want);
  OK(sg_replay_wait(r, -1, NULL));
  OK(sg_replay_step(r, &step));
  OK(sg_replay_error(r, &i, &err));
  EXPECT(i == 0);
  OK(sg_replay_release(r));
  OK(sg_executor_release(e));
  EXPECT_STATUS(sg_executor_release(e), want);
  OK(sg_kernel_unregister("t.null"));
  OK(sg_backend_release(b));
}

/* A memset op in the step: the output is set before the kernel writes it. */
static int write_first_int(void* const* args, size_t nargs, void* user_data) {
  (void)user_data;
  if (nargs != 2) return 1;
  *(int*)args[1] = *(const int*)args[0];
  return 0;
}

static void test_memset_op(void) {
  sg_backend* b = NULL;
  sg_executor* e = NULL;
  sg_step_desc* d = NULL;
  OK(sg_backend_create("host", 1, &b));
  OK(sg_kernel_register("t.first", write_first_int, NULL, NULL));
  OK(sg_step_desc_create(&d));
  OK(sg_step_desc_add_buffer(d, SG_ROLE_INPUT, "in", sizeof(int)));
  OK(sg_step_desc_add_buffer(d, SG_ROLE_OUTPUT, "out", 16));
  OK(sg_step_desc_add_memset(d, "out", 0, 0, 0x5a, NULL));
  const sg_access a[] = {acc("in", 0, 0, SG_ACCESS_READ), acc("out", 0, sizeof(int), SG_ACCESS_WRITE)};
  OK(sg_step_desc_add_launch(d, "t.first", NULL, a, 2, 1));
  sg_executor_options o;
  OK(sg_executor_options_init(&o));
  o.warmup = 1;
  OK(sg_executor_create(b, d, &o, &e));
  for (int step = 0; step < 3; ++step) { /* warm-up, capture, replay */
    sg_inputs* in = NULL;
    sg_replay* r = NULL;
    void* p = NULL;
    const void* out = NULL;
    size_t n = 0;
    OK(sg_executor_acquire_inputs(e, &in));
    OK(sg_inputs_ptr(in, "in", &p, NULL));
    *(int*)p = 100 + step;
    OK(sg_executor_replay(e, in, &r));
    OK(sg_replay_wait(r, 10000, NULL));
    OK(sg_replay_output(r, "out", &out, &n));
    const unsigned char* bytes = out;
    int v = 0;
    memcpy(&v, out, sizeof v);
    EXPECT(n == 16 && v == 100 + step && bytes[4] == 0x5a && bytes[15] == 0x5a);
    OK(sg_replay_release(r));
  }
  OK(sg_executor_release(e));
  /* A memset of a buffer the step does not declare. */
  OK(sg_step_desc_add_memset(d, "nope", 0, 0, 0, NULL));
  EXPECT_STATUS(sg_executor_create(b, d, &o, &e), SG_INVALID_ARGUMENT);
  OK(sg_step_desc_release(d));
  OK(sg_kernel_unregister("t.first"));
  OK(sg_backend_release(b));
}

/* "cuda" works where a device is present; elsewhere it is SG_INVALID_STATE
 * with the reason. */
static void test_cuda_backend_or_reason(void) {
  sg_backend* b = NULL;
  const sg_status s = sg_backend_create("cuda", 1, &b);
  if (s == SG_OK) {
    OK(sg_backend_release(b));
    return;
  }
  EXPECT(s == SG_INVALID_STATE && strncmp(sg_last_error(), "sg_backend_create: ", 19) == 0);
  printf("cuda backend: %s\n", sg_last_error());
}

int main(void) {
  test_mlp_matches_cpp_demo();
  test_null_and_released_handles();
  test_streams_and_buffers();
  test_capture_and_graphs();
  test_direct_launch_fault_and_reentry();
  test_step_description_errors();
  test_wait_timeout();
  test_faulting_kernel();
  test_every_entry_point_rejects_null();
  test_memset_op();
  test_cuda_backend_or_reason();
  EXPECT(strcmp(sg_status_string(SG_TIMEOUT), "SG_TIMEOUT") == 0);
  if (g_failures != 0) {
    fprintf(stderr, "capi_test: %d failure(s)\n", g_failures);
    return 1;
  }
  printf("capi_test: all checks passed\n");
  return 0;
}
