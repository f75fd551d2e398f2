// The executor's metrics against events the test counts itself (host
// backend): steps by final status, failures by kind, latency and interval
// observations, memory gauges against the MemoryReport, the HTTP endpoint.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/executor.h>

namespace rt = stepgraph::runtime;

namespace {

/// out += 1, unless the step's `fault` input is non-zero: then the kernel
/// throws, which the host backend reports as a device fault of this node.
void add_one_or_fault_host(const std::int32_t* fault, float* out) {
  if (*fault != 0) throw std::runtime_error("injected fault");
  *out += 1.0f;
}
const rt::Kernel<const std::int32_t*, float*> kAddOneOrFault{"add_one_or_fault", add_one_or_fault_host, nullptr};

void scale_host(float* out) {
  *out *= 1.0f;
}
const rt::Kernel<float*> kScale{"scale", scale_host, nullptr};

rt::StepSpec spec() {
  rt::StepSpec s;
  s.inputs = {{.name = "fault", .bytes = sizeof(std::int32_t), .dtype = rt::DType::kInt32}};
  s.state = {{.name = "acc", .bytes = sizeof(float)}};
  return s;
}

void step(rt::StepContext& ctx) {
  const auto& fault = ctx.input("fault");
  const auto& acc = ctx.state("acc");
  rt::launch(ctx.stream(), kAddOneOrFault, {.name = "add", .accesses = {rt::read(fault), rt::read_write(acc)}},
             fault.data<const std::int32_t>(), acc.data<float>());
  rt::launch(ctx.stream(), kScale, {.name = "scale", .accesses = {rt::read_write(acc)}}, acc.data<float>());
}

/// `name{labels} value` lines of a scrape, by series.
std::map<std::string, double> parse(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

rt::ExecutorOptions host_options() {
  rt::ExecutorOptions o;
  o.backend = "host";
  o.warmup = 1;
  o.max_in_flight = 3;
  o.launch_ahead = 1;  // a second replay queues behind the first
  return o;
}

}  // namespace

TEST(ExecutorMetrics, CountersMatchTheStatusesTheTestCounts) {
  auto registry = rt::MetricsRegistry::create();
  auto o = host_options();
  o.metrics = registry;
  rt::StepExecutor ex(spec(), step, o);
  EXPECT_EQ(ex.metrics(), registry);
  EXPECT_EQ(ex.metrics_port(), -1);

  std::map<rt::ReplayStatus, int> seen;
  int launched = 0;
  auto run = [&](std::int32_t fault) {
    auto slot = ex.acquire_inputs();
    slot.input_span<std::int32_t>("fault")[0] = fault;
    auto h = ex.replay(std::move(slot));
    ++launched;
    ++seen[h.wait()];
    h.release();
  };
  constexpr int kGood = 7;  // the first is the eager warm-up
  for (int i = 0; i < kGood; ++i) run(0);
  run(1);
  ASSERT_EQ(ex.state(), rt::ExecutorState::kFailed);
  EXPECT_THROW((void)ex.replay(), stepgraph::InvalidState);  // not a started step
  ex.synchronize();  // handles complete before their replays leave the in-flight list

  const auto m = parse(registry->render());
  EXPECT_EQ(m.at("stepgraph_steps_started_total"), launched);
  EXPECT_EQ(m.at("stepgraph_steps_completed_total"), seen[rt::ReplayStatus::kDone]);
  EXPECT_EQ(seen[rt::ReplayStatus::kDone], kGood);
  EXPECT_EQ(m.at("stepgraph_steps_failed_total{kind=\"device_fault\"}"), seen[rt::ReplayStatus::kFailed]);
  EXPECT_EQ(seen[rt::ReplayStatus::kFailed], 1);
  EXPECT_EQ(m.at("stepgraph_steps_failed_total{kind=\"device_fault\"}"), 1);
  EXPECT_EQ(m.at("stepgraph_steps_failed_total{kind=\"timeout\"}"), 0);
  EXPECT_EQ(m.at("stepgraph_steps_failed_total{kind=\"collective\"}"), 0);
  EXPECT_EQ(m.count("stepgraph_steps_failed_total{kind=\"cancelled\"}"), 0u);  // cancelled steps count apart
  EXPECT_EQ(m.at("stepgraph_steps_cancelled_total"), seen[rt::ReplayStatus::kCancelled]);
  // Every completed step observed its latency once; the interval once per
  // launch after the first.
  EXPECT_EQ(m.at("stepgraph_replay_latency_seconds_count"), kGood);
  EXPECT_EQ(m.at("stepgraph_replay_interval_seconds_count"), launched - 1);
  EXPECT_EQ(m.at("stepgraph_replays_queued"), 0);
  EXPECT_EQ(m.at("stepgraph_replays_in_flight"), 0);
  const auto mem = ex.memory_report();
  EXPECT_EQ(m.at("stepgraph_arena_bytes"), static_cast<double>(mem.arena_bytes));
  EXPECT_EQ(m.at("stepgraph_pinned_bytes"), static_cast<double>(mem.pinned_bytes));
  EXPECT_EQ(m.at("stepgraph_state_bytes"), static_cast<double>(sizeof(float)));
  EXPECT_EQ(m.count("stepgraph_device_memory_used_bytes{device=\"0\"}"), 0u);  // host: no device memory to report
  ex.close();
  // Closed: its share of the memory gauges is gone, the counters stay.
  const auto after = parse(registry->render());
  EXPECT_EQ(after.at("stepgraph_arena_bytes"), 0);
  EXPECT_EQ(after.at("stepgraph_steps_completed_total"), kGood);
}

TEST(ExecutorMetrics, QueueDepthAndCancellationsFollowTheQueue) {
  auto registry = rt::MetricsRegistry::create();
  auto o = host_options();
  o.metrics = registry;
  o.warmup = 0;
  rt::StepExecutor ex(spec(), step, o);
  ex.prepare();
  auto& queued = registry->gauge("stepgraph_replays_queued", "Replays asked for and waiting beyond launch_ahead");
  // A completion callback that blocks holds the executor's thread, so that
  // what the test queues stays queued until it lets go.
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  auto first = ex.replay();
  first.on_complete([&](const rt::ReplayHandle&) {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return go; });
  });
  (void)first.wait_for(std::chrono::seconds(10));
  auto second = ex.replay();  // launched at once (nothing in flight) or queued behind the callback
  auto third = ex.replay();
  EXPECT_GE(queued.value(), 1);
  EXPECT_LE(queued.value(), 2);
  // The third is queued either way: cancelling it is the test's own count.
  int cancelled = 0;
  if (third.cancel()) ++cancelled;
  EXPECT_EQ(cancelled, 1);
  auto& cancelled_total =
      registry->counter("stepgraph_steps_cancelled_total",
                        "Steps cancelled before reaching the device (by the caller, a failure or close)");
  EXPECT_EQ(cancelled_total.value(), cancelled);
  {
    std::lock_guard lock(m);
    go = true;
  }
  cv.notify_all();
  EXPECT_EQ(second.wait(), rt::ReplayStatus::kDone);
  EXPECT_EQ(third.wait(), rt::ReplayStatus::kCancelled);
  ex.synchronize();
  EXPECT_EQ(queued.value(), 0);
  EXPECT_EQ(registry->counter("stepgraph_steps_completed_total", "Steps whose replay handle ended done").value(), 2);
}

