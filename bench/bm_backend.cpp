// bm_backend: graph replay against stream launch, for chains of N kernels.
//
// For N in {1, 10, 100, 1000} and each backend present:
//   BM_<B>_StreamLaunch/N  N enqueues + synchronize
//   BM_<B>_GraphReplay/N   one launch of the captured chain + synchronize
//   BM_Host_SerialLoop/N   the same callables called in a plain loop (baseline)
// Counters: submit_cpu_us = the submitting thread's CPU time spent enqueueing
// (N launches, or one graph launch), per iteration; on cuda, gpu_us = the
// GPU time between two events around the work. One-off costs (capture,
// instantiate, first replay) are reported by BM_<B>_CaptureInstantiate/N.
//
// Run: bm_backend --benchmark_out=bm_backend.json --benchmark_out_format=json
// then scripts/bench_report.py bm_backend.json prints the ratios.
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <stepgraph/runtime/backend.h>

namespace rt = stepgraph::runtime;

// ~1 µs of host work, calibrated at start-up: a dependent multiply-add chain
// the compiler cannot fold.
namespace {
std::int64_t g_spin_iters = 300;

void spin_host(float* acc, std::int64_t iters) {
  float x = *acc;
  for (std::int64_t i = 0; i < iters; ++i) x = x * 0.999999f + 1e-7f;
  *acc = x;
}

double thread_cpu_us();

// Calibrated on the thread's CPU time, not wall time, so that a loaded
// machine does not shrink the kernels.
void calibrate() {
  float acc = 1.0f;
  std::int64_t iters = 1000;
  for (;;) {
    const double t0 = thread_cpu_us();
    for (int r = 0; r < 1000; ++r) spin_host(&acc, iters);
    const double per_call_ns = (thread_cpu_us() - t0) * 1000.0 / 1000.0;
    if (per_call_ns > 200.0) {
      g_spin_iters = static_cast<std::int64_t>(static_cast<double>(iters) * 1000.0 / per_call_ns);
      break;
    }
    iters *= 4;
  }
  benchmark::DoNotOptimize(acc);
}

double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}
}  // namespace

#ifdef STEPGRAPH_BENCH_DEVICE_KERNELS
const void* bm_spin_device();  // bm_backend_kernels.cu
#else
const void* bm_spin_device() {
  return nullptr;
}
#endif

namespace {

rt::Kernel<float*, std::int64_t> spin_kernel() {
  return {"spin", spin_host, bm_spin_device()};
}

struct Fixture {
  std::shared_ptr<rt::Backend> backend;
  rt::Stream stream;
  rt::Buffer acc;
  rt::Event start, stop;

  explicit Fixture(rt::BackendKind kind) {
    backend = rt::Backend::create(kind);
    stream = backend->create_stream(0);
    acc = backend->allocate(0, sizeof(float));
    stream.memset(acc.slice(), 0);
    start = backend->create_event(0);
    stop = backend->create_event(0);
    stream.synchronize();
  }
  void enqueue(std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i)
      rt::launch(stream, spin_kernel(), {.accesses = {rt::read_write(acc)}}, acc.data<float>(), g_spin_iters);
  }
  rt::GraphExec capture(std::int64_t n) {
    stream.begin_capture();
    enqueue(n);
    auto exec = stream.end_capture().instantiate();
    return exec;
  }
};

bool available(rt::BackendKind kind, benchmark::State& state) {
  if (kind == rt::BackendKind::kCuda && !rt::Backend::cuda_available()) {
    state.SkipWithError("no CUDA device");
    return false;
  }
  if (kind == rt::BackendKind::kCuda && bm_spin_device() == nullptr) {
    state.SkipWithError("built without device kernels");
    return false;
  }
  return true;
}

/// The steady-state loop both sides share: `submit` enqueues one step's work
/// (N launches, or one graph launch); its CPU time on this thread and the
/// event-timed span of the work are reported per iteration.
template <class Submit>
void timed_steps(benchmark::State& state, Fixture& f, Submit submit) {
  double submit_us = 0, gpu_us = 0;
  for (auto _ : state) {
    f.stream.record(f.start);
    const double c0 = thread_cpu_us();
    submit();
    submit_us += thread_cpu_us() - c0;
    f.stream.record(f.stop);
    f.stream.synchronize();
    gpu_us += 1000.0 * rt::Event::elapsed_ms(f.start, f.stop);
  }
  state.counters["submit_cpu_us"] = benchmark::Counter(submit_us, benchmark::Counter::kAvgIterations);
  state.counters["gpu_us"] = benchmark::Counter(gpu_us, benchmark::Counter::kAvgIterations);
  state.counters["kernels"] = static_cast<double>(state.range(0));
}

