// A data-parallel training step of the consumer's own, captured once per
// device on the host backend and replayed: each replay reads its inputs in
// place from pinned memory, computes a gradient, sums it over the two
// devices with an in-process AllReduce inside the graph, updates the
// weights and reports a loss. Every loss and the final weights are checked
// against a serial computation in this file; exit 1 on any difference.
// Integers throughout, so the comparison is exact.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/runtime/backend.h>

namespace {

namespace rt = stepgraph::runtime;
namespace col = stepgraph::collectives;

constexpr int kDevices = 2;
constexpr std::size_t kCount = 257;
constexpr int kSteps = 5;
constexpr std::size_t kBytes = kCount * sizeof(std::int64_t);

std::int64_t input_value(int step, int device, std::size_t i) {
  return static_cast<std::int64_t>((step * 7 + device * 13 + static_cast<int>(i) * 3) % 101) - 50;
}

std::int64_t initial_weight(std::size_t i) {
  return static_cast<std::int64_t>(i % 11);
}

// g[i] = x[i] - w[i]
void gradient_host(std::int64_t* g, const std::int64_t* x, const std::int64_t* w, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) g[i] = x[i] - w[i];
}
// w[i] += g[i] / 4
void update_host(std::int64_t* w, const std::int64_t* g, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) w[i] += g[i] / 4;
}
// *loss = sum of g[i]^2
void loss_host(std::int64_t* loss, const std::int64_t* g, std::size_t n) {
  std::int64_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += g[i] * g[i];
  *loss = s;
}

const rt::Kernel<std::int64_t*, const std::int64_t*, const std::int64_t*, std::size_t> kGradient{
    "gradient", gradient_host, nullptr};
const rt::Kernel<std::int64_t*, const std::int64_t*, std::size_t> kUpdate{"update", update_host, nullptr};
const rt::Kernel<std::int64_t*, const std::int64_t*, std::size_t> kLoss{"loss", loss_host, nullptr};

struct Replica {
  rt::Stream stream;
  rt::Buffer input;  // pinned, read in place by each replay
  rt::Buffer x, w, g, loss;
  rt::Buffer output;  // pinned: the loss, then the final weights
  rt::GraphExec exec;
};

int run() {
  rt::BackendOptions options;
  options.host_devices = kDevices;
  options.workers_per_device = 1;
  options.bind_workers = false;
  auto backend = rt::Backend::create("host", options);
  auto comms = col::make_in_process_group(backend, {0, 1});

  std::vector<Replica> replicas(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    Replica& r = replicas[static_cast<std::size_t>(d)];
    r.stream = backend->create_stream(d);
    r.input = backend->allocate_pinned(kBytes);
    r.output = backend->allocate_pinned(kBytes);
    r.x = backend->allocate(d, kBytes);
    r.w = backend->allocate(d, kBytes);
    r.g = backend->allocate(d, kBytes);
    r.loss = backend->allocate(d, sizeof(std::int64_t));
    auto init = r.output.host_span<std::int64_t>();
    for (std::size_t i = 0; i < kCount; ++i) init[i] = initial_weight(i);
    r.stream.copy(r.w.slice(), r.output.slice());
    r.stream.synchronize();

    // The step, captured (recorded, not run) on this device's stream.
    rt::CaptureSession capture(r.stream);
    r.stream.copy(r.x.slice(), r.input.slice(), "load input");
    rt::launch(r.stream, kGradient,
               {"gradient", rt::LaunchDims::linear(kCount), {rt::write(r.g), rt::read(r.x), rt::read(r.w)}},
               r.g.data<std::int64_t>(), r.x.data<const std::int64_t>(), r.w.data<const std::int64_t>(), kCount);
    comms[static_cast<std::size_t>(d)]->all_reduce(r.stream, r.g, 0, kCount, rt::DType::kInt64, rt::ReduceOp::kSum,
                                                   "gradient allreduce");
    rt::launch(r.stream, kUpdate, {"update", rt::LaunchDims::linear(kCount), {rt::read_write(r.w), rt::read(r.g)}},
               r.w.data<std::int64_t>(), r.g.data<const std::int64_t>(), kCount);
    rt::launch(r.stream, kLoss, {"loss", rt::LaunchDims::linear(kCount), {rt::write(r.loss), rt::read(r.g)}},
               r.loss.data<std::int64_t>(), r.g.data<const std::int64_t>(), kCount);
    r.stream.copy(r.output.slice(0, sizeof(std::int64_t)), r.loss.slice(), "store loss");
    r.exec = capture.end().instantiate();
  }

  // The same steps, serially.
  std::vector<std::int64_t> w(kCount), g(kCount);
  for (std::size_t i = 0; i < kCount; ++i) w[i] = initial_weight(i);

  int failures = 0;
  for (int step = 0; step < kSteps; ++step) {
    for (int d = 0; d < kDevices; ++d) {
      auto in = replicas[static_cast<std::size_t>(d)].input.host_span<std::int64_t>();
      for (std::size_t i = 0; i < kCount; ++i) in[i] = input_value(step, d, i);
    }
    for (auto& r : replicas) r.exec.launch(r.stream);
    for (auto& r : replicas) r.stream.synchronize();

    std::int64_t loss = 0;
    for (std::size_t i = 0; i < kCount; ++i) {
      g[i] = 0;
      for (int d = 0; d < kDevices; ++d) g[i] += input_value(step, d, i) - w[i];
      w[i] += g[i] / 4;
      loss += g[i] * g[i];
    }
    for (int d = 0; d < kDevices; ++d) {
      const std::int64_t got = replicas[static_cast<std::size_t>(d)].output.host_span<std::int64_t>()[0];
      if (got != loss) {
        std::fprintf(stderr, "step %d device %d: replayed loss %lld, serial %lld\n", step, d,
                     static_cast<long long>(got), static_cast<long long>(loss));
        ++failures;
      }
    }
  }
  for (int d = 0; d < kDevices; ++d) {
    Replica& r = replicas[static_cast<std::size_t>(d)];
    r.stream.copy(r.output.slice(), r.w.slice());
    r.stream.synchronize();
    auto got = r.output.host_span<std::int64_t>();
    for (std::size_t i = 0; i < kCount; ++i) {
      if (got[i] != w[i]) {
        std::fprintf(stderr, "device %d: weight %zu is %lld after replay, %lld serially\n", d, i,
                     static_cast<long long>(got[i]), static_cast<long long>(w[i]));
        ++failures;
        break;
      }
    }
  }
  for (auto& comm : comms) {
    if (auto error = comm->async_error()) {
      std::fprintf(stderr, "communicator error: %s\n", error->c_str());
      ++failures;
    }
  }
  if (failures != 0) return 1;
  std::printf("OK: %d replays of a captured 2-device step match the serial computation (stepgraph via %s)\n", kSteps,
              SG_CONSUMER_HOW);
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