TEST(ExecutorMetrics, OffByDefault) {
  rt::StepExecutor ex(spec(), step, host_options());
  EXPECT_EQ(ex.metrics(), nullptr);
  EXPECT_EQ(ex.metrics_port(), -1);
}

namespace {
/// GET http://127.0.0.1:port/path; the whole response, or "" if nothing listens.
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}
}  // namespace

TEST(ExecutorMetrics, ServesTheRegistryOverHttpOnAnEphemeralPortAndStopsWithTheExecutor) {
  auto o = host_options();
  o.metrics_port = 0;
  int port = -1;
  {
    rt::StepExecutor ex(spec(), step, o);
    port = ex.metrics_port();
    ASSERT_GT(port, 0);
    ASSERT_NE(ex.metrics(), nullptr);
    ex.metrics()->gauge("test_loss", "A user gauge").set(0.25);
    for (int i = 0; i < 4; ++i) {
      auto h = ex.replay();
      EXPECT_EQ(h.wait(), rt::ReplayStatus::kDone);
      h.release();
    }
    ex.synchronize();
    const std::string r = http_get(port, "/metrics");
    ASSERT_NE(r.find("200 OK"), std::string::npos) << r;
    EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
    EXPECT_NE(r.find("\nstepgraph_steps_completed_total 4\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\ntest_loss 0.25\n"), std::string::npos) << r;
    EXPECT_NE(http_get(port, "/other").find("404"), std::string::npos);
    // A connection left open does not keep the executor from closing.
    const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::connect(idle, reinterpret_cast<sockaddr*>(&a), sizeof a);
    const auto t0 = std::chrono::steady_clock::now();
    ex.close();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));  // keep-alive timeout 1 s
    ::close(idle);
  }
  EXPECT_EQ(http_get(port, "/metrics"), "");  // nothing listens any more
}

TEST(ExecutorMetrics, APortInUseIsATypedError) {
  auto registry = rt::MetricsRegistry::create();
  rt::MetricsServer first(registry);
  rt::MetricsServerOptions so;
  so.port = first.port();
  EXPECT_THROW((void)rt::MetricsServer(registry, so), stepgraph::InvalidArgument);
  so.port = 70000;
  EXPECT_THROW((void)rt::MetricsServer(registry, so), stepgraph::InvalidArgument);
  so.port = 0;
  so.address = "203.0.113.7";  // TEST-NET-3: not an address of this machine
  EXPECT_THROW((void)rt::MetricsServer(registry, so), stepgraph::InvalidArgument);
}

// Run by ctest as metrics_env_port with STEPGRAPH_METRICS_PORT=0 (the
// variable is read once per process); skipped in the plain run.
TEST(ExecutorMetricsEnv, ExecutorsOfAProcessShareOneRegistryAndServerOnTheEnvironmentsPort) {
  if (std::getenv("STEPGRAPH_METRICS_PORT") == nullptr)
    GTEST_SKIP() << "needs STEPGRAPH_METRICS_PORT (ctest metrics_env_port sets it to 0)";
  int port = -1;
  {
    rt::StepExecutor a(spec(), step, host_options());
    rt::StepExecutor b(spec(), step, host_options());
    port = a.metrics_port();
    ASSERT_GT(port, 0);
    EXPECT_EQ(b.metrics_port(), port);
    ASSERT_NE(a.metrics(), nullptr);
    EXPECT_EQ(a.metrics(), b.metrics());
    for (auto* ex : {&a, &b, &a}) {
      auto h = ex->replay();
      EXPECT_EQ(h.wait(), rt::ReplayStatus::kDone);
      h.release();
    }
    a.synchronize();
    b.synchronize();
    EXPECT_NE(http_get(port, "/metrics").find("\nstepgraph_steps_completed_total 3\n"), std::string::npos);
  }
  EXPECT_EQ(http_get(port, "/metrics"), "");         // the last executor took the server with it
  rt::StepExecutor c(spec(), step, host_options());  // a new one starts another
  EXPECT_GT(c.metrics_port(), 0);
}
