// bm_capi: what a replay costs through the C ABI (stepgraph/c/stepgraph.h,
// libstepgraph_c.so) over the same replay called in C++ (issue 20's target:
// <= 1.02x).
//
//   BM_Host_CapiOverhead/MlpStep/serial
//       C++:   StepExecutor::acquire_inputs → fill x, y in the pinned slot →
//              replay → wait → read the loss output → release
//       C ABI: sg_executor_acquire_inputs → sg_inputs_ptr (x, y), fill →
//              sg_executor_replay → sg_replay_wait → sg_replay_output →
//              sg_replay_release
//       The demo MLP's training step (7 kernels; stepgraph/demo/mlp.h): the
//       C++ side through demo::mlp_step_function, the C side described as
//       data with the demo's kernels registered as C kernels
//       (tests/capi/mlp_step.c), each executor on its own host backend,
//       graph mode, two slots, one step at a time.
// Both run in the same process, interleaved in blocks of kBlock steps (which
// side goes first alternates), so that the noise of a shared machine hits
// both alike (kBlocks blocks each way per repetition). The row's time is the
// C ABI's per-step time; counters: cpp_us
// and capi_us (medians over blocks, per step), overhead = capi_us / cpp_us,
// overhead_mean (the same from mean times).
//
// Run: bm_capi [--benchmark_out=FILE] — without --benchmark_out the JSON goes
// to bm_capi.json in the working directory.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/c/stepgraph.h>
#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>

#include "bench_main.h"
#include "mlp_shim.h"

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBlock = 16;    // steps per timed block
constexpr int kBlocks = 100;  // blocks each way per run (the row's iterations)

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

void check(sg_status s, const char* what) {
  if (s != SG_OK) throw std::runtime_error(std::string(what) + ": " + sg_last_error());
}

// The demo's shape, as both sides see it.
const demo::MlpShape kShape{};
const sgt_mlp_dims kDims{kShape.batch, kShape.inputs, kShape.hidden};

/// One batch, filled into every slot at every step by both sides.
struct Batch {
  std::vector<float> x, y;
  Batch()
      : x(static_cast<std::size_t>(kShape.batch) * static_cast<std::size_t>(kShape.inputs)),
        y(static_cast<std::size_t>(kShape.batch)) {
    demo::mlp_make_batch(kShape, 1, 0, x, y);
  }
};

rt::ExecutorOptions cpp_options() {
  rt::ExecutorOptions o;
  o.backend_instance = rt::Backend::create(rt::BackendKind::kHost);
  o.max_in_flight = 2;
  o.initial_scalars.learning_rate = 0.0f;
  return o;
}

/// The C ABI's executor for the demo step, prepared and with both slots'
/// first replays (one-off costs) done.
struct CapiExecutor {
  sg_executor* exec = nullptr;
  CapiExecutor() {
    sg_backend* backend = nullptr;
    sg_step_desc* desc = nullptr;
    check(sg_backend_create("host", 1, &backend), "sg_backend_create");
    check(sgt_mlp_step_desc(&kDims, &desc), "sgt_mlp_step_desc");
    sg_executor_options o;
    check(sg_executor_options_init(&o), "sg_executor_options_init");
    o.max_in_flight = 2;
    check(sg_executor_create(backend, desc, &o, &exec), "sg_executor_create");
    check(sg_step_desc_release(desc), "sg_step_desc_release");
    check(sg_backend_release(backend), "sg_backend_release");
    check(sg_executor_set_learning_rate(exec, 0.0f), "sg_executor_set_learning_rate");
    const auto init = demo::mlp_init_params(kShape, 1);
    check(sg_executor_write_state(exec, "params", init.data(), init.size() * sizeof(float)), "write_state");
    check(sg_executor_prepare(exec), "sg_executor_prepare");
  }
  CapiExecutor(const CapiExecutor&) = delete;
  CapiExecutor& operator=(const CapiExecutor&) = delete;
  ~CapiExecutor() { (void)sg_executor_release(exec); }
};

