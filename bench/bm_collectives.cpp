// bm_collectives: AllReduce bus bandwidth against a memcpy baseline measured
// in the same run (issue 15, DESIGN.md section 6).
//
//   BM_Collectives_AllReduce/<ranks>/<bytes>
//       in-process communicators on <ranks> host devices (host backend,
//       workers unbound), float32 sum of <bytes> bytes per rank, in place:
//       every rank's call enqueued on its communication stream, then every
//       stream synchronised.
//   BM_Collectives_MemcpyBaseline/<ranks>/<bytes>
//       the same bytes moved with plain memcpy by <ranks> persistent threads:
//       in the in-process algorithm each rank's thread reads <ranks> slices of
//       S/<ranks> and writes <ranks> slices of S/<ranks>, i.e. reads S and
//       writes S (Note [In-process collectives]), so each baseline thread
//       memcpy's S bytes from one buffer of its own to another.
//   BM_Collectives_NcclAllReduce/<ranks>/<bytes>
//       NCCL on <ranks> GPUs, one thread per rank, GPU time from CUDA events
//       (manual timing: the slowest rank's); skipped without enough GPUs.
// Counters (both in GB/s = 1e9 B/s, nccl-tests' definitions): algbw = S / t,
// busbw = algbw * 2(n-1)/n. The baseline's busbw uses the same formula, so
// busbw(allreduce) / busbw(baseline) = t(baseline) / t(allreduce): the
// fraction of plain memory bandwidth the AllReduce reaches.
//
// Run: bm_collectives [--benchmark_min_time=0.2s]; JSON goes to
// bm_collectives.json unless --benchmark_out is given.
#include <benchmark/benchmark.h>

#include <barrier>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/demo/data_parallel.h>
#include <stepgraph/runtime/backend.h>
#if STEPGRAPH_HAVE_NCCL
#include <stepgraph/collectives/nccl.h>
#endif

#include "bench_main.h"

namespace rt = stepgraph::runtime;
namespace sc = stepgraph::collectives;

namespace {

/// A host backend of `ranks` devices and its in-process group, made once per
/// rank count (making them is not what is measured).
struct HostGroup {
  std::shared_ptr<rt::Backend> backend;
  std::vector<std::shared_ptr<sc::Communicator>> comms;
};
HostGroup& host_group(int ranks) {
  static std::map<int, HostGroup> groups;
  auto it = groups.find(ranks);
  if (it != groups.end()) return it->second;
  rt::BackendOptions o;
  o.host_devices = ranks;
  o.bind_workers = false;
  HostGroup g;
  g.backend = rt::Backend::create(rt::BackendKind::kHost, o);
  std::vector<int> devices;
  for (int d = 0; d < ranks; ++d) devices.push_back(d);
  g.comms = sc::make_in_process_group(g.backend, devices);
  return groups.emplace(ranks, std::move(g)).first->second;
}

void BM_Collectives_AllReduce(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const auto bytes = static_cast<std::size_t>(state.range(1));
  HostGroup& g = host_group(ranks);
  std::vector<rt::Buffer> bufs;
  for (int r = 0; r < ranks; ++r) {
    bufs.push_back(g.backend->allocate(r, bytes));
    g.comms[static_cast<std::size_t>(r)]->stream().memset(bufs.back().slice(), 0);  // zeros: no denormals
  }
  for (auto& c : g.comms) c->stream().synchronize();
  const std::size_t count = bytes / sizeof(float);
  for (auto _ : state) {
    for (int r = 0; r < ranks; ++r) {
      auto& c = *g.comms[static_cast<std::size_t>(r)];
      c.all_reduce(c.stream(), bufs[static_cast<std::size_t>(r)], 0, count, rt::DType::kFloat32, rt::ReduceOp::kSum);
    }
    for (auto& c : g.comms) c->stream().synchronize();
  }
  for (auto& c : g.comms) c->check();
  sgbench::set_allreduce_bandwidth(state, ranks, bytes);
}

/// `n` persistent threads that each run `work(rank)` once per round; the
/// caller's thread starts a round and waits for its end.
class ThreadTeam {
 public:
  ThreadTeam(int n, std::function<void(int)> work) : work_(std::move(work)), start_(n + 1), done_(n + 1) {
    for (int r = 0; r < n; ++r)
      threads_.emplace_back([this, r] {
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          work_(r);
          done_.arrive_and_wait();
        }
      });
  }
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;
  ~ThreadTeam() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& t : threads_) t.join();
  }
  void round() {
    start_.arrive_and_wait();
    done_.arrive_and_wait();
  }

 private:
  std::function<void(int)> work_;
  std::barrier<> start_, done_;
  bool stop_ = false;  // written before the start barrier the threads pass
  std::vector<std::thread> threads_;
};

void BM_Collectives_MemcpyBaseline(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const auto bytes = static_cast<std::size_t>(state.range(1));
  std::vector<std::vector<std::byte>> src(static_cast<std::size_t>(ranks)), dst(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    src[static_cast<std::size_t>(r)].assign(bytes, std::byte{1});
    dst[static_cast<std::size_t>(r)].assign(bytes, std::byte{0});
  }
  ThreadTeam team(ranks, [&](int r) {
    std::memcpy(dst[static_cast<std::size_t>(r)].data(), src[static_cast<std::size_t>(r)].data(), bytes);
    benchmark::ClobberMemory();
  });
  for (auto _ : state) team.round();
  sgbench::set_allreduce_bandwidth(state, ranks, bytes);
}

