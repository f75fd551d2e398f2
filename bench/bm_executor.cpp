// bm_executor: what the StepExecutor costs on top of a raw graph launch,
// and what replay buys the demo over eager execution.
//
// For each backend present and two steps — the demo MLP's training step
// (7 kernels, stepgraph/demo/mlp.h) and a heavier chain of 200 ~1 µs kernels:
//   BM_<B>_ExecutorOverhead/<Step>/serial
//       executor: acquire_inputs → replay → wait → release, one step at a time
//       baseline: GraphExec::launch + Stream::synchronize of the same step,
//                 captured on a plain stream over buffers of the same sizes
//   BM_<B>_ExecutorOverhead/<Step>/pipelined
//       executor: two replays in flight (max_in_flight = 2): wait for and
//                 release the older, then start the next
//       baseline: two executables of the step launched alternately on one
//                 stream, waiting on the event of the launch two back
// Both sides run in the same process on one shared backend, interleaved in
// blocks of kBlock steps (which side goes first alternates), so that the
// noise of a shared machine hits both alike. Each row's time is the
// executor's per-step time; counters: raw_us and executor_us (medians over
// blocks, per step), overhead = executor_us / raw_us (the target
// is <= 1.05), overhead_mean (the same from mean times), and raw_cpu_us /
// executor_cpu_us (CPU time of the whole process per step, all threads).
//   BM_<B>_ExecutorPrepare/<Step>   one-off: executor construction, warm-up,
//       capture, instantiate (prepare()), against raw capture + instantiate
//   BM_<B>_DemoEagerVsReplay        the demo (200 steps, 3 warm-ups): median
//       eager and replayed step time, speedup, max |param diff| (must be 0)
//   BM_<B>_MetricsOverhead/<Step>   two executors of the step on one backend,
//       one with metrics on (a registry: Note [Executor metrics]) and one
//       with them off, serial replays interleaved in blocks as above;
//       counters off_us, on_us (medians per step) and ratio = on_us / off_us
//       (issue 18's target: <= 1.02)
//
// Run: bm_executor [--benchmark_out=FILE] — without --benchmark_out the JSON
// goes to bm_executor.json in the working directory.
#include <benchmark/benchmark.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>

#include "bench_main.h"

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kChainLength = 200;
constexpr int kBlock = 8;  // steps per timed block

// ~1 µs of host work, calibrated at start-up (as in bm_backend): a dependent
// multiply-add chain the compiler cannot fold. Calibrated on the thread's
// CPU time, not wall time, so that a loaded machine (other processes
// preempting this one) does not shrink the kernels.
std::int64_t g_spin_iters = 300;

void spin_host(float* acc, std::int64_t iters) {
  float x = *acc;
  for (std::int64_t i = 0; i < iters; ++i) x = x * 0.999999f + 1e-7f;
  *acc = x;
}

double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

void calibrate() {
  float acc = 1.0f;
  std::int64_t iters = 1000;
  for (;;) {
    const double c0 = thread_cpu_ns();
    for (int r = 0; r < 1000; ++r) spin_host(&acc, iters);
    const double per_call_ns = (thread_cpu_ns() - c0) / 1000.0;
    if (per_call_ns > 200.0) {
      g_spin_iters = static_cast<std::int64_t>(static_cast<double>(iters) * 1000.0 / per_call_ns);
      break;
    }
    iters *= 4;
  }
  benchmark::DoNotOptimize(acc);
}

}  // namespace

#ifdef STEPGRAPH_BENCH_DEVICE_KERNELS
const void* bm_executor_spin_device();  // bm_executor_kernels.cu
#else
const void* bm_executor_spin_device() {
  return nullptr;
}
#endif