float capi_step(sg_executor* exec, const Batch& batch) {
  sg_inputs* in = nullptr;
  sg_replay* r = nullptr;
  void* x = nullptr;
  void* y = nullptr;
  const void* loss = nullptr;
  check(sg_executor_acquire_inputs(exec, &in), "sg_executor_acquire_inputs");
  check(sg_inputs_ptr(in, "x", &x, nullptr), "sg_inputs_ptr");
  check(sg_inputs_ptr(in, "y", &y, nullptr), "sg_inputs_ptr");
  std::memcpy(x, batch.x.data(), batch.x.size() * sizeof(float));
  std::memcpy(y, batch.y.data(), batch.y.size() * sizeof(float));
  check(sg_executor_replay(exec, in, &r), "sg_executor_replay");
  check(sg_replay_wait(r, -1, nullptr), "sg_replay_wait");
  check(sg_replay_output(r, "loss", &loss, nullptr), "sg_replay_output");
  float value = 0;
  std::memcpy(&value, loss, sizeof value);
  check(sg_replay_release(r), "sg_replay_release");
  return value;
}

float cpp_step(rt::StepExecutor& ex, const Batch& batch) {
  auto slot = ex.acquire_inputs();
  std::ranges::copy(batch.x, slot.input_span<float>("x").begin());
  std::ranges::copy(batch.y, slot.input_span<float>("y").begin());
  auto h = ex.replay(std::move(slot));
  h.wait();
  if (h.status() != rt::ReplayStatus::kDone) throw std::runtime_error("bm_capi: a C++ replay failed");
  const float value = h.output("loss").host_span<float>()[0];
  h.release();
  return value;
}

void capi_overhead(benchmark::State& state) {
  const Batch batch;
  rt::StepExecutor cpp(demo::mlp_step_spec(kShape), demo::mlp_step_function(kShape), cpp_options());
  const auto init = demo::mlp_init_params(kShape, 1);
  cpp.write_state("params", init.data(), init.size() * sizeof(float));
  cpp.prepare();
  CapiExecutor c;
  // The first replay of each slot (upload) is a one-off cost; with learning
  // rate 0 both sides compute the same loss at every step: checked.
  for (int i = 0; i < 2; ++i)
    if (cpp_step(cpp, batch) != capi_step(c.exec, batch)) {
      state.SkipWithError("the C ABI's loss differs from the C++ executor's");
      return;
    }

  std::vector<double> cpp_us, capi_us;
  double cpp_total = 0, capi_total = 0;
  bool cpp_first = true;
  auto block = [&](auto&& one) {
    const auto t0 = Clock::now();
    for (int i = 0; i < kBlock; ++i) benchmark::DoNotOptimize(one());
    return seconds_since(t0);
  };
  for (auto _ : state) {
    double tc = 0, tx = 0;
    if (cpp_first) {
      tc = block([&] { return cpp_step(cpp, batch); });
      tx = block([&] { return capi_step(c.exec, batch); });
    } else {
      tx = block([&] { return capi_step(c.exec, batch); });
      tc = block([&] { return cpp_step(cpp, batch); });
    }
    cpp_first = !cpp_first;
    cpp_us.push_back(1e6 * tc / kBlock);
    capi_us.push_back(1e6 * tx / kBlock);
    cpp_total += tc;
    capi_total += tx;
    state.SetIterationTime(tx / kBlock);
  }
  const double mc = median_of(cpp_us), mx = median_of(capi_us);
  state.counters["cpp_us"] = mc;
  state.counters["capi_us"] = mx;
  state.counters["overhead"] = mc > 0 ? mx / mc : 0;
  state.counters["overhead_mean"] = cpp_total > 0 ? capi_total / cpp_total : 0;
}

void register_all() {
  benchmark::RegisterBenchmark("BM_Host_CapiOverhead/MlpStep/serial", capi_overhead)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->Iterations(kBlocks);
}

}  // namespace

int main(int argc, char** argv) {
  if (sgt_mlp_register_kernels(&kDims) != SG_OK) {
    std::fprintf(stderr, "bm_capi: %s\n", sg_last_error());
    return 1;
  }
  benchmark::AddCustomContext("block_steps", std::to_string(kBlock));
  benchmark::AddCustomContext("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
  return sgbench::run_with_json_default(argc, argv, "bm_capi.json", register_all);
}