void stream_launch(benchmark::State& state, rt::BackendKind kind) {
  if (!available(kind, state)) return;
  Fixture f(kind);
  const auto n = state.range(0);
  timed_steps(state, f, [&] { f.enqueue(n); });
}

void graph_replay(benchmark::State& state, rt::BackendKind kind) {
  if (!available(kind, state)) return;
  Fixture f(kind);
  auto exec = f.capture(state.range(0));
  exec.launch(f.stream);  // first replay (uploads) is a one-off cost
  f.stream.synchronize();
  timed_steps(state, f, [&] { exec.launch(f.stream); });
}

void capture_instantiate(benchmark::State& state, rt::BackendKind kind) {
  if (!available(kind, state)) return;
  Fixture f(kind);
  const auto n = state.range(0);
  double capture_us = 0, instantiate_us = 0, first_us = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    f.stream.begin_capture();
    f.enqueue(n);
    auto g = f.stream.end_capture();
    auto t1 = std::chrono::steady_clock::now();
    auto exec = g.instantiate();
    auto t2 = std::chrono::steady_clock::now();
    exec.launch(f.stream);
    f.stream.synchronize();
    auto t3 = std::chrono::steady_clock::now();
    capture_us += std::chrono::duration<double, std::micro>(t1 - t0).count();
    instantiate_us += std::chrono::duration<double, std::micro>(t2 - t1).count();
    first_us += std::chrono::duration<double, std::micro>(t3 - t2).count();
  }
  state.counters["capture_us"] = benchmark::Counter(capture_us, benchmark::Counter::kAvgIterations);
  state.counters["instantiate_us"] = benchmark::Counter(instantiate_us, benchmark::Counter::kAvgIterations);
  state.counters["first_replay_us"] = benchmark::Counter(first_us, benchmark::Counter::kAvgIterations);
}

// The baseline: the same callables in a plain loop on this thread.
void BM_Host_SerialLoop(benchmark::State& state) {
  const auto n = state.range(0);
  float acc = 0.0f;
  for (auto _ : state) {
    for (std::int64_t i = 0; i < n; ++i) spin_host(&acc, g_spin_iters);
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(acc);
  state.counters["kernels"] = static_cast<double>(n);
}

void BM_Host_StreamLaunch(benchmark::State& s) {
  stream_launch(s, rt::BackendKind::kHost);
}
void BM_Host_GraphReplay(benchmark::State& s) {
  graph_replay(s, rt::BackendKind::kHost);
}
void BM_Host_CaptureInstantiate(benchmark::State& s) {
  capture_instantiate(s, rt::BackendKind::kHost);
}
void BM_Cuda_StreamLaunch(benchmark::State& s) {
  stream_launch(s, rt::BackendKind::kCuda);
}
void BM_Cuda_GraphReplay(benchmark::State& s) {
  graph_replay(s, rt::BackendKind::kCuda);
}
void BM_Cuda_CaptureInstantiate(benchmark::State& s) {
  capture_instantiate(s, rt::BackendKind::kCuda);
}

#define SG_CHAINS RangeMultiplier(10)->Range(1, 1000)->Unit(benchmark::kMicrosecond)
BENCHMARK(BM_Host_SerialLoop)->SG_CHAINS->UseRealTime();
BENCHMARK(BM_Host_StreamLaunch)->SG_CHAINS->UseRealTime();
BENCHMARK(BM_Host_GraphReplay)->SG_CHAINS->UseRealTime();
BENCHMARK(BM_Host_CaptureInstantiate)->SG_CHAINS->UseRealTime()->Iterations(20);
BENCHMARK(BM_Cuda_StreamLaunch)->SG_CHAINS->UseRealTime();
BENCHMARK(BM_Cuda_GraphReplay)->SG_CHAINS->UseRealTime();
BENCHMARK(BM_Cuda_CaptureInstantiate)->SG_CHAINS->UseRealTime()->Iterations(20);

}  // namespace

int main(int argc, char** argv) {
  calibrate();
  benchmark::AddCustomContext("spin_iters_per_kernel", std::to_string(g_spin_iters));
  benchmark::AddCustomContext("cuda", rt::Backend::cuda_available() ? "available" : "not available");
  if (rt::Backend::cuda_available()) {
    auto cuda = rt::Backend::create(rt::BackendKind::kCuda);
    benchmark::AddCustomContext("cuda_device", cuda->device(0).name);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
