// The C ABI on the cuda backend (label gpu): `__global__` kernels registered
// by address (sg_kernel_register with host NULL), launched directly on a
// stream, captured into a graph and replayed, and run as a step by the
// executor; every result compared with the same arithmetic done here. Skips
// itself with the reason where the cuda backend cannot run.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <stepgraph/c/stepgraph.h>

extern "C" {
const void* sgt_cu_add_one(void);
const void* sgt_cu_copy_plus_one(void);
}

namespace {

constexpr int kN = 1000;  // more than one block of 128

#define SG_OK_OR_FAIL(call) ASSERT_EQ((call), SG_OK) << #call << ": " << sg_last_error()

class CapiCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sg_backend_create("cuda", 1, &backend_) != SG_OK) GTEST_SKIP() << sg_last_error();
    SG_OK_OR_FAIL(sg_kernel_register("cu.add_one", nullptr, sgt_cu_add_one(), nullptr));
    SG_OK_OR_FAIL(sg_kernel_register("cu.copy_plus_one", nullptr, sgt_cu_copy_plus_one(), nullptr));
  }
  void TearDown() override {
    if (backend_ == nullptr) return;
    EXPECT_EQ(sg_kernel_unregister("cu.add_one"), SG_OK);
    EXPECT_EQ(sg_kernel_unregister("cu.copy_plus_one"), SG_OK);
    EXPECT_EQ(sg_backend_release(backend_), SG_OK);
  }
  sg_backend* backend_ = nullptr;
};

TEST_F(CapiCuda, GlobalKernelsLaunchDirectlyAndFromACapturedGraph) {
  sg_stream* s = nullptr;
  sg_buffer* values = nullptr;  // pinned: mapped into the device, read here
  sg_buffer* count = nullptr;
  SG_OK_OR_FAIL(sg_stream_create(backend_, 0, &s));
  SG_OK_OR_FAIL(sg_buffer_alloc_pinned(backend_, kN * sizeof(int), &values));
  SG_OK_OR_FAIL(sg_buffer_alloc_pinned(backend_, sizeof(int), &count));
  int* v = nullptr;
  int* n = nullptr;
  SG_OK_OR_FAIL(sg_buffer_host_ptr(values, reinterpret_cast<void**>(&v)));
  SG_OK_OR_FAIL(sg_buffer_host_ptr(count, reinterpret_cast<void**>(&n)));
  *n = kN;
  std::vector<int> expect(kN);
  for (int i = 0; i < kN; ++i) v[i] = expect[i] = 3 * i;

  const sg_buffer_access acc[] = {{values, 0, 0, SG_ACCESS_READ_WRITE}, {count, 0, 0, SG_ACCESS_READ}};
  SG_OK_OR_FAIL(sg_stream_launch(s, "cu.add_one", nullptr, acc, 2, kN));
  SG_OK_OR_FAIL(sg_stream_synchronize(s));
  for (int& e : expect) e += 1;
  EXPECT_EQ(std::memcmp(v, expect.data(), kN * sizeof(int)), 0);

  sg_graph* g = nullptr;
  sg_graph_exec* x = nullptr;
  SG_OK_OR_FAIL(sg_stream_begin_capture(s, SG_CAPTURE_THREAD_LOCAL));
  SG_OK_OR_FAIL(sg_stream_launch(s, "cu.add_one", "add", acc, 2, kN));
  SG_OK_OR_FAIL(sg_stream_end_capture(s, &g));
  EXPECT_EQ(std::memcmp(v, expect.data(), kN * sizeof(int)), 0);  // nothing ran while capturing
  SG_OK_OR_FAIL(sg_graph_instantiate(g, &x));
  for (int r = 0; r < 3; ++r) SG_OK_OR_FAIL(sg_graph_exec_launch(x, s));
  SG_OK_OR_FAIL(sg_stream_synchronize(s));
  for (int& e : expect) e += 3;
  EXPECT_EQ(std::memcmp(v, expect.data(), kN * sizeof(int)), 0);

  EXPECT_EQ(sg_graph_exec_release(x), SG_OK);
  EXPECT_EQ(sg_graph_release(g), SG_OK);
  EXPECT_EQ(sg_buffer_release(values), SG_OK);
  EXPECT_EQ(sg_buffer_release(count), SG_OK);
  EXPECT_EQ(sg_stream_release(s), SG_OK);
}

TEST_F(CapiCuda, ExecutorReplaysAGlobalKernelStep) {
  sg_step_desc* d = nullptr;
  SG_OK_OR_FAIL(sg_step_desc_create(&d));
  SG_OK_OR_FAIL(sg_step_desc_add_buffer(d, SG_ROLE_INPUT, "in", kN * sizeof(int)));
  SG_OK_OR_FAIL(sg_step_desc_add_buffer(d, SG_ROLE_OUTPUT, "out", kN * sizeof(int)));
  SG_OK_OR_FAIL(sg_step_desc_add_buffer(d, SG_ROLE_STATE, "n", sizeof(int)));
  const sg_access acc[] = {{"in", 0, 0, SG_ACCESS_READ}, {"out", 0, 0, SG_ACCESS_WRITE}, {"n", 0, 0, SG_ACCESS_READ}};
  SG_OK_OR_FAIL(sg_step_desc_add_launch(d, "cu.copy_plus_one", nullptr, acc, 3, kN));
  sg_executor_options o;
  SG_OK_OR_FAIL(sg_executor_options_init(&o));
  o.warmup = 1;
  sg_executor* e = nullptr;
  SG_OK_OR_FAIL(sg_executor_create(backend_, d, &o, &e));
  SG_OK_OR_FAIL(sg_step_desc_release(d));
  const int count = kN;
  SG_OK_OR_FAIL(sg_executor_write_state(e, "n", &count, sizeof count));
  for (int step = 0; step < 4; ++step) {  // warm-up, capture, replays
    sg_inputs* in = nullptr;
    sg_replay* r = nullptr;
    void* p = nullptr;
    const void* out = nullptr;
    SG_OK_OR_FAIL(sg_executor_acquire_inputs(e, &in));
    SG_OK_OR_FAIL(sg_inputs_ptr(in, "in", &p, nullptr));
    for (int i = 0; i < kN; ++i) static_cast<int*>(p)[i] = i * step;
    SG_OK_OR_FAIL(sg_executor_replay(e, in, &r));
    SG_OK_OR_FAIL(sg_replay_wait(r, 30000, nullptr));
    SG_OK_OR_FAIL(sg_replay_output(r, "out", &out, nullptr));
    for (int i = 0; i < kN; ++i) ASSERT_EQ(static_cast<const int*>(out)[i], i * step + 1) << "step " << step;
    SG_OK_OR_FAIL(sg_replay_release(r));
  }
  EXPECT_EQ(sg_executor_release(e), SG_OK);
}

}  // namespace