void BM_Collectives_NcclAllReduce(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const auto bytes = static_cast<std::size_t>(state.range(1));
#if STEPGRAPH_HAVE_NCCL
  std::string reason;
  if (!sc::nccl_available(&reason)) {
    state.SkipWithError(("NCCL unusable: " + reason).c_str());
    return;
  }
  auto backend = rt::Backend::create(rt::BackendKind::kCuda);
  if (backend->device_count() < ranks) {
    state.SkipWithError(("needs " + std::to_string(ranks) + " GPUs (one GPU cannot host two NCCL ranks); found " +
                         std::to_string(backend->device_count()))
                            .c_str());
    return;
  }
  std::vector<int> devices;
  for (int d = 0; d < ranks; ++d) devices.push_back(d);
  auto comms = sc::make_nccl_group(backend, devices);
  std::vector<rt::Buffer> bufs;
  std::vector<rt::Event> start, stop;
  for (int r = 0; r < ranks; ++r) {
    bufs.push_back(backend->allocate(r, bytes));
    comms[static_cast<std::size_t>(r)]->stream().memset(bufs.back().slice(), 0);
    start.push_back(backend->create_event(r));
    stop.push_back(backend->create_event(r));
  }
  const std::size_t count = bytes / sizeof(float);
  std::vector<double> ms(static_cast<std::size_t>(ranks));
  {
    // One thread per rank: NCCL needs group calls when one thread drives
    // several devices, and these calls are not grouped.
    ThreadTeam team(ranks, [&](int r) {
      const auto i = static_cast<std::size_t>(r);
      auto& c = *comms[i];
      c.stream().record(start[i]);
      c.all_reduce(c.stream(), bufs[i], 0, count, rt::DType::kFloat32, rt::ReduceOp::kSum);
      c.stream().record(stop[i]);
      stop[i].synchronize();
      ms[i] = rt::Event::elapsed_ms(start[i], stop[i]);
    });
    team.round();  // warm-up: NCCL connects at the first collective
    for (auto _ : state) {
      team.round();
      double worst = 0;
      for (double m : ms) worst = std::max(worst, m);
      state.SetIterationTime(worst / 1e3);
    }
  }
  for (auto& c : comms) c->check();
  sgbench::set_allreduce_bandwidth(state, ranks, bytes);
#else
  (void)ranks;
  (void)bytes;
  state.SkipWithError("built without NCCL");
#endif
}

// 8 B ... 64 MiB: powers of 4 up to 32 MiB, then 64 MiB (the target size).
std::vector<std::int64_t> sizes() {
  std::vector<std::int64_t> v;
  for (std::int64_t b = 8; b <= (32 << 20); b *= 4) v.push_back(b);
  v.push_back(64 << 20);
  return v;
}

/// The data-parallel demo step on <devices> host devices: bucketed AllReduce
/// overlapped with backward (bucketed:1) against one AllReduce of every
/// gradient after backward (bucketed:0, the baseline), same model and data.
/// The time is the median replayed step of a 40-step run (the warm-ups and
/// the capture step excluded), all replicas, as `stepgraph demo` measures.
void BM_Collectives_DataParallelStep(benchmark::State& state) {
  stepgraph::demo::DataParallelDemoOptions o;
  o.base.backend = "host";
  o.base.steps = 40;
  o.base.shape.batch = 256;
  o.base.shape.inputs = 64;
  o.base.shape.hidden = 512;
  o.devices = static_cast<int>(state.range(1));
  o.bucketed = state.range(0) != 0;
  for (auto _ : state) {
    const auto run = stepgraph::demo::train_mlp_data_parallel(o, rt::ExecutionMode::kGraph);
    const auto first = static_cast<std::size_t>(o.base.warmup) + 1;
    const double us = stepgraph::demo::median(std::span(run.step_us).subspan(first));
    state.SetIterationTime(us * 1e-6);
    state.counters["buckets"] = static_cast<double>(run.buckets);
  }
}

void register_all() {
  const auto s = sizes();
  benchmark::RegisterBenchmark("BM_Collectives_AllReduce", BM_Collectives_AllReduce)
      ->ArgsProduct({{2, 4}, s})
      ->ArgNames({"ranks", "bytes"})
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_Collectives_MemcpyBaseline", BM_Collectives_MemcpyBaseline)
      ->ArgsProduct({{2, 4}, s})
      ->ArgNames({"ranks", "bytes"})
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_Collectives_NcclAllReduce", BM_Collectives_NcclAllReduce)
      ->ArgsProduct({{2, 4, 8}, s})
      ->ArgNames({"ranks", "bytes"})
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_Collectives_DataParallelStep", BM_Collectives_DataParallelStep)
      ->ArgsProduct({{0, 1}, {2, 4}})
      ->ArgNames({"bucketed", "devices"})
      ->UseManualTime()
      ->Iterations(3);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
  {
    rt::BackendOptions o;
    o.bind_workers = false;
    auto host = rt::Backend::create(rt::BackendKind::kHost, o);
    benchmark::AddCustomContext("host_device",
                                host->device(0).name + ", " + std::to_string(host->device(0).workers) + " worker(s)");
  }
  std::string reason;
  const bool cuda = rt::Backend::cuda_available(&reason);
  benchmark::AddCustomContext("cuda", cuda ? "available" : "not available: " + reason);
  if (cuda) {
    auto backend = rt::Backend::create(rt::BackendKind::kCuda);
    benchmark::AddCustomContext("cuda_device", backend->device(0).name);
    benchmark::AddCustomContext("cuda_devices", std::to_string(backend->device_count()));
  }
#if STEPGRAPH_HAVE_NCCL
  benchmark::AddCustomContext("nccl", sc::nccl_version());
#else
  benchmark::AddCustomContext("nccl", "not built");
#endif
  return sgbench::run_with_json_default(argc, argv, "bm_collectives.json", register_all);
}