namespace {

rt::Kernel<float*, std::int64_t> spin_kernel() {
  return {"spin", spin_host, bm_executor_spin_device()};
}

enum class StepKind { kMlp, kChain };
enum class Pipelining { kSerial, kTwoInFlight };

const char* step_name(StepKind k) {
  return k == StepKind::kMlp ? "Mlp" : "Chain200";
}

/// CPU time of the whole process (every thread: caller, executor thread,
/// host workers), to tell waiting from extra work.
double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// The benchmarks train with a learning rate of 0: every step computes the
// same numbers, so the cost per step cannot drift (no denormals as the
// model converges) over the many iterations a benchmark runs.
demo::MlpShape mlp_shape() {
  return demo::MlpShape{};
}

void enqueue_chain(rt::StreamRef stream, const rt::Buffer& acc) {
  for (int i = 0; i < kChainLength; ++i)
    rt::launch(stream, spin_kernel(), {.accesses = {rt::read_write(acc)}}, acc.data<float>(), g_spin_iters);
}

/// The step captured on a plain stream over buffers of its own: the
/// baseline. Two executables (as the executor has two slots).
struct RawStep {
  std::shared_ptr<rt::Backend> backend;
  rt::Stream stream;
  std::vector<rt::Buffer> buffers;
  rt::GraphExec exec[2];
  rt::Event done[2];
  double capture_instantiate_us = 0;

  RawStep(std::shared_ptr<rt::Backend> b, StepKind kind) : backend(std::move(b)) {
    stream = backend->create_stream(0);
    done[0] = backend->create_event(0);
    done[1] = backend->create_event(0);
    std::function<void()> enqueue;
    if (kind == StepKind::kMlp) {
      const auto s = mlp_shape();
      const std::size_t f = sizeof(float), batch = static_cast<std::size_t>(s.batch);
      const std::size_t bh = batch * static_cast<std::size_t>(s.hidden), np = s.param_count();
      auto pinned = [&](std::size_t bytes) {
        buffers.push_back(backend->allocate_pinned(bytes));
        std::memset(buffers.back().host_data(), 0, bytes);
        return buffers.size() - 1;
      };
      auto device = [&](std::size_t bytes) {
        buffers.push_back(backend->allocate(0, bytes));
        return buffers.size() - 1;
      };
      const auto x = pinned(batch * static_cast<std::size_t>(s.inputs) * f), y = pinned(batch * f);
      const auto loss = pinned(f), scalars = pinned(sizeof(rt::StepScalars));
      const auto staging = pinned(np * f);
      const auto params = device(np * f), grads = device(np * f), act = device(bh * f), dact = device(bh * f);
      const auto out = device(batch * f), dout = device(batch * f);
      demo::mlp_make_batch(s, 1, 0, buffers[x].host_span<float>(), buffers[y].host_span<float>());
      *buffers[scalars].host_span<rt::StepScalars>().data() = rt::StepScalars{};  // learning rate 0
      const auto init = demo::mlp_init_params(s, 1);
      std::memcpy(buffers[staging].host_data(), init.data(), np * f);
      stream.copy(buffers[params].slice(), buffers[staging].slice());
      stream.synchronize();
      enqueue = [this, s, x, y, loss, scalars, params, grads, act, dact, out, dout] {
        demo::MlpStepBuffers mb{&buffers[x],   &buffers[y],    &buffers[loss], &buffers[params], &buffers[grads],
                                &buffers[act], &buffers[dact], &buffers[out],  &buffers[dout],   &buffers[scalars]};
        demo::enqueue_mlp_step(stream, s, mb);
      };
    } else {
      buffers.push_back(backend->allocate(0, sizeof(float)));
      stream.memset(buffers.back().slice(), 0);
      stream.synchronize();
      enqueue = [this] { enqueue_chain(stream, buffers.front()); };
    }
    for (auto& e : exec) {
      const auto t0 = Clock::now();
      stream.begin_capture();
      enqueue();
      e = stream.end_capture().instantiate();
      capture_instantiate_us += 1e6 * seconds_since(t0) / 2;
    }
    // The first launch of each executable (upload) is a one-off cost.
    for (auto& e : exec) e.launch(stream);
    stream.synchronize();
  }
};

std::unique_ptr<rt::StepExecutor> make_executor(const std::shared_ptr<rt::Backend>& backend, StepKind kind,
                                                std::shared_ptr<rt::MetricsRegistry> metrics = nullptr) {
  rt::ExecutorOptions o;
  o.backend_instance = backend;
  o.metrics = std::move(metrics);
  o.max_in_flight = 2;
  o.initial_scalars.learning_rate = 0.0f;
  std::unique_ptr<rt::StepExecutor> ex;
  if (kind == StepKind::kMlp) {
    const auto s = mlp_shape();
    ex = std::make_unique<rt::StepExecutor>(demo::mlp_step_spec(s), demo::mlp_step_function(s), o);
    const auto init = demo::mlp_init_params(s, 1);
    ex->write_state("params", init.data(), init.size() * sizeof(float));
    // Fill both slots' inputs once; replays then reuse them as they are.
    auto a = ex->acquire_inputs();
    auto b = ex->acquire_inputs();
    for (auto* slot : {&a, &b})
      demo::mlp_make_batch(s, 1, 0, slot->input_span<float>("x"), slot->input_span<float>("y"));
  } else {
    rt::StepSpec spec;
    spec.state = {{.name = "acc", .bytes = sizeof(float)}};
    ex = std::make_unique<rt::StepExecutor>(
        std::move(spec), [](rt::StepContext& ctx) { enqueue_chain(ctx.stream(), ctx.state("acc")); }, o);
    const float zero = 0.0f;
    ex->write_state("acc", &zero, sizeof(zero));
  }
  ex->prepare();
  // The first replay of each slot (upload) is a one-off cost.
  auto h0 = ex->replay();
  auto h1 = ex->replay();
  h0.wait();
  h1.wait();
  h0.release();
  h1.release();
  return ex;
}

bool available(rt::BackendKind kind, benchmark::State& state) {
  if (kind == rt::BackendKind::kCuda && !rt::Backend::cuda_available()) {
    state.SkipWithError("no CUDA device");
    return false;
  }
  if (kind == rt::BackendKind::kCuda && bm_executor_spin_device() == nullptr) {
    state.SkipWithError("built without device kernels");
    return false;
  }
  return true;
}

void check_done(const rt::ReplayHandle& h) {
  if (h.status() != rt::ReplayStatus::kDone) {
    const auto e = h.error();
    throw stepgraph::Error("bm_executor: replay of step " + std::to_string(h.step()) + " ended " +
                           std::string(rt::to_string(h.status())) + ": " + (e ? e->message : std::string("?")));
  }
}

void executor_overhead(benchmark::State& state, rt::BackendKind kind, StepKind step, Pipelining pipe) {
  if (!available(kind, state)) return;
  auto backend = rt::Backend::create(kind);
  RawStep raw(backend, step);
  auto ex = make_executor(backend, step);

  // One block of kBlock steps each way; returns seconds.
  std::int64_t raw_launches = 0;
  auto raw_block = [&] {
    const auto t0 = Clock::now();
    if (pipe == Pipelining::kSerial) {
      for (int i = 0; i < kBlock; ++i) {
        raw.exec[0].launch(raw.stream);
        raw.stream.synchronize();
      }
    } else {
      for (int i = 0; i < kBlock; ++i) {
        const auto k = static_cast<std::size_t>(raw_launches++ % 2);
        raw.done[k].synchronize();  // the launch two back (complete if never recorded)
        raw.exec[k].launch(raw.stream);
        raw.stream.record(raw.done[k]);
      }
      raw.stream.synchronize();
    }
    return seconds_since(t0);
  };
  auto executor_block = [&] {
    const auto t0 = Clock::now();
    if (pipe == Pipelining::kSerial) {
      for (int i = 0; i < kBlock; ++i) {
        auto slot = ex->acquire_inputs();
        auto h = ex->replay(std::move(slot));
        h.wait();
        check_done(h);
        h.release();
      }
    } else {
      std::deque<rt::ReplayHandle> in_flight;
      for (int i = 0; i < kBlock; ++i) {
        if (in_flight.size() == 2) {
          in_flight.front().wait();
          check_done(in_flight.front());
          in_flight.front().release();
          in_flight.pop_front();
        }
        in_flight.push_back(ex->replay(ex->acquire_inputs()));
      }
      for (auto& h : in_flight) {
        h.wait();
        check_done(h);
        h.release();
      }
    }
    return seconds_since(t0);
  };

  std::vector<double> raw_s, ex_s;
  double raw_cpu = 0, ex_cpu = 0;
  auto timed = [](auto& block, double& cpu) {
    const double c0 = process_cpu_s();
    const double wall = block();
    cpu += process_cpu_s() - c0;
    return wall;
  };
  bool raw_first = true;
  for (auto _ : state) {
    double r = 0, e = 0;
    if (raw_first) {
      r = timed(raw_block, raw_cpu);
      e = timed(executor_block, ex_cpu);
    } else {
      e = timed(executor_block, ex_cpu);
      r = timed(raw_block, raw_cpu);
    }
    raw_first = !raw_first;
    raw_s.push_back(r / kBlock);
    ex_s.push_back(e / kBlock);
    state.SetIterationTime(e / kBlock);
  }
  const double raw_med = median_of(raw_s), ex_med = median_of(ex_s);
  double raw_sum = 0, ex_sum = 0;
  for (std::size_t i = 0; i < raw_s.size(); ++i) {
    raw_sum += raw_s[i];
    ex_sum += ex_s[i];
  }
  state.counters["raw_us"] = 1e6 * raw_med;
  state.counters["executor_us"] = 1e6 * ex_med;
  state.counters["overhead"] = raw_med > 0 ? ex_med / raw_med : 0;
  state.counters["overhead_mean"] = raw_sum > 0 ? ex_sum / raw_sum : 0;
  const double steps = static_cast<double>(raw_s.size()) * kBlock;
  state.counters["raw_cpu_us"] = steps > 0 ? 1e6 * raw_cpu / steps : 0;
  state.counters["executor_cpu_us"] = steps > 0 ? 1e6 * ex_cpu / steps : 0;
  state.counters["kernels_per_step"] = step == StepKind::kMlp ? 7 : kChainLength;
}

void metrics_overhead(benchmark::State& state, rt::BackendKind kind, StepKind step) {
  if (!available(kind, state)) return;
  auto backend = rt::Backend::create(kind);
  auto registry = rt::MetricsRegistry::create();
  auto off = make_executor(backend, step);
  auto on = make_executor(backend, step, registry);
  auto block = [](rt::StepExecutor& ex) {
    const auto t0 = Clock::now();
    for (int i = 0; i < kBlock; ++i) {
      auto h = ex.replay(ex.acquire_inputs());
      h.wait();
      check_done(h);
      h.release();
    }
    return seconds_since(t0);
  };
  std::vector<double> off_s, on_s;
  bool off_first = true;
  for (auto _ : state) {
    double a = 0, b = 0;
    if (off_first) {
      a = block(*off);
      b = block(*on);
    } else {
      b = block(*on);
      a = block(*off);
    }
    off_first = !off_first;
    off_s.push_back(a / kBlock);
    on_s.push_back(b / kBlock);
    state.SetIterationTime(b / kBlock);
  }
  const double off_med = median_of(off_s), on_med = median_of(on_s);
  state.counters["off_us"] = 1e6 * off_med;
  state.counters["on_us"] = 1e6 * on_med;
  state.counters["ratio"] = off_med > 0 ? on_med / off_med : 0;
  // The metrics really were updated: every step of `on` was counted.
  const double counted =
      registry->counter("stepgraph_steps_completed_total", "Steps whose replay handle ended done").value();
  state.counters["steps_counted"] = counted;
  if (counted < static_cast<double>(on_s.size()) * kBlock) state.SkipWithError("the metrics missed steps");
}

void executor_prepare(benchmark::State& state, rt::BackendKind kind, StepKind step) {
  if (!available(kind, state)) return;
  auto backend = rt::Backend::create(kind);
  double raw_us = 0, prepare_us = 0;
  for (auto _ : state) {
    RawStep raw(backend, step);
    raw_us += raw.capture_instantiate_us;
    const auto t0 = Clock::now();
    auto ex = make_executor(backend, step);
    const double s = seconds_since(t0);
    prepare_us += 1e6 * s;
    state.SetIterationTime(s);
  }
  state.counters["raw_capture_instantiate_us"] = benchmark::Counter(raw_us, benchmark::Counter::kAvgIterations);
  state.counters["executor_setup_us"] = benchmark::Counter(prepare_us, benchmark::Counter::kAvgIterations);
}

void demo_eager_vs_replay(benchmark::State& state, rt::BackendKind kind) {
  if (!available(kind, state)) return;
  demo::DemoOptions o;
  o.backend_instance = rt::Backend::create(kind);
  o.steps = 200;
  o.warmup = 3;
  std::vector<double> eager, replay, speedup;
  double worst_diff = 0, capture = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const auto r = demo::run_demo(o);
    state.SetIterationTime(seconds_since(t0));
    eager.push_back(r.eager_median_us);
    replay.push_back(r.replay_median_us);
    speedup.push_back(r.speedup);
    capture += r.capture_step_us;
    worst_diff = std::max(worst_diff, r.max_abs_param_diff);
  }
  state.counters["eager_step_us"] = median_of(eager);
  state.counters["replay_step_us"] = median_of(replay);
  state.counters["speedup"] = median_of(speedup);
  state.counters["capture_step_us"] = benchmark::Counter(capture, benchmark::Counter::kAvgIterations);
  state.counters["max_abs_param_diff"] = worst_diff;
  if (worst_diff != 0) state.SkipWithError("replayed parameters differ from eager ones");
}

void register_all() {
  for (auto kind : {rt::BackendKind::kHost, rt::BackendKind::kCuda}) {
    const std::string b = kind == rt::BackendKind::kHost ? "Host" : "Cuda";
    for (auto step : {StepKind::kMlp, StepKind::kChain}) {
      for (auto pipe : {Pipelining::kSerial, Pipelining::kTwoInFlight}) {
        const std::string name = "BM_" + b + "_ExecutorOverhead/" + step_name(step) + "/" +
                                 (pipe == Pipelining::kSerial ? "serial" : "pipelined");
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { executor_overhead(s, kind, step, pipe); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(1.0);
      }
      const std::string mo = "BM_" + b + "_MetricsOverhead/" + step_name(step);
      benchmark::RegisterBenchmark(mo.c_str(), [=](benchmark::State& s) { metrics_overhead(s, kind, step); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(2.0);
      const std::string prep = "BM_" + b + "_ExecutorPrepare/" + step_name(step);
      benchmark::RegisterBenchmark(prep.c_str(), [=](benchmark::State& s) { executor_prepare(s, kind, step); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(10);
    }
    const std::string d = "BM_" + b + "_DemoEagerVsReplay";
    benchmark::RegisterBenchmark(d.c_str(), [=](benchmark::State& s) { demo_eager_vs_replay(s, kind); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(5);
  }
}

}  // namespace

int main(int argc, char** argv) {
  calibrate();
  benchmark::AddCustomContext("spin_iters_per_kernel", std::to_string(g_spin_iters));
  benchmark::AddCustomContext("block_steps", std::to_string(kBlock));
  benchmark::AddCustomContext("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
  {
    auto host = rt::Backend::create(rt::BackendKind::kHost);
    benchmark::AddCustomContext("host_device",
                                host->device(0).name + ", " + std::to_string(host->device(0).workers) + " worker(s)");
  }
  benchmark::AddCustomContext("cuda", rt::Backend::cuda_available() ? "available" : "not available");
  if (rt::Backend::cuda_available()) {
    auto cuda = rt::Backend::create(rt::BackendKind::kCuda);
    benchmark::AddCustomContext("cuda_device", cuda->device(0).name);
  }
  return sgbench::run_with_json_default(argc, argv, "bm_executor.json", register_all);
}
